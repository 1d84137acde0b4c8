"""Speed, memory and fidelity of dsim's similarity / transferability measures.

Two parts, both printed as Markdown tables (paste into benchmarks/HISTORY.md):

* ``--references``: dsim side by side with the public reference implementations, run in the same
  process on the same data and the same probe weights (awslabs/aws-cv-task2vec and
  microsoft/otdd checked out locally; their extra dependencies in ``--ref-deps``):
  Task2Vec embeddings and distances (Spearman), OTDD values (relative difference), and time.
* the grid (default): time and peak memory (max RSS of a fresh process per cell) of each measure
  for N images per dataset and S sources, the target's representation computed once, with the
  ratio to a plain baseline in the same cell (OTDD: exact inner costs; the Gaussian inner cost is
  dsim's default).

Usage::

    DSIM_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/measures.py            # small grid
    DSIM_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/measures.py --full     # N 500/2000/10000 x S 1/5/20
    DSIM_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/measures.py --references \\
        --task2vec-ref /tmp/refs/task2vec --otdd-ref /tmp/refs/otdd --ref-deps /tmp/refdeps

The reference code is only imported from the paths given; nothing of it lives in dsim.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

DATASETS = [
    "breastmnist.npz",
    "pneumoniamnist.npz",
    "usps_16x16.npz",
    "mnist_test.npz",
    "coil20_32x32.npz",
    "cifar10_sample.npz",
    "ham10000_hmnist_8x8_L.npz",
]


def _data_dir() -> Path:
    return Path(os.environ.get("DSIM_DATA_DIR", "/work/shared/data").split(os.pathsep)[0])


def load(name: str, n: int, seed: int = 0):
    """``n`` images of a shared data set (a stratified subsample, or resampled with a seed and a
    tiny pixel jitter when the set is smaller than ``n``, so that every source is distinct)."""
    import dsim

    data = dsim.load_dataset(str(_data_dir() / name), max_samples=None, seed=seed)
    if n <= len(data):
        return data.subsample(n, seed=seed)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(data), n)
    imgs = data.images[idx].astype(np.int16) + rng.integers(-2, 3, data.images[idx].shape)
    return dsim.ImageSet(
        f"{data.name}-x{n}",
        np.clip(imgs, 0, 255).astype(np.uint8),
        data.labels[idx],
        class_names=data.class_names,
    )


# ----------------------------------------------------------------------------------------------
# side by side with the references
# ----------------------------------------------------------------------------------------------


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).correlation)


def compare_task2vec(
    ref_dir: str,
    n: int,
    size: int,
    draws: int,
    names: list[str],
    threads: int = 0,
    label_draws: int | None = None,
    precision: str | None = None,
    method: str = "montecarlo",
    skip: int = 6,
) -> list[str]:
    import torch

    if threads:
        torch.set_num_threads(threads)  # the same for dsim and the reference
    import torchvision.models.resnet as tvr

    import dsim
    from dsim_plugins.task2vec import (
        DEFAULTS,
        canonical_labels,
        resolve_precision,
        symmetric_distance,
        task2vec_embedding,
    )

    sys.path.insert(0, ref_dir)
    import models as ref_models  # noqa: E402  (aws-cv-task2vec)
    import task2vec as ref  # noqa: E402

    opts = {**DEFAULTS, "image_size": size, "task2vec_fisher_samples": draws, "task2vec_skip_layers": skip}
    if label_draws is not None:
        opts["task2vec_label_draws"] = label_draws
    if precision:
        opts["task2vec_precision"] = precision
    opts["task2vec_method"] = method
    opts["task2vec_variational_samples"] = draws  # the reference's loader_opts num_samples serves both
    out = [
        f"Task2Vec ({method}), {len(names)} tasks x {n} images, resnet18 seeded random init (identical "
        f"weights in both), {size} px, skip_layers={skip}, {draws} draws, batch 64, "
        "classifier Adam 10 epochs lr 4e-4 wd 1e-4, BN in train mode (the reference's "
        "behaviour), dsim label draws per forward pass = "
        + str(opts["task2vec_label_draws"])
        + ", dsim precision = "
        + (resolve_precision(opts["task2vec_precision"], "cpu") if method == "montecarlo" else "fp32")
        + " (reference: fp32)"
        ", torch threads = " + str(torch.get_num_threads()) + " (both)",
        "",
    ]
    ours, refs, refs2 = [], [], []
    t_ours = t_ref = t_ref_tensor = 0.0
    rows = [
        "| task | Spearman(dsim, ref) filters | Spearman(ref seed 0, ref seed 1) | dsim s | ref s (per-sample transform) | ref s (tensor dataset) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in names:
        data = load(name, n)
        y = canonical_labels(data.labels)
        k = int(y.max()) + 1
        probe = dsim.create_backbone("resnet18", weights="random", num_classes=k, seed=0)
        sd = {kk: v.clone() for kk, v in probe.state_dict().items()}

        t = time.perf_counter()
        e = task2vec_embedding(data.images, y, probe, opts=opts, seed=0)
        dt_ours = time.perf_counter() - t

        class PerSample(torch.utils.data.Dataset):  # how a user feeds arrays to the reference
            targets = list(y)

            def __len__(self):
                return len(y)

            def __getitem__(self, i):
                return dsim.to_tensor(data.images[i : i + 1], size=size, channels=3)[0], int(y[i])

        def run_ref(dataset, seed):
            net = ref_models.ResNet(tvr.BasicBlock, [2, 2, 2, 2], num_classes=k)
            net.load_state_dict(sd)
            torch.manual_seed(seed)
            np.random.seed(seed)
            t0 = time.perf_counter()
            emb = ref.Task2Vec(
                net,
                skip_layers=skip,
                max_samples=None,
                method=method,
                loader_opts={"num_workers": 0, "batch_size": 64, "num_samples": draws},
            ).embed(dataset)
            return np.asarray(emb.hessian, np.float64), time.perf_counter() - t0

        h_ref, dt_ref = run_ref(PerSample(), 0)
        X = dsim.to_tensor(data.images, size=size, channels=3)
        h_ref2, dt_ref_t = run_ref(torch.utils.data.TensorDataset(X, torch.from_numpy(y)), 1)
        assert h_ref.shape == e["hessian"].shape, (h_ref.shape, e["hessian"].shape)
        ours.append(e["hessian"])
        refs.append(h_ref)
        refs2.append(h_ref2)
        t_ours += dt_ours
        t_ref += dt_ref
        t_ref_tensor += dt_ref_t
        rows.append(
            f"| {name} | {_spearman(e['hessian'], h_ref):.4f} | {_spearman(h_ref, h_ref2):.4f} | "
            f"{dt_ours:.1f} | {dt_ref:.1f} | {dt_ref_t:.1f} |"
        )
        print(rows[-1], flush=True)
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    d_ours = [symmetric_distance(ours[i], ours[j]) for i, j in pairs]
    d_ref = [symmetric_distance(refs[i], refs[j]) for i, j in pairs]
    d_ref2 = [symmetric_distance(refs2[i], refs2[j]) for i, j in pairs]
    # the reference's own distance function on its own embeddings, as a cross-check
    import task_similarity as ts  # noqa: E402

    d_ref_fn = [
        ts.cosine(
            ref.Embedding(refs[i], np.ones_like(refs[i])), ref.Embedding(refs[j], np.ones_like(refs[j]))
        )
        for i, j in pairs
    ]
    out += rows + [""]
    out.append(
        f"Distances over {len(pairs)} task pairs: Spearman(dsim, ref) = {_spearman(d_ours, d_ref):.4f}; "
        f"Spearman(ref seed 0, ref seed 1) = {_spearman(d_ref, d_ref2):.4f}; "
        f"Spearman(dsim, ref seed 1) = {_spearman(d_ours, d_ref2):.4f}; dsim's symmetric_distance vs "
        f"task_similarity.cosine on the same embeddings: max abs diff "
        f"{max(abs(a - b) for a, b in zip(d_ref, d_ref_fn)):.2e}"
    )
    out.append(
        f"Total time: dsim {t_ours:.1f} s, reference {t_ref:.1f} s with a per-sample transform dataset "
        f"({t_ref / t_ours:.2f}x), {t_ref_tensor:.1f} s with a pre-built tensor dataset "
        f"({t_ref_tensor / t_ours:.2f}x)."
    )
    return out


def _ref_otdd(ref_dir: str, deps: str):
    import torch

    sys.path[:0] = [deps, ref_dir]
    import geomloss  # noqa: F401  (geomloss 0.2.x, which the reference needs)
    import geomloss.utils  # noqa: F401
    import ot

    def _symeig(A, eigenvectors=False, upper=True):  # removed from torch 1.9+; same maths
        L, V = torch.linalg.eigh(A, UPLO="U" if upper else "L")
        return L, (V if eigenvectors else torch.empty(0))

    torch.Tensor.symeig = _symeig
    torch.symeig = _symeig
    os.environ.setdefault("TQDM_DISABLE", "1")
    import otdd.pytorch.wasserstein as W
    from otdd.pytorch.distance import DatasetDistance

    class _OT:  # the reference passes torch cost matrices with numpy weights to ot.emd2,
        unif = staticmethod(ot.unif)  # which POT >= 0.9 refuses: hand it numpy

        @staticmethod
        def emd2(a, b, M, **kw):
            return ot.emd2(a, b, np.asarray(M, np.float64), **kw)

    W.ot = _OT
    return DatasetDistance


def compare_otdd(ref_dir: str, deps: str, n: int, size: int, names: list[str], entreg: float) -> list[str]:
    import torch

    import dsim

    DatasetDistance = _ref_otdd(ref_dir, deps)
    ctx = dsim.Context(seed=0, cache=None)
    # the parameters go to the measure itself (the run context carries none); the header says
    # what the measure reports it runs with, not what was asked for
    measures = {
        inner: dsim.create_measure("otdd", otdd_inner=inner, otdd_image_size=size, otdd_max_samples=n)
        for inner in ("gaussian", "exact")
    }
    conf = {**measures["gaussian"].config(ctx), **measures["gaussian"].compare_config(ctx)}
    px, ch = int(conf["otdd_image_size"]), int(conf["otdd_channels"])
    out = [
        f"OTDD, {len(names)} datasets x {n} images (stratified), raw pixels {px}x{px} "
        f"{'grey' if ch == 1 else f'{ch} channels'} in [0,1] (D={px * px * ch}), p={conf['otdd_p']}, "
        f"lambda_x={conf['otdd_lambda_x']}, lambda_y={conf['otdd_lambda_y']}, "
        f"min_labelcount={conf['otdd_min_labelcount']}. dsim: outer {conf['otdd_outer']} OT "
        f"(ot.emd2). microsoft/otdd: DatasetDistance(loss='sinkhorn', debiased_loss=True, "
        f"entreg={entreg}, precision='double', inner_ot_loss='wasserstein' for the exact inner cost), "
        "i.e. a debiased Sinkhorn divergence with a small blur, which approaches the exact OT value.",
        *[
            f"dsim's otdd as configured ({i}): "
            + json.dumps({**m.config(ctx), **m.compare_config(ctx)}, sort_keys=True)
            for i, m in measures.items()
        ],
        "",
        "| pair | inner | dsim | microsoft/otdd | rel. diff | label costs max rel. diff | ref. label costs + exact outer: rel. diff | dsim s | ref s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    print("\n".join(out[:3]), flush=True)
    sets = {nm: load(nm, n) for nm in names}
    rel = {"gaussian": [], "exact": []}
    tt = {"gaussian": [0.0, 0.0], "exact": [0.0, 0.0]}
    vals = {"gaussian": [], "exact": []}
    wrel = {"gaussian": [], "exact": []}
    xrel = {"gaussian": [], "exact": []}
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    for inner, ref_inner in (("gaussian", "gaussian_approx"), ("exact", "exact")):
        m = measures[inner]
        reps = {}
        t = time.perf_counter()
        for nm in names:
            reps[nm] = m.represent(sets[nm], ctx)
        t_rep = time.perf_counter() - t
        for a, b in pairs:
            t = time.perf_counter()
            v = m.compare(reps[a], reps[b], ctx)
            dt = time.perf_counter() - t + t_rep * 2 / len(names)
            ra, rb = reps[a].arrays, reps[b].arrays
            D1 = torch.utils.data.TensorDataset(torch.from_numpy(ra["X"]).double(), torch.from_numpy(ra["y"]))
            D2 = torch.utils.data.TensorDataset(torch.from_numpy(rb["X"]).double(), torch.from_numpy(rb["y"]))
            t = time.perf_counter()
            dd = DatasetDistance(
                D1,
                D2,
                inner_ot_method=ref_inner,
                inner_ot_loss="wasserstein",
                debiased_loss=True,
                p=2,
                entreg=entreg,
                device="cpu",
                precision="double",
                verbose=0,
            )
            r = float(dd.distance(maxsamples=100000))
            dr = time.perf_counter() - t
            # the reference's own label-to-label costs, with dsim's exact outer OT on top: isolates
            # the inner costs from the outer solver (geomloss Sinkhorn vs exact)
            from dsim_plugins.otdd import _factors, exact_label_costs, gaussian_w2, outer_ot, pairwise_cost

            k1 = int(ra["y"].max()) + 1
            W_ref = dd._get_label_distances().double().numpy()[:k1, k1:]
            W_ours = (
                gaussian_w2(ra["means"], _factors(ra), rb["means"], _factors(rb))
                if inner == "gaussian"
                else exact_label_costs(ra["X"], ra["y"], rb["X"], rb["y"])
            )
            w_rel = float(np.max(np.abs(W_ref - W_ours) / np.maximum(np.abs(W_ref), 1e-12)))
            C = (pairwise_cost(ra["X"], rb["X"]) + W_ref[ra["y"]][:, rb["y"]]) / 2
            r_exact = outer_ot(C, "exact")
            wrel[inner].append(w_rel)
            xrel[inner].append(abs(v - r_exact) / abs(r_exact))
            rel[inner].append(abs(v - r) / abs(r))
            tt[inner][0] += dt
            tt[inner][1] += dr
            vals[inner].append(v)
            out.append(
                f"| {a} / {b} | {inner} | {v:.4f} | {r:.4f} | {abs(v - r) / abs(r):.2%} | {w_rel:.1e} | "
                f"{xrel[inner][-1]:.1e} | {dt:.2f} | {dr:.2f} |"
            )
            print(out[-1], flush=True)
    out.append("")
    for inner in ("gaussian", "exact"):
        out.append(
            f"{inner}: max rel. diff {max(rel[inner]):.2%}, mean {np.mean(rel[inner]):.2%}; label costs max rel. "
            f"diff {max(wrel[inner]):.1e}; with the reference's label costs and an exact outer OT "
            f"max rel. diff {max(xrel[inner]):.1e}; total time "
            f"dsim {tt[inner][0]:.2f} s vs reference {tt[inner][1]:.2f} s ({tt[inner][1] / tt[inner][0]:.1f}x)"
        )
    out.append(
        f"Rank agreement of dsim's Gaussian vs exact inner cost over the {len(pairs)} pairs: "
        f"Spearman {_spearman(vals['gaussian'], vals['exact']):.3f}; time exact/gaussian "
        f"{tt['exact'][0] / tt['gaussian'][0]:.1f}x"
    )
    return out


# ----------------------------------------------------------------------------------------------
# OTDD: Gaussian vs exact label costs as N grows
# ----------------------------------------------------------------------------------------------


def otdd_scaling(ns: list[int], s_rank: int, n_rank: int) -> list[str]:
    """Time of the stage the Gaussian approximation replaces (label-to-label costs), Gaussian vs
    exact, for N images per data set (pneumoniamnist target, mnist-test source, 28x28 pixels), in
    one process; then the rank agreement of the two OTDD variants over ``s_rank`` sources."""
    import torch

    from dsim_plugins import otdd as O

    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # one BLAS thread for both variants: no oversubscription on a shared box
    rng = np.random.default_rng(0)  # warm POT and LAPACK up so that the first cell is not charged for it
    O.exact_label_costs(rng.random((20, 4)), np.arange(20) % 2, rng.random((20, 4)), np.arange(20) % 2)
    O.gaussian_w2(*[rng.random((2, 4)), [rng.random((4, 2))] * 2] * 2)

    def feats(d):
        X = d.images.reshape(len(d), -1).astype(np.float64) / 255.0
        return X, np.unique(d.labels, return_inverse=True)[1]

    out = [
        "| N | Gaussian: class statistics (per data set, cached) s | Gaussian: label costs per pair s | "
        "Gaussian total s | exact label costs per pair s | exact / Gaussian (total) | exact / Gaussian (per pair) | "
        "outer OT (shared) s | max rel. diff of label costs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in ns:
        X1, y1 = feats(load("pneumoniamnist.npz", n, seed=0))
        X2, y2 = feats(load("mnist_test.npz", n, seed=1))
        t0 = time.perf_counter()
        r1, r2 = O.class_stats(X1, y1), O.class_stats(X2, y2)
        t1 = time.perf_counter()
        Wg = O.gaussian_w2(r1["means"], O._factors(r1), r2["means"], O._factors(r2))
        t2 = time.perf_counter()
        We = O.exact_label_costs(X1, y1, X2, y2)
        t3 = time.perf_counter()
        outer = ""
        if n <= 5000:
            C = O.pairwise_cost(X1, X2) / 2 + Wg[y1][:, y2] / 2
            t4 = time.perf_counter()
            O.outer_ot(C)
            outer = f"{time.perf_counter() - t4:.2f}"
        g_stats, g_pair, ex = t1 - t0, t2 - t1, t3 - t2
        rel = float(np.max(np.abs(Wg - We) / np.maximum(We, 1e-12)))
        out.append(
            f"| {n} | {g_stats:.2f} | {g_pair:.2f} | {g_stats + g_pair:.2f} | {ex:.2f} | "
            f"{ex / (g_stats + g_pair):.1f}x | {ex / g_pair:.1f}x | {outer or 'not run'} | {rel:.1%} |"
        )
        print(out[-1], flush=True)
    # rank agreement over many sources
    import dsim

    target = load("pneumoniamnist.npz", n_rank, seed=0)
    sources = [load(DATASETS[i % len(DATASETS)], n_rank, seed=1 + i // len(DATASETS)) for i in range(s_rank)]
    vals = {}
    for inner in ("gaussian", "exact"):
        m = dsim.create_measure("otdd", otdd_inner=inner, otdd_max_samples=n_rank)
        ctx = dsim.Context(seed=0, cache=None)
        out.append(
            f"dsim's otdd as configured ({inner}): "
            + json.dumps({**m.config(ctx), **m.compare_config(ctx)}, sort_keys=True)
        )
        rt = dsim.representation_of(m, target, ctx)
        t0 = time.perf_counter()
        vals[inner] = [m.compare(dsim.representation_of(m, s, ctx), rt, ctx) for s in sources]
        vals[inner + "_s"] = time.perf_counter() - t0
    out.append("")
    out.append(
        f"Rank agreement over {s_rank} sources (N = {n_rank}, target pneumoniamnist, the 7 shared sets "
        f"cycled with distinct subsamples): Spearman {_spearman(vals['gaussian'], vals['exact']):.3f} "
        f"between OTDD with Gaussian and with exact label costs; whole measure (representation + "
        f"label costs + exact outer OT) {vals['gaussian_s']:.1f} s vs {vals['exact_s']:.1f} s "
        f"({vals['exact_s'] / vals['gaussian_s']:.1f}x)."
    )
    return out


# ----------------------------------------------------------------------------------------------
# the grid
# ----------------------------------------------------------------------------------------------


def _cell(queue, measure: str, n: int, s: int, opts: dict, ckpt: str | None):
    import ot  # noqa: F401  (imports are not what we time)
    import timm  # noqa: F401
    import torch

    import dsim

    torch.manual_seed(0)
    t0 = time.perf_counter()
    target = load("pneumoniamnist.npz", n, seed=0)
    sources = [load(DATASETS[i % len(DATASETS)], n, seed=1 + i // len(DATASETS)) for i in range(s)]
    t_load = time.perf_counter() - t0
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    name = "otdd" if measure == "otdd-exact" else measure
    params = dict(opts)
    if name == "otdd":
        params.setdefault("otdd_max_samples", n)
    if ckpt and "source_checkpoints" in dsim.list_measures()[name].param_names():
        params["source_checkpoints"] = {src.name: ckpt for src in sources}
    m = dsim.create_measure(name, **params)  # parameters on the measure; the context has none
    ctx = dsim.Context(seed=0, device="auto", cache=None, max_samples=n)
    from dsim import representation_of

    t1 = time.perf_counter()
    if m.needs == "images":
        rt = representation_of(m, target, ctx)
    t_target = time.perf_counter() - t1
    t2 = time.perf_counter()
    for src in sources:
        if m.needs == "images":
            m.compare(representation_of(m, src, ctx), rt, ctx)
        else:
            m.pair(dsim.DatasetCard(name=src.name), target, ctx)
    t_src = time.perf_counter() - t2
    queue.put(
        {
            "measure": measure,
            "n": n,
            "s": s,
            "load_s": t_load,
            "target_s": t_target,
            "sources_s": t_src,
            "total_s": t_target + t_src,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "base_rss_mb": base_rss / 1024,
            "device": str(ctx.torch_device()),
            "config": {k: v for k, v in m.config(ctx).items() if k != "source_checkpoints"},
        }
    )


def run_cell(measure, n, s, opts, ckpt=None, timeout=1800):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_cell, args=(q, measure, n, s, opts, ckpt))
    p.start()
    try:
        res = q.get(timeout=timeout)
    except Exception:
        p.kill()
        return None
    p.join()
    return res


def grid(ns, ss, measures, out_json=None) -> list[str]:
    import tempfile

    import torch

    import dsim

    ckpt = None
    if any(m in ("logme", "leep", "nce", "h-score") for m in measures):
        ckpt = str(Path(tempfile.mkdtemp()) / "src.pth")
        torch.save(
            dsim.create_backbone("resnet18", weights="random", num_classes=10, seed=7).state_dict(), ckpt
        )
    cfg = {
        "task2vec": {"probe_weights": "random"},
        "otdd": {},
        "otdd-exact": {"otdd_inner": "exact"},
        "logme": {},
        "leep": {},
        "nce": {},
        "h-score": {},
    }
    rows = [
        "| measure | N | S | target repr. s | S sources s | total s | per source s | peak RSS MB | baseline | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    results = []
    for n in ns:
        for s in ss:
            cell = {}
            for meas in measures:
                r = run_cell(meas, n, s, cfg[meas], ckpt)
                cell[meas] = r
                if r is None:
                    rows.append(f"| {meas} | {n} | {s} | timeout | | | | | | |")
                    continue
                results.append(r)
                base, ratio = "", ""
                rows.append(
                    f"| {meas} | {n} | {s} | {r['target_s']:.2f} | {r['sources_s']:.2f} | {r['total_s']:.2f} | "
                    f"{r['sources_s'] / s:.2f} | {r['peak_rss_mb']:.0f} | {base} | {ratio} |"
                )
                print(rows[-1], flush=True)
            if cell.get("otdd") and cell.get("otdd-exact"):
                g, e = cell["otdd"]["total_s"], cell["otdd-exact"]["total_s"]
                rows.append(
                    f"| otdd vs otdd-exact | {n} | {s} | | | | | | otdd-exact {e:.2f} s | exact/gaussian time {e / g:.1f}x |"
                )
                print(rows[-1], flush=True)
    rows.append("")
    for meas, conf in {r["measure"]: r["config"] for r in results}.items():
        rows.append(f"{meas} as configured: {json.dumps(conf, sort_keys=True, default=str)}")
    if out_json:
        Path(out_json).write_text(json.dumps(results, indent=1, default=str))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the whole grid: N 500/2000/10000 x S 1/5/20")
    ap.add_argument("--n", default="500", help="comma-separated N (default 500)")
    ap.add_argument("--s", default="1,5", help="comma-separated S (default 1,5)")
    ap.add_argument("--measures", default="otdd,otdd-exact,task2vec,logme,leep,nce,h-score")
    ap.add_argument("--json", help="write the grid's raw numbers here")
    ap.add_argument(
        "--otdd-scaling",
        action="store_true",
        help="OTDD label costs, Gaussian vs exact, for N in --n (e.g. 500,2000,10000), and the rank "
        "agreement of the two variants over --rank-s sources of --rank-n images",
    )
    ap.add_argument("--rank-s", type=int, default=20)
    ap.add_argument("--rank-n", type=int, default=2000)
    ap.add_argument(
        "--references", action="store_true", help="side by side with the reference implementations"
    )
    ap.add_argument("--task2vec-ref", help="checkout of awslabs/aws-cv-task2vec")
    ap.add_argument("--otdd-ref", help="checkout of microsoft/otdd")
    ap.add_argument(
        "--ref-deps", default="", help="folder with the references' extra packages (geomloss 0.2.x ...)"
    )
    ap.add_argument("--ref-n", type=int, default=300, help="images per data set in the reference comparison")
    ap.add_argument("--t2v-size", type=int, default=64)
    ap.add_argument("--t2v-draws", type=int, default=2000)
    ap.add_argument("--otdd-size", type=int, default=8)
    ap.add_argument("--otdd-entreg", type=float, default=1e-4)
    ap.add_argument("--tasks", default=",".join(DATASETS[:6]))
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads for the Task2Vec comparison (0: torch's default)",
    )
    ap.add_argument("--t2v-method", default="montecarlo", choices=["montecarlo", "variational"])
    ap.add_argument(
        "--t2v-skip",
        type=int,
        default=6,
        help="skip_layers on both sides (the reference's variational method only runs with 0)",
    )
    ap.add_argument("--t2v-precision", default=None, help="dsim's task2vec_precision (default: dsim's, auto)")
    ap.add_argument(
        "--t2v-label-draws", type=int, default=None, help="dsim's task2vec_label_draws (default: dsim's)"
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("DSIM_QUIET_PLUGIN_ERRORS", "1")
    lines = []
    if args.otdd_scaling:
        lines += otdd_scaling([int(x) for x in args.n.split(",")], args.rank_s, args.rank_n)
    elif args.references:
        names = [t for t in args.tasks.split(",") if t]
        if args.otdd_ref:
            lines += compare_otdd(
                args.otdd_ref, args.ref_deps, args.ref_n, args.otdd_size, names[:5], args.otdd_entreg
            ) + [""]
        if args.task2vec_ref:
            lines += compare_task2vec(
                args.task2vec_ref,
                args.ref_n,
                args.t2v_size,
                args.t2v_draws,
                names,
                args.threads,
                args.t2v_label_draws,
                args.t2v_precision,
                args.t2v_method,
                args.t2v_skip,
            ) + [""]
    else:
        ns = [500, 2000, 10000] if args.full else [int(x) for x in args.n.split(",")]
        ss = [1, 5, 20] if args.full else [int(x) for x in args.s.split(",")]
        import torch

        lines.append(f"CPU threads: {torch.get_num_threads()}, GPU: {torch.cuda.is_available()}")
        lines += grid(ns, ss, [m for m in args.measures.split(",") if m], args.json)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
