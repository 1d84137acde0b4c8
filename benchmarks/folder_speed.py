"""A user's 6 000-image folder ranked in a few seconds (issue 22, item 2).

    export DSIM_DATA_DIR=../shared/data
    python benchmarks/folder_speed.py            # builds /tmp/dsim-folder-speed/my_cells.npz once

The target: the 6 000 images of ../shared/data/blood_pbc_28.npz resized to 64 px (PIL bilinear),
saved as one .npz, as a user's own data would come. Three figures:

* **cold / bare** (goal <= 1.5x), in one process: ``dsim.rank(target)`` with an empty cache
  against the bare computation of the measures that ranking computed values of, at its sample
  size (each dataset's seeded stratified subsample of ``--max-samples`` images held in memory,
  ``represent`` of each, ``compare`` of each pair; no cache, no file reading). Imports are warmed
  first (a ranking); best of two alternating runs of each.
* **warm** (goal <= 2 s): ``dsim rank --target <npz>`` again as a fresh process, the cache full.
* **peak memory** (goal <= 500 MB): ``ru_maxrss`` of a cold ``dsim rank --target <npz>`` process
  (its own fresh cache).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "data"


def make_target(path: Path) -> Path:
    """6 000 colour 64-px images of 8 classes (blood cells, resized), as one .npz."""
    if path.exists():
        return path
    import numpy as np
    from PIL import Image

    z = np.load(SHARED / "blood_pbc_28.npz")
    x = np.concatenate([z["train_images"], z["val_images"], z["test_images"]])
    y = np.concatenate([z["train_labels"], z["val_labels"], z["test_labels"]]).ravel()
    big = np.stack([np.asarray(Image.fromarray(a).resize((64, 64), Image.BILINEAR)) for a in x])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=big, labels=y.astype(np.int64))
    return path


def bare(measures, target, sources, max_samples: int, seed: int = 0) -> float:
    """Seconds of represent + compare of ``measures`` on the in-memory subsamples, no cache."""
    import dsim

    ctx = dsim.Context(seed=seed, device="cpu", cache=None, max_samples=max_samples)
    t = target.subsample(max_samples, seed=seed) if len(target) > max_samples else target
    srcs = [s.subsample(max_samples, seed=seed) if len(s) > max_samples else s for s in sources]
    t0 = time.perf_counter()
    for m in measures:
        rt = m.represent(t, ctx)
        for s in srcs:
            m.compare(m.represent(s, ctx), rt, ctx)
    return time.perf_counter() - t0


def cli(args: list[str], env: dict) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of ``dsim <args>`` as a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dsim", *args], env=env, check=True, stdout=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return dt, (peak if peak > before else float("nan")) / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--target", default=str(Path(tempfile.gettempdir()) / "dsim-folder-speed" / "my_cells.npz")
    )
    ap.add_argument("--max-samples", type=int, default=None, help="default: dsim's default")
    args = ap.parse_args(argv)

    import dsim
    from dsim.kernel.defaults import DEFAULT_MAX_SAMPLES

    ms = args.max_samples or DEFAULT_MAX_SAMPLES
    target = make_target(Path(args.target))
    env = {**os.environ}
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    # peak memory of a cold CLI ranking first (its own cache), then its warm rerun
    env["DSIM_CACHE_DIR"] = tempfile.mkdtemp(prefix="folder-speed-cli-")
    t_cli_cold, peak = cli(["rank", "--target", str(target), "--json"], env)
    t_warm = min(cli(["rank", "--target", str(target), "--json"], env)[0] for _ in range(2))

    # cold in-process against the bare computation, imports warmed for both
    tdata = dsim.load_dataset(str(target))
    ranking = dsim.rank(str(target), cache=dsim.Cache(tempfile.mkdtemp()), max_samples=ms)  # warm-up
    every = dsim.list_measures()
    computed = sorted(
        {m for r in ranking.rows for m, v in r.contributions.items() if (v or {}).get("value") is not None}
    )
    used = [m for m in computed if m in every and every[m].needs == "images"]
    cards = dsim.get_registry()
    sources = [
        dsim.load_dataset(r.source)
        for r in ranking.rows
        if r.source in cards and any((r.contributions.get(m) or {}).get("value") is not None for m in used)
    ]
    measures = [every[m] for m in used]  # their default parameters, as the ranking ran them
    colds, bares = [], []
    for _ in range(2):  # alternate, so that load on the machine hits both alike; best of two
        t0 = time.perf_counter()
        dsim.rank(str(target), cache=dsim.Cache(tempfile.mkdtemp()), max_samples=ms)
        colds.append(time.perf_counter() - t0)
        bares.append(bare(measures, tdata, sources, ms))
    t_cold, t_bare = min(colds), min(bares)
    load = os.getloadavg()[0]
    print(
        f"target {target.name}: {len(tdata)} images {tdata.image_shape}; {len(sources)} local sources; "
        f"image measures computed: {', '.join(used) or 'none'}; max_samples {ms}"
    )
    print()
    print("| what | seconds | ratio | goal |")
    print("|---|---|---|---|")
    print(f"| bare: represent + compare at {ms} images | {t_bare:.2f} | 1.00x | |")
    print(f"| dsim.rank, empty cache (same process) | {t_cold:.2f} | **{t_cold / t_bare:.2f}x** | <= 1.5x |")
    print(f"| `dsim rank --target` cold, fresh process | {t_cli_cold:.2f} | {t_cli_cold / t_bare:.2f}x | |")
    print(f"| `dsim rank --target` warm, fresh process | {t_warm:.2f} | | <= 2 s |")
    print()
    print(
        f"peak memory of the cold CLI ranking (ru_maxrss): {peak:.0f} MiB (goal <= 500); load average {load:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
