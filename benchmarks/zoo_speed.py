"""Ranking checkpoints costs about one forward pass of their networks (issues: zoo speed, 22).

    export DSIM_DATA_DIR=../shared/data DSIM_WEIGHTS_DIR=../shared/weights
    python benchmarks/zoo_speed.py                      # the 5 shared checkpoints, default scores
    python benchmarks/zoo_speed.py --measures logme,h-score,knn,sfda,leep,nce,lp,fu  # FU named too
    python benchmarks/zoo_matrix.py --stage pretrain    # then: --zoo <cache>/zoo/zoo_matrix.yaml
    python benchmarks/zoo_speed.py --zoo /tmp/zoo-cache/zoo/zoo_matrix.yaml --sources zoo10

In one process: ``dsim.rank(target, sources=<checkpoints>, measures=<default model scores>)``
on 1000 images of the target (the default ``--max-samples``) with an empty representation
cache, against a bare batched ``torch.no_grad()`` forward pass of the same networks over the same
images at the same sizes (preprocessing included); then the same ranking again with the features
cached. Goals (issue 22): the first ranking at most 1.3x the bare pass with the default scores,
peak memory growing with one network, not all (<= 1 GB for five), the second under 2 s. Where
the time goes is measured from the ranking's own progress events: an interval that ends in a
``features of <checkpoint>`` event is feature extraction (one batch), every other interval belongs
to the measure that was scoring then. The bare pass runs before and after the ranking (their
mean is the baseline: the load on a shared machine drifts). Peak memory is the process's
``ru_maxrss`` (the bare passes build the same networks one at a time).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
#: the checkpoints of ../shared/weights (registered cards)
SHARED = (
    "mobilenetv1-x0.25-imagenet",
    "cifar10-resnet20",
    "cifar10-resnet32",
    "cifar10-resnet44",
    "cifar10-resnet56",
)
#: ten zoo checkpoints (``--sources zoo10``, with ``--zoo``) none of which was pretrained on the
#: default target's family
CHECKPOINTS = (
    "mobilenetv1-x0.25-imagenet",
    "cifar10-resnet20",
    "cifar10-resnet32",
    "cifar10-resnet44",
    "cifar10-resnet56",
    "smallcnn-usps",
    "smallcnn-mnist-test",
    "smallcnn-dtd10",
    "cifar-resnet20-usps",
    "cifar-resnet20-dtd10",
)


def default_scores() -> list[str]:
    """The model scores a ranking runs when --measures names none (FU is opt-in)."""
    import dsim

    return [n for n, m in dsim.list_measures().items() if m.needs == "source-model" and not m.opt_in]


class Timeline:
    """Progress callback that charges each interval between two events to what was running."""

    def __init__(self):
        self.last = time.perf_counter()
        self.current = "setup"
        self.spent: dict[str, float] = defaultdict(float)

    def __call__(self, label: str, done: int, total: int) -> None:
        now = time.perf_counter()
        dt, self.last = now - self.last, now
        if label.startswith("features of "):
            self.spent[f"features ({self.current})"] += dt
            return
        self.spent[self.current] += dt
        self.current = label.split(":")[0]  # "<measure>: <candidate>" -> the measure


def bare_forward(cards, images, batch: int | None = None) -> float:
    """Seconds of a batched no-grad forward pass of every card's network over ``images`` at the
    card's input size (building the networks and preprocessing included), in batches of the
    size dsim's feature extraction uses."""
    import torch

    import dsim
    from dsim.networks.checkpoints import FEATURE_BATCH

    batch = batch or FEATURE_BATCH
    t0 = time.perf_counter()
    for card in cards:
        model = dsim.load_checkpoint(card, num_classes=0).eval()
        mean = torch.tensor(card.mean).view(1, 3, 1, 1)
        std = torch.tensor(card.std).view(1, 3, 1, 1)
        with torch.no_grad():
            for s in range(0, len(images), batch):
                x = dsim.to_tensor(images[s : s + batch], size=card.input_size, channels=3, normalize=False)
                model((x - mean) / std)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="blood-pbc-28")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--measures", default=None, help="default: the default model scores")
    ap.add_argument("--sources", default=",".join(SHARED), help="checkpoint names, or zoo10")
    ap.add_argument("--zoo", default=None, help="zoo YAML of the checkpoints not registered")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--profile", action="store_true", help="also print cProfile's top 25 of the first ranking"
    )
    args = ap.parse_args(argv)

    import torch

    import dsim
    from dsim.networks.checkpoints import known_checkpoints

    torch.set_num_threads(args.threads)
    zoo = [str(Path(args.zoo))] if args.zoo else []
    known = known_checkpoints(cards=[c for z in zoo for c in dsim.load_zoo(z)])
    names = list(CHECKPOINTS) if args.sources == "zoo10" else [s for s in args.sources.split(",") if s]
    missing = [n for n in names if n not in known]
    if missing:
        raise SystemExit(f"unknown checkpoints (need --zoo?): {', '.join(missing)}")
    cards = [known[n] for n in names]
    measures = args.measures.split(",") if args.measures else default_scores()
    data = dsim.load_dataset(args.target, max_samples=args.images, seed=0)  # what rank() loads
    print(
        f"target {args.target}: {len(data)} images; {len(cards)} checkpoints; measures {', '.join(measures)}"
    )

    bare_forward(cards[:1], data.images[:128])  # warm-up: imports, allocator, first-call costs
    cache_dir = tempfile.mkdtemp(prefix="zoo-speed-")
    prof = None
    kw = dict(sources=names, zoo=zoo, measures=measures, max_samples=args.images, device="cpu")
    t_bare1 = bare_forward(cards, data.images)  # before and after: the load on the machine drifts
    tl = Timeline()
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    ranking = dsim.rank(args.target, cache=dsim.Cache(cache_dir), progress=tl, **kw)
    t_cold = time.perf_counter() - t0
    tl("end", 0, 0)
    if prof is not None:
        prof.disable()
    t_bare = (t_bare1 + bare_forward(cards, data.images)) / 2
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    t0 = time.perf_counter()
    again = dsim.rank(args.target, cache=dsim.Cache(cache_dir), **kw)  # a new Cache: from disk
    t_warm = time.perf_counter() - t0
    same = ranking.sources == again.sources
    skipped = [s for s in ranking.skipped if "measure" in s]

    print()
    print("| what | seconds | vs bare forward |")
    print("|---|---|---|")
    print(
        f"| bare no-grad forward, {len(cards)} networks x {len(data)} images (mean of a pass before "
        f"and after) | {t_bare:.2f} | 1.00x |"
    )
    print(f"| dsim.rank, empty cache | {t_cold:.2f} | **{t_cold / t_bare:.2f}x** (goal <= 1.3x) |")
    print(f"| dsim.rank, features cached | {t_warm:.2f} | {t_warm / t_bare:.2f}x (goal < 2 s) |")
    print()
    print(
        f"peak memory of the process (ru_maxrss; torch alone ~650 MiB): {peak:.0f} MiB (goal <= 1024 for five); same ranking both times: {same}; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(f"top 3: {', '.join(ranking.sources[:3])} ({ranking.predictor})")
    if skipped:
        print(f"{len(skipped)} (measure, candidate) pairs skipped, e.g. {skipped[0]['reason'][:120]}")
    print()
    print("where the first ranking's time went (from its progress events):")
    print()
    print("| part | seconds | share |")
    print("|---|---|---|")
    total = sum(tl.spent.values())
    feats = sum(v for k, v in tl.spent.items() if k.startswith("features"))
    for k, v in sorted(tl.spent.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.2f} | {v / total:.0%} |")
    print(f"| *all feature extraction* | {feats:.2f} | {feats / total:.0%} |")
    if prof is not None:
        import pstats

        print()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
