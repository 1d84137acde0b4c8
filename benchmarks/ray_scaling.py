"""The same validation on Ray with two one-CPU workers, and on the local executor with one and
with two torch threads: wall-clock ratios measured in one run (issue 14).

    DSIM_DATA_DIR=../shared/data .venv/bin/python benchmarks/ray_scaling.py
    .venv/bin/python benchmarks/ray_scaling.py --folds 4 --epochs 10 --json out.json   # the defaults

The validation: target pneumoniamnist (capped), sources usps, coil20 and cifar10-sample (capped),
``finetune`` with ``smallcnn-w16`` at 28 px, k folds: (k + 3k) CPU-bound runs and 3 distinct
pretraining jobs. Ray runs on ``ray.cluster_utils.Cluster``: a head that runs no task and two
one-CPU worker nodes, each with its own empty cache and no data directory (data and checkpoints
travel through the object store). Every leg starts from an empty checkpoint cache and results
store, so each pretrains the 3 sources; Ray's stored metrics must equal those of the local leg
with one thread, run by run.
The load average (``os.getloadavg``) is printed before each leg, and first the machine's ceiling
is measured: the throughput of two independent one-thread training processes over one (no Ray).
On a shared machine the ratios move with both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def _leg(name: str, kw: dict, executor, cpus: int | None, root: Path) -> dict:
    import dsim
    from dsim.validation.store import ResultsStore

    cache = root / f"{name}-cache"
    os.environ["DSIM_CACHE_DIR"] = str(cache)
    store = ResultsStore(root / f"{name}.sqlite")
    load = os.getloadavg()
    print(f"[{name}] load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    t0 = time.perf_counter()
    rep = dsim.validate(executor=executor, cpus_per_run=cpus, store=store, **kw)
    secs = time.perf_counter() - t0
    if rep.failures:
        print(f"[{name}] failures: {rep.failures}", file=sys.stderr)
    metrics = {r["key"]: {k: v for k, v in r["metrics"].items() if k != "fit_s"} for r in store.rows()}
    # seconds spent inside runs and pretraining jobs (wherever they ran): the work to spread
    busy = sum(float(r["timings"].get("total_s", 0)) for r in store.rows())
    busy += sum(float(json.loads(p.read_text())["seconds"]) for p in (cache / "checkpoints").rglob("*.json"))
    print(
        f"[{name}] {rep.runs_done} runs, {rep.pretrained} pretrained of {rep.pretraining_jobs} jobs, "
        f"{secs:.1f} s",
        flush=True,
    )
    return {
        "leg": name,
        "seconds": secs,
        "runs": rep.runs_done,
        "failed": len(rep.failures),
        "pretraining_jobs": rep.pretraining_jobs,
        "pretrained": rep.pretrained,
        "checkpoints_in_cache": len(list((cache / "checkpoints").rglob("*.json"))),
        "load_before": load,
        "busy_s": busy,
        "metrics": metrics,
    }


_PROBE = """
import sys, time, numpy as np, torch
torch.set_num_threads(1)
from dsim.networks.training import TrainConfig, build_classifier, fit
rng = np.random.default_rng(0)
x = rng.integers(0, 255, (600, 28, 28), dtype=np.uint8)
import dsim
data = dsim.ImageSet("probe", x, np.arange(600) % 2)
model = build_classifier("smallcnn-w16", weights="random", num_classes=2)
cfg = TrainConfig(epochs=int(sys.argv[1]), patience=99, min_epochs=99, image_size=28)
t0 = time.perf_counter()
fit(model, data, data.take(np.arange(100)), cfg, device="cpu")
print(time.perf_counter() - t0)
"""


def _machine_ceiling(epochs: int = 6) -> float:
    """Throughput of two independent one-thread training processes over one: what any executor
    with two one-CPU workers can reach on this machine, at its current load."""
    import subprocess

    def run(n: int) -> list[float]:
        procs = [
            subprocess.Popen([sys.executable, "-c", _PROBE, str(epochs)], stdout=subprocess.PIPE, text=True)
            for _ in range(n)
        ]
        return [float(p.communicate()[0].split()[-1]) for p in procs]

    import statistics

    ones, twos = [], []
    for _ in range(3):  # alternated, medians: the load of other users drifts
        ones.append(run(1)[0])
        twos.append(max(run(2)))
    return 2 * statistics.median(ones) / statistics.median(twos)


def _max_auc_diff(a: dict, b: dict) -> float:
    if set(a) != set(b):
        return float("inf")
    return max((abs(a[k]["auc"] - b[k]["auc"]) for k in a), default=0.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--pretrain-epochs", type=int, default=6)
    ap.add_argument("--target-max", type=int, default=800)
    ap.add_argument("--source-max", type=int, default=1000)
    ap.add_argument("--json", help="write the figures (without per-run metrics) to this file")
    a = ap.parse_args(argv)

    import ray
    import torch
    from ray.cluster_utils import Cluster

    from dsim.validation.executors import RayExecutor

    root = Path(tempfile.mkdtemp(prefix="dsim-ray-scaling-"))
    kw = dict(
        target="pneumoniamnist",
        sources=["usps", "coil20", "cifar10-sample"],
        strategy="finetune",
        backbone="smallcnn-w16",
        folds=a.folds,
        hyperparameters={"epochs": a.epochs, "patience": a.epochs, "image_size": 28},
        pretrain_hyperparameters={
            "epochs": a.pretrain_epochs,
            "patience": a.pretrain_epochs,
            "image_size": 28,
        },
        target_max=a.target_max,
        source_max=a.source_max,
        predict=False,
        device="cpu",
    )
    load = os.getloadavg()
    ceiling = _machine_ceiling()
    print(f"machine ceiling (2 one-thread processes vs 1): {ceiling:.2f}x at load {load[0]:.2f}", flush=True)
    legs = []
    torch.set_num_threads(1)
    legs.append(_leg("local, 1 thread", kw, "local", 1, root))

    nothing = root / "no-data"
    nothing.mkdir()
    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for i in range(2):
        cluster.add_node(num_cpus=1, env_vars={"DSIM_CACHE_DIR": str(root / f"node{i}-cache")})
    env = {"DSIM_DATA_DIR": str(nothing), "XDG_DATA_HOME": str(nothing)}
    ray.init(
        address=cluster.address, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env}
    )
    cluster_s = time.perf_counter() - t0
    print(f"cluster up in {cluster_s:.1f} s (not counted)", flush=True)
    try:
        legs.append(_leg("ray, 2 x 1 CPU", kw, RayExecutor(address=cluster.address), 1, root))
    finally:
        ray.shutdown()
        cluster.shutdown()

    torch.set_num_threads(2)
    legs.append(_leg("local, 2 threads", kw, "local", 2, root))

    by = {leg["leg"]: leg for leg in legs}
    ray_s = by["ray, 2 x 1 CPU"]["seconds"]
    # one torch thread per run in both: bit-identical; two threads sum in another order
    same = by["ray, 2 x 1 CPU"]["metrics"] == by["local, 1 thread"]["metrics"]
    same2 = _max_auc_diff(by["local, 2 threads"]["metrics"], by["local, 1 thread"]["metrics"])
    print()
    print(
        "| leg | wall s | s inside runs + jobs | runs | pretrained / distinct jobs | load before (1/5/15 min) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for leg in legs:
        ld = " / ".join(f"{x:.1f}" for x in leg["load_before"])
        print(
            f"| {leg['leg']} | {leg['seconds']:.1f} | {leg['busy_s']:.1f} | {leg['runs']} | "
            f"{leg['pretrained']} / {leg['pretraining_jobs']} | {ld} |"
        )
    r1 = by["local, 1 thread"]["seconds"] / ray_s
    r2 = by["local, 2 threads"]["seconds"] / ray_s
    print()
    print(f"speed-up of Ray (2 x 1 CPU) over local with 1 torch thread: {r1:.2f}x (goal >= 1.8x)")
    print(f"speed-up of Ray (2 x 1 CPU) over local with 2 torch threads: {r2:.2f}x")
    eff = by["ray, 2 x 1 CPU"]["busy_s"] / (2 * ray_s)
    print(f"machine ceiling, two independent one-thread processes vs one: {ceiling:.2f}x")
    print(f"Ray's use of its two workers (seconds inside runs and jobs / (2 x wall)): {eff:.0%}")
    print(f"stored metrics of Ray and local with 1 thread identical, run by run: {same}")
    print(f"largest AUC difference, local 2 threads vs 1 thread: {same2:.2g}")
    print(f"cpu count: {os.cpu_count()}; cluster start-up (not counted): {cluster_s:.1f} s")
    if a.json:
        out = {
            "legs": [{k: v for k, v in leg.items() if k != "metrics"} for leg in legs],
            "ratio_vs_local_1_thread": r1,
            "ratio_vs_local_2_threads": r2,
            "metrics_identical_ray_vs_local_1_thread": same,
            "max_auc_diff_2_threads_vs_1": same2,
            "cluster_start_s": cluster_s,
            "machine_ceiling": ceiling,
            "ray_worker_use": eff,
            "args": vars(a),
        }
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0 if same and all(leg["failed"] == 0 for leg in legs) else 1


if __name__ == "__main__":
    sys.exit(main())
