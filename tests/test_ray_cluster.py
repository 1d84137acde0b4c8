"""Validation on a simulated multi-node Ray cluster (``ray.cluster_utils.Cluster``): two one-CPU
worker nodes, each with its own empty cache and no data directory, a head that runs no task.

Data and checkpoints reach the workers only through the object store; every pretraining job runs
once; results equal the local executor's; a killed worker is retried once, then reported."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from gen_data import BACKBONE, TINY, TINY_PRETRAIN, gratings, one_torch_thread  # noqa: F401 (autouse fixture)

import dsim
from dsim.validation.store import ResultsStore

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'dsim[ray]')")
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster for the module (Ray start-up costs seconds)."""
    from ray.cluster_utils import Cluster

    root = tmp_path_factory.mktemp("ray-nodes")
    nothing = root / "no-data"
    nothing.mkdir()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    caches = [root / f"node{i}-cache" for i in range(2)]
    nodes = [c.add_node(num_cpus=1, env_vars={"DSIM_CACHE_DIR": str(d)}) for d in caches]
    no_data = {"DSIM_DATA_DIR": str(nothing), "XDG_DATA_HOME": str(nothing), "XDG_CACHE_HOME": str(nothing)}
    ray.init(
        address=c.address,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": no_data},
    )
    yield SimpleNamespace(cluster=c, address=c.address, caches=caches, nodes=nodes, root=root)
    ray.shutdown()
    c.shutdown()


@pytest.fixture
def driver_cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "driver-cache"
    monkeypatch.setenv("DSIM_CACHE_DIR", str(d))
    return d


def _data():
    return {
        "gen-t": gratings(100, k=2, seed=5, name="gen-t", noise=1.5),
        "gen-s": gratings(120, k=4, seed=6, name="gen-s", noise=0.5),
        "gen-u": gratings(120, k=3, seed=7, name="gen-u", noise=0.5, freq=1.2),
    }


def _args(**kw):
    args = dict(
        backbone=BACKBONE,
        folds=2,
        hyperparameters=TINY,
        pretrain_hyperparameters=TINY_PRETRAIN,
        inline=_data(),
        predict=False,
        device="cpu",
    )
    args.update(kw)
    return args


def _metrics(store: ResultsStore) -> dict[str, dict]:
    drop = {"fit_s"}
    return {r["key"]: {k: v for k, v in r["metrics"].items() if k not in drop} for r in store.rows()}


def _files(root: Path, pattern: str) -> list[Path]:
    """Files of a cache's checkpoint store (its other folders, e.g. the registry's parse, aside)."""
    root = root / "checkpoints"
    return sorted(root.rglob(pattern)) if root.exists() else []


def test_cluster_validation_pretrains_once_ships_data_and_matches_local(
    cluster, driver_cache, tmp_path, monkeypatch, shared_data
):
    from dsim.validation.executors import RayExecutor

    # breastmnist is a registered dataset read on the driver only: the workers have no data dir
    kw = _args(sources=["gen-s", "gen-u", "breastmnist"], source_max=150)
    ex = RayExecutor(address=cluster.address)
    store = ResultsStore(tmp_path / "ray.sqlite")
    rep = dsim.validate("gen-t", executor=ex, store=store, **kw)
    assert not rep.failures, rep.failures
    assert rep.runs_total == rep.runs_done == 2 + 3 * 2
    # every source pretrained exactly once, by one task, landing in the driver's cache
    assert rep.pretraining_jobs == rep.pretrained == ex.stats["pretrain_tasks"] == 3
    driver_ckpts = {p.stem for p in _files(driver_cache, "*.json")}
    assert (
        len(driver_ckpts) == 3 and {r["checkpoint"] for r in store.rows() if r["checkpoint"]} == driver_ckpts
    )
    # each dataset put once: the target and the three sources' pretraining data
    assert ex.stats["datasets_put"] == 4 and ex.stats["run_tasks"] == rep.runs_total
    # no worker trained a checkpoint itself; those that fine-tuned received them
    for cache in cluster.caches:
        assert not _files(cache, "*.json"), "a worker pretrained on its own"
        assert {p.stem for p in _files(cache, "*.pt")} <= driver_ckpts
    assert set().union(*({p.stem for p in _files(c, "*.pt")} for c in cluster.caches)) == driver_ckpts

    monkeypatch.setenv("DSIM_CACHE_DIR", str(tmp_path / "local-cache"))
    local = ResultsStore(tmp_path / "local.sqlite")
    rep_local = dsim.validate("gen-t", executor="local", store=local, **kw)
    assert rep_local.runs_done == rep.runs_done and rep_local.pretrained == 3
    assert _metrics(local) == _metrics(store)  # same seeds, same numbers, run by run


