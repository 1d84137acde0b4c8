"""One short, prepared run of dsim's GPU paths, for a session that is lent a GPU machine.

What it checks (each step timed, everything printed as Markdown and written to ``--out``):

1. the CUDA path of the training engine: ``benchmarks/train_loop.py`` (dsim ``fit`` vs a bare
   PyTorch loop, both with AMP + channels_last) on resnet18 at 112 px;
2. a real ``dsim.validate`` on the GPU: two sources x one target, fine-tuning and linear probe,
   2 folds, on generated images (no data files needed), checking that runs finish on ``cuda``;
3. Task2Vec on the GPU, bf16 (the ``auto`` default there) vs fp32: time and the Spearman
   correlation of the two embeddings (resnet18 random probe, 64 px, 2000 draws);
4. ranking a checkpoint zoo at 224 px (issue 13): ten timm and dsim architectures (seeded
   random init: the device machine has no pretrained weights) on a generated 2 000-image
   target, features under fp16 autocast, against a bare batched forward pass of the same
   networks in the same process (goal: at most 1.2x); the same ranking with the features cached
   (goal: under 2 s); then the top candidate fine-tuned once (``dsim.validate``, 2 folds).

On the device machine (its Python has torch, timm, pluggy, scikit-learn, scipy, typer, rich,
pyyaml, matplotlib; POT and platformdirs travel as wheels — see /work/.library/device/README.md)::

    # here, once:  echo /.whl/ >> .git/info/exclude
    #   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
    #       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl pot platformdirs medmnist
    # device run (carry [".whl"], timeout_s 540):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
      PYTHONPATH=/tmp/site:src:plugins PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT/gpu_check.md

Here (CPU, a smoke test of the script itself): ``.venv/bin/python benchmarks/gpu_check.py --quick``.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def step(title, lines, fn):
    t0 = time.perf_counter()
    try:
        out = fn()
        lines.append(f"### {title} ({time.perf_counter() - t0:.1f} s)\n\n{out}\n")
    except Exception as exc:  # one step failing must not cost the others
        lines.append(
            f"### {title}: FAILED after {time.perf_counter() - t0:.1f} s\n\n`{type(exc).__name__}: {exc}`\n"
        )
    print(lines[-1], flush=True)


def train_loop(quick: bool, device: str) -> str:
    import train_loop as tl

    args = (
        ["--backbone", "smallcnn", "--images", "256", "--size", "28", "--epochs", "1", "--repeats", "1"]
        if quick
        else [
            "--backbone",
            "resnet18",
            "--images",
            "20000",
            "--size",
            "112",
            "--batch",
            "128",
            "--epochs",
            "2",
            "--repeats",
            "3",
        ]
    )
    buf = io.StringIO()
    with redirect_stdout(buf):
        tl.main(args + ["--device", device])
    return "```\n" + buf.getvalue().strip() + "\n```"


def synthetic(name: str, n: int, classes: int, seed: int, size: int = 32):
    """Images whose class is a blob position and brightness: learnable, so transfer is visible."""
    import dsim

    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    img = rng.normal(60, 20, (n, size, size)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    for k in range(classes):
        cy, cx = (k * 7 + seed) % (size - 8) + 4, (k * 11 + 2 * seed) % (size - 8) + 4
        blob = 120 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)
        img[y == k] += blob
    return dsim.ImageSet(name, np.clip(img, 0, 255).astype(np.uint8), y)


def validate(quick: bool, device: str) -> str:
    import tempfile

    import dsim
    from dsim.validation.store import ResultsStore

    n = 300 if quick else 4000
    data = {
        "src-a": synthetic("src-a", n, 5, 1),
        "src-b": synthetic("src-b", n, 3, 2),
        "tgt": synthetic("tgt", n // 2, 2, 3),
    }
    store = ResultsStore(Path(tempfile.mkdtemp()) / "gpu.sqlite")
    t0 = time.perf_counter()
    rep = dsim.validate(
        "tgt",
        sources=["src-a", "src-b"],
        strategy=["finetune", "linear-probe"],
        backbone="resnet18",
        folds=2,
        hyperparameters={"epochs": 2 if quick else 8, "image_size": 32 if quick else 64},
        pretrain_hyperparameters={"epochs": 1 if quick else 5, "image_size": 32 if quick else 64},
        store=store,
        inline=data,
        predict=False,
        device=device,
    )
    secs = time.perf_counter() - t0
    rows = [
        f"| {r.source} | {r.strategy} | {r.auc:.3f} | {r.transferability:+.1f} |"
        for r in rep.rows
        if r.auc is not None and r.transferability is not None
    ]
    import torch

    used = (
        f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
        if device == "cuda"
        else "on the CPU"
    )
    return (
        f"{rep.runs_done} runs in {secs:.1f} s, {len(rep.failures)} failed; {used}\n\n"
        "| source | strategy | AUC | T % |\n| --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + ("\n\nfailures: " + "; ".join(f["error"] for f in rep.failures[:3]) if rep.failures else "")
    )


def task2vec(quick: bool, device: str) -> str:
    import torch
    from scipy.stats import spearmanr

    import dsim
    from dsim_plugins.task2vec import task2vec_embedding

    data = synthetic("t2v", 200 if quick else 2000, 5, 4)
    out = ["| precision | seconds | Spearman vs fp32 |", "| --- | --- | --- |"]
    ref = None
    for prec in ("fp32", "bf16"):
        model = dsim.create_backbone("resnet18", weights="random", num_classes=5, seed=0)
        opts = {
            "image_size": 32 if quick else 64,
            "task2vec_fisher_samples": 128 if quick else 2000,
            "task2vec_precision": prec,
        }
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        e = task2vec_embedding(
            data.images, data.labels, model, opts=opts, seed=0, device=torch.device(device)
        )
        if device == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        h = e["hessian"]
        rho = 1.0 if ref is None else float(spearmanr(ref, h).statistic)
        ref = h if ref is None else ref
        out.append(f"| {prec} | {secs:.2f} | {rho:.4f} |")
    return "\n".join(out)


ZOO_ARCHS = (
    "resnet18",
    "resnet50",
    "densenet121",
    "efficientnet_b0",
    "mobilenetv3_large_100",
    "convnext_tiny",
    "regnety_016",
    "inception_v3",
    "mobilenetv1-x0.25",
    "cifar-resnet56",
)
ZOO_SCORES = ("logme", "h-score", "knn", "nleep", "sfda", "parc", "lp")


def _bare_forward(cards, images, device: str, batch: int = 128) -> float:
    """Seconds of a batched no-grad forward pass (fp16 autocast on CUDA) of every card's network
    over ``images`` at the card's input size, networks built and preprocessing included."""
    import torch

    import dsim

    amp = device == "cuda"
    t0 = time.perf_counter()
    for card in cards:
        model = dsim.load_checkpoint(card, num_classes=0).to(device).eval()
        mean = torch.tensor(card.mean).view(1, 3, 1, 1)
        std = torch.tensor(card.std).view(1, 3, 1, 1)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            for s in range(0, len(images), batch):
                x = dsim.to_tensor(images[s : s + batch], size=card.input_size, channels=3, normalize=False)
                model(((x - mean) / std).to(device)).float().cpu()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def zoo(quick: bool, device: str) -> str:
    import tempfile

    import torch
    import yaml

    import dsim

    archs = ZOO_ARCHS[:2] if quick else ZOO_ARCHS
    size, n = (32, 64) if quick else (224, 2000)
    tmp = Path(tempfile.mkdtemp(prefix="dsim-gpu-zoo-"))
    data = synthetic("zoo-target", n, 4, 5, size=64)
    np.savez(tmp / "zoo_target.npz", images=data.images, labels=data.labels)
    entries = [
        {"name": f"{a}-random", "architecture": a, "weights": "random", "input_size": size, "num_classes": 0}
        for a in archs
    ]
    (tmp / "zoo.yaml").write_text(yaml.safe_dump({"checkpoints": entries}, sort_keys=False))
    cards = dsim.load_zoo(tmp / "zoo.yaml")
    names = [c.name for c in cards]
    bare = _bare_forward(cards, data.images, device)
    kw = dict(
        sources=names,
        zoo=[str(tmp / "zoo.yaml")],
        measures=list(ZOO_SCORES),
        device=device,
        cache=dsim.Cache(tmp / "cache"),
        max_samples=n,
    )
    t0 = time.perf_counter()
    first = dsim.rank(str(tmp / "zoo_target.npz"), **kw)
    t_first = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
    t0 = time.perf_counter()
    again = dsim.rank(str(tmp / "zoo_target.npz"), **kw)
    t_again = time.perf_counter() - t0
    top = next(c for c in cards if c.name == first.sources[0])
    pth = tmp / f"{top.name}.pth"
    torch.save(dsim.load_checkpoint(top, num_classes=0).state_dict(), pth)
    t0 = time.perf_counter()
    rep = dsim.validate(
        str(tmp / "zoo_target.npz"),
        sources=[str(pth)],
        backbone=top.architecture,
        folds=2,
        hyperparameters={"epochs": 1 if quick else 3, "image_size": size},
        store=tmp / "runs.sqlite",
        predict=False,
        device=device,
    )
    t_ft = time.perf_counter() - t0
    ft = next((r for r in rep.rows if r.source == str(pth)), None)
    return (
        f"{len(cards)} networks at {size} px, {n} images, scores {', '.join(ZOO_SCORES)}\n\n"
        "| step | seconds | ratio / figure |\n| --- | --- | --- |\n"
        f"| bare forward pass (fp16 autocast) | {bare:.1f} | 1.00 |\n"
        f"| first ranking, empty cache | {t_first:.1f} | {t_first / bare:.2f}x the bare pass (goal <= 1.2) |\n"
        f"| second ranking, features cached | {t_again:.2f} | goal < 2 s; same order: {first.sources == again.sources} |\n"
        f"| fine-tune the top candidate ({top.name}), 2 folds | {t_ft:.1f} | AUC "
        f"{'n/a' if ft is None or ft.auc is None else f'{ft.auc:.3f}'}, {len(rep.failures)} failed |\n\n"
        f"peak GPU memory of the first ranking: {peak:.0f} MiB; top 3: {', '.join(first.sources[:3])}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="write the Markdown report here too")
    ap.add_argument(
        "--quick", action="store_true", help="tiny sizes (a smoke test of this script, CPU is fine)"
    )
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    a = ap.parse_args(argv)
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    lines = [f"## GPU check ({time.strftime('%Y-%m-%d')}, {name}, torch {torch.__version__})\n"]
    step("1. training engine vs bare loop (AMP, channels_last)", lines, lambda: train_loop(a.quick, device))
    step("2. dsim.validate on the device", lines, lambda: validate(a.quick, device))
    step("3. Task2Vec bf16 vs fp32", lines, lambda: task2vec(a.quick, device))
    step(
        "4. ranking a checkpoint zoo at 224 px, then fine-tuning its top", lines, lambda: zoo(a.quick, device)
    )
    text = "\n".join(lines)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
