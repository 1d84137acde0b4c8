"""The pretraining stage: distinct jobs planned and trained once, the content-keyed cache, and the
lock that keeps two processes sharing a cache from training the same checkpoint at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gen_data import BACKBONE, TINY, TINY_PRETRAIN, gratings, one_torch_thread  # noqa: F401 (autouse fixture)

import dsim
from dsim.networks.pretraining import CheckpointLock, claim, plan_job
from dsim.validation.store import ResultsStore

HERE = Path(__file__).resolve().parent


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("DSIM_CACHE_DIR", str(d))
    return d


def _data():
    return {
        "gen-t": gratings(100, k=2, seed=5, name="gen-t"),
        "gen-s": gratings(120, k=4, seed=6, name="gen-s", noise=0.5),
        "gen-u": gratings(120, k=3, seed=7, name="gen-u", noise=0.5, freq=1.2),
    }


def _metas(cache: Path) -> list[Path]:
    return sorted((cache / "checkpoints").rglob("*.json"))


def test_strategies_sharing_a_source_pretrain_it_once(cache, tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    kw = dict(
        sources=["gen-s", "gen-u"],
        backbone=BACKBONE,
        hyperparameters=TINY,
        pretrain_hyperparameters=TINY_PRETRAIN,
        store=store,
        inline=_data(),
        predict=False,
        device="cpu",
    )
    events = []
    # finetune and domain-ri both start from the random-init checkpoint of the source
    rep = dsim.validate(
        "gen-t", strategy="finetune,domain-ri", folds=2, on_event=lambda k, m: events.append((k, m)), **kw
    )
    assert not rep.failures, rep.failures
    assert rep.runs_done == 2 + 2 * 2 * 2
    assert rep.pretraining_jobs == 2 and rep.pretrained == 2
    assert len(_metas(cache)) == 2
    plan = [m for k, m in events if k == "plan"]
    assert len(plan) == 1 and "10 runs" in plan[0] and "2 pretraining jobs" in plan[0]
    assert any(k == "info" and m.startswith("estimate:") for k, m in events)
    # another train size is another set of runs, but the same checkpoints: none is pretrained again
    rep2 = dsim.validate("gen-t", strategy="domain-ri", folds=2, train_sizes=[40], **kw)
    assert rep2.runs_done == 2 + 2 * 2 and rep2.pretraining_jobs == 2 and rep2.pretrained == 0
    assert len(_metas(cache)) == 2
    ids = {r["checkpoint"] for r in store.rows() if r["checkpoint"]}
    assert ids == {p.stem for p in _metas(cache)}


def test_pretrain_job_key_is_content(cache):
    a = gratings(80, k=3, seed=1, name="a")
    job, _ = plan_job(a, BACKBONE, hyperparameters=TINY_PRETRAIN)
    renamed, _ = plan_job(
        dsim.ImageSet("b", a.images, a.labels, a.class_names), BACKBONE, hyperparameters=TINY_PRETRAIN
    )
    other_lr, _ = plan_job(a, BACKBONE, hyperparameters={**TINY_PRETRAIN, "lr": 1e-4})
    assert job.key == renamed.key != other_lr.key
    with pytest.raises(dsim.DsimError, match="no source left"):
        plan_job("gen-t", BACKBONE, exclude=("gen-t",), inline=_data())


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lock_of_a_dead_owner_is_taken_over(cache):
    data = gratings(80, k=3, seed=1, name="a")
    job, _ = plan_job(data, BACKBONE, hyperparameters=TINY_PRETRAIN)
    lock = job.path.with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    lock.write_text(f"{socket.gethostname()} {_dead_pid()} x")
    calls = []
    path = dsim.pretrain(data, BACKBONE, hyperparameters=TINY_PRETRAIN, progress=lambda *a: calls.append(a))
    assert path == job.path and path.exists() and calls and not lock.exists()


def test_lock_held_alive_is_respected_and_an_old_one_is_stale(cache):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        job, _ = plan_job(gratings(80, k=3, seed=1, name="a"), BACKBONE, hyperparameters=TINY_PRETRAIN)
        path = job.path.with_suffix(".lock")
        path.parent.mkdir(parents=True)
        path.write_text(f"{socket.gethostname()} {sleeper.pid} x")
        assert not CheckpointLock(job.path).acquire()
        assert claim(job, wait=False) is None and not job.path.exists()
        assert CheckpointLock(job.path).holder() == f"{socket.gethostname()} {sleeper.pid}"
        # an owner on another host whose heartbeat stopped long ago
        path.write_text("another-host 4242 y")
        old = time.time() - 3600
        os.utime(path, (old, old))
        lock = CheckpointLock(job.path)
        assert lock.acquire() and path.read_text() == lock.token
        lock.release()
        assert not path.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_heartbeat_keeps_a_held_lock_fresh(cache, tmp_path):
    lock = CheckpointLock(tmp_path / "x.pt", stale_after=0.2)
    assert lock.acquire()
    try:
        old = time.time() - 3600
        os.utime(lock.path, (old, old))
        deadline = time.time() + 10
        while lock.path.stat().st_mtime <= old + 1 and time.time() < deadline:
            time.sleep(0.05)
        assert lock.path.stat().st_mtime > old + 1, "the heartbeat did not refresh the lock"
        assert not lock.is_stale() and not CheckpointLock(tmp_path / "x.pt", stale_after=0.2).acquire()
    finally:
        lock.release()


def test_two_processes_sharing_a_cache_train_a_checkpoint_once(tmp_path):
    go = tmp_path / "go"
    script = (
        "import sys, time, pathlib, torch, dsim\n"
        "torch.set_num_threads(1)\n"
        "from gen_data import gratings, TINY_PRETRAIN, BACKBONE\n"
        "data = gratings(300, k=4, seed=3, name='shared-src')\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        "while not pathlib.Path(sys.argv[2]).exists():\n"
        "    time.sleep(0.01)\n"
        "calls = []\n"
        "p = dsim.pretrain(data, BACKBONE, hyperparameters={**TINY_PRETRAIN, 'epochs': 4, 'patience': 9},\n"
        "                  progress=lambda *a: calls.append(a))\n"
        "print('RESULT', len(calls), p, flush=True)\n"
    )
    env = {
        **os.environ,
        "DSIM_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / f"ready{i}"), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)) and time.time() < deadline:
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    results = [o[0].split("RESULT")[1].split() for o in outs]
    trained = sorted(int(r[0]) for r in results)
    assert trained[0] == 0 and trained[1] > 0, f"epochs reported by each process: {trained}"
    assert results[0][1] == results[1][1]
    assert len(list((tmp_path / "cache" / "checkpoints").rglob("*.json"))) == 1
    assert not list((tmp_path / "cache" / "checkpoints").rglob("*.lock"))


def test_job_data_rebuilt_from_names_must_match_the_driver(cache):
    from dsim.networks.pretraining import job_data

    data = _data()
    job, union = plan_job("gen-s+gen-u", BACKBONE, hyperparameters=TINY_PRETRAIN, max_samples=90, inline=data)
    assert job.sources == ("gen-s", "gen-u") and union.num_classes == 4 + 3
    assert job_data(job, inline=data).fingerprint() == job.fingerprint
    other = {**data, "gen-u": gratings(120, k=3, seed=8, name="gen-u")}
    with pytest.raises(dsim.DsimError, match="differs from the driver's"):
        job_data(job, inline=other)