def test_validate_through_ray(cluster, driver_cache, tmp_path):
    from dsim.validation.executors import RayExecutor

    store = ResultsStore(tmp_path / "r.sqlite")
    rep = dsim.validate(
        "gen-t", sources=["gen-s"], executor=RayExecutor(address=cluster.address), store=store, **_args()
    )
    assert rep.runs_done == 4 and not rep.failures, rep.failures
    assert len(store) == 4  # written by the driver as results came back
    local = dsim.validate("gen-t", sources=["gen-s"], store=ResultsStore(tmp_path / "l.sqlite"), **_args())
    assert [r.auc for r in rep.rows] == pytest.approx([r.auc for r in local.rows])  # same seeds, same numbers


class _Killer(threading.Thread):
    """SIGKILLs the Ray worker running a given task (its process title is ``ray::<task name>``),
    as often as asked per task: the OOM killer or a crashing node, from outside."""

    def __init__(self, times: dict[str, int]):
        super().__init__(daemon=True)
        self.times = dict(times)
        self.kills: dict[str, list[int]] = {k: [] for k in times}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and any(len(self.kills[k]) < n for k, n in self.times.items()):
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                for label, n in self.times.items():
                    done = self.kills[label]
                    if title.startswith(f"ray::dsim {label}") and len(done) < n and int(pid) not in done:
                        os.kill(int(pid), signal.SIGKILL)
                        done.append(int(pid))
            time.sleep(0.02)


def test_killed_worker_is_retried_once_then_reported(cluster, driver_cache, tmp_path):
    from dsim.validation.executors import RayExecutor

    once = f"gen-s->gen-t [finetune, {BACKBONE}, fold 0]"
    twice = f"gen-t->gen-t [scratch, {BACKBONE}, fold 1]"
    killer = _Killer({once: 1, twice: 2})
    killer.start()
    store = ResultsStore(tmp_path / "r.sqlite")
    try:
        rep = dsim.validate(
            "gen-t",
            sources=["gen-s", "gen-u"],
            executor=RayExecutor(address=cluster.address),
            store=store,
            **_args(),
        )
    finally:
        killer.stop.set()
        killer.join()
    assert {k: len(v) for k, v in killer.kills.items()} == {once: 1, twice: 2}
    assert [f["run"] for f in rep.failures] == [twice]
    err = rep.failures[0]["error"]
    assert err.startswith(twice + ": its worker died (tried 2 times)"), err
    assert rep.runs_done == rep.runs_total - 1 == 5
    assert any(
        r["source"] == "gen-s" and r["strategy"] == "finetune" and r["fold"] == 0 for r in store.rows()
    )
    assert [f["label"] for f in store.failures()] == [twice]


@pytest.mark.slow
def test_node_lost_after_pretraining_loses_no_checkpoint(cluster, driver_cache, tmp_path):
    """The node that trained the first checkpoint dies while its dependents are queued: they still
    get it (the driver holds it, or Ray rebuilds it once) and the validation completes."""
    from dsim.validation.executors import RayExecutor

    ex = RayExecutor(address=cluster.address)
    removed = []

    def on_event(kind: str, message: str) -> None:
        if kind == "done" and message.startswith("pretrained") and not removed:
            node_id = next(iter(ex.job_nodes.values()))
            node = next(n for n in cluster.nodes if n.node_id == node_id)
            cluster.cluster.remove_node(node, allow_graceful=False)
            cluster.nodes.remove(node)
            removed.append(node_id)

    kw = _args(sources=["gen-s", "gen-u"], folds=3)
    rep = dsim.validate(
        "gen-t", executor=ex, store=ResultsStore(tmp_path / "r.sqlite"), on_event=on_event, **kw
    )
    # a fresh node for whatever runs next on this cluster
    cluster.nodes.append(
        cluster.cluster.add_node(num_cpus=1, env_vars={"DSIM_CACHE_DIR": str(cluster.root / "node2-cache")})
    )
    assert removed, "no pretraining finished: the test proves nothing"
    assert not rep.failures, rep.failures
    assert rep.runs_done == rep.runs_total == 3 + 2 * 3
    assert rep.pretrained == 2 and len(_files(driver_cache, "*.json")) == 2


