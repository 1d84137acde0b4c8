"""A multi-label target costs about what a single-label one does (issue 22, item 4).

    export DSIM_DATA_DIR=../shared/data DSIM_WEIGHTS_DIR=../shared/weights
    python benchmarks/multilabel_speed.py               # 400 mosaics, the 5 shared checkpoints

The target: 400 two-cell mosaics of the shared blood-cell images (``tests/multilabel_data.py``;
8 findings, an image has one, two or none), once with its label matrix and once single-label
(each image's first finding; the same images). In one process, each ranked against the 5
shared checkpoints with the default scores and an empty cache (imports warmed first by a small
ranking): the ratio multi-label / single-label (goal <= 2x). One feature pass per network is
shared by every score and every label (``tests/test_multilabel.py``); the per-label work is the
scores' own (LP fits one NCA per label; FU, which back-propagates once per label, is opt-in).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
SHARED = HERE.parents[1] / "shared" / "data"
CHECKPOINTS = (
    "mobilenetv1-x0.25-imagenet",
    "cifar10-resnet20",
    "cifar10-resnet32",
    "cifar10-resnet44",
    "cifar10-resnet56",
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--sources", default=",".join(CHECKPOINTS))
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from multilabel_data import blood_mosaics

    import dsim

    torch.set_num_threads(1)
    x, y = blood_mosaics(SHARED / "blood_pbc_28.npz", args.images, seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="multilabel-speed-"))
    multi, single = tmp / "mosaics_multi.npz", tmp / "mosaics_single.npz"
    np.savez(multi, images=x, labels=y)
    np.savez(single, images=x, labels=y.argmax(1))  # the first finding (none: class 0)
    sources = args.sources.split(",")

    def rank(path: Path, n: int | None = None) -> tuple[float, object]:
        t0 = time.perf_counter()
        r = dsim.rank(
            str(path), sources=sources, max_samples=n or args.images, cache=dsim.Cache(tempfile.mkdtemp())
        )
        return time.perf_counter() - t0, r

    rank(multi, 20), rank(single, 20)  # warm-up: imports, first-call costs
    t_single, r_single = rank(single)
    t_multi, r_multi = rank(multi)
    every = dsim.list_measures()
    computed = sorted(
        {
            m
            for r in r_multi.rows
            for m, v in r.contributions.items()
            if m in every and (v or {}).get("value") is not None
        }
    )
    print(f"{args.images} mosaics, 8 findings; {len(sources)} checkpoints; scores: {', '.join(computed)}")
    print()
    print("| target | seconds | ratio |")
    print("|---|---|---|")
    print(f"| single-label (first finding) | {t_single:.2f} | 1.00x |")
    print(f"| multi-label (8 findings) | {t_multi:.2f} | **{t_multi / t_single:.2f}x** (goal <= 2x) |")
    print()
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