@pytest.mark.slow
def test_driver_killed_on_ray_resumes_recomputing_nothing(cluster, tmp_path):
    import json
    import subprocess
    import sys

    here = Path(__file__).resolve().parent
    store_path, cache = tmp_path / "r.sqlite", tmp_path / "driver-cache"
    env = {
        **os.environ,
        "DSIM_RESULTS": str(store_path),
        "DSIM_CACHE_DIR": str(cache),
        "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]),
    }
    no_data = str(cluster.root / "no-data")
    script = (
        "import sys, dsim\n"
        "from dsim.validation.executors import RayExecutor\n"
        "from gen_data import gratings, TINY, TINY_PRETRAIN, BACKBONE\n"
        "data = {'gen-t': gratings(90, k=2, seed=5, name='gen-t'), 'gen-s': gratings(100, k=4, seed=6, name='gen-s'),\n"
        "        'gen-u': gratings(100, k=3, seed=7, name='gen-u')}\n"
        f"ex = RayExecutor(address={cluster.address!r}, runtime_env={{'env_vars': {{'DSIM_DATA_DIR': {no_data!r}}}}})\n"
        "rep = dsim.validate('gen-t', sources=['gen-s', 'gen-u'], backbone=BACKBONE, folds=3, executor=ex,\n"
        "    hyperparameters=TINY, pretrain_hyperparameters=TINY_PRETRAIN, inline=data, predict=False, device='cpu')\n"
        "print('RESULT', rep.runs_done, rep.runs_skipped, rep.runs_total, rep.pretrained, flush=True)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 300
    before = []
    while time.time() < deadline and p.poll() is None:
        if store_path.exists():
            before = ResultsStore(store_path).rows()
            if len(before) >= 4:
                break
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    kept = {r["key"]: r["created"] for r in ResultsStore(store_path).rows()}
    assert 4 <= len(kept) < 9, "killed after everything finished (or nothing): the test proves nothing"
    trained_before = {p.stem for p in _files(cache, "*.json")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    done, skipped, total, pretrained = map(int, out.stdout.split("RESULT")[1].split())
    assert total == 9 and skipped == len(kept) and done == total - len(kept)
    after = {r["key"]: r["created"] for r in ResultsStore(store_path).rows()}
    assert len(after) == 9 and all(after[k] == c for k, c in kept.items()), "a finished fold was recomputed"
    # checkpoints trained before the kill are in the driver's cache: only the others were trained
    assert pretrained == 2 - len(trained_before)
    assert {json.loads(p.read_text())["source"] for p in _files(cache, "*.json")} == {"gen-s", "gen-u"}


@pytest.mark.slow
def test_shared_placement_makes_workers_read_registered_data(cluster, driver_cache, tmp_path, shared_data):
    """With data_placement="shared" a worker loads registered datasets from its own DSIM_DATA_DIR;
    these workers have none, so the pretraining job fails there and names the dataset, its runs
    fail with its message, and the runs on shipped (in-memory) data go on."""
    from dsim.validation.executors import RayExecutor

    ex = RayExecutor(address=cluster.address)
    rep = dsim.validate(
        "gen-t",
        executor=ex,
        store=ResultsStore(tmp_path / "r.sqlite"),
        data_placement="shared",
        **_args(sources=["breastmnist"], source_max=100),
    )
    assert ex.stats["datasets_put"] == 1  # the in-memory target only
    assert rep.runs_done == 2 and len(rep.failures) == 2
    for f in rep.failures:
        assert f["error"].startswith(f["run"] + ": ") and "breastmnist" in f["error"][len(f["run"]) :], f
    assert rep.pretrained == 0 and not _files(driver_cache, "*.json")


def test_resources_no_node_can_give_are_refused_in_one_line(cluster, driver_cache, tmp_path):
    from dsim.validation.executors import RayExecutor

    for knob, what in (({"gpus_per_run": 0.5}, "0.5 GPUs"), ({"cpus_per_run": 2}, "2 CPUs")):
        with pytest.raises(dsim.DsimError, match=f"no node of the cluster has .*{what}") as e:
            dsim.validate(
                "gen-t",
                executor=RayExecutor(address=cluster.address),
                store=ResultsStore(tmp_path / "r.sqlite"),
                **_args(sources=["gen-s"]),
                **knob,
            )
        assert "\n" not in str(e.value) and "1 CPU/0 GPU" in str(e.value)
