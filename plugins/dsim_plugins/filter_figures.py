"""``dsim filters``: a checkpoint's filters as a figure, with their structure score (Fok 2019).

A plugin of its own (``filter_figures``), apart from the measure, so that ``dsim --help`` lists the
command without building the measure's classes: it adds the command (``dsim_register_commands``);
the work is done by the filter-structure plugin's ``filter-structure`` measure (found by name when
the command runs); this module draws and prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

import dsim

#: the measure that draws and scores the filters (the filter-structure plugin's)
FILTER_MEASURE = "filter-structure"


@dsim.hookimpl
def dsim_register_commands(app: typer.Typer) -> None:
    """Add ``dsim filters`` to the CLI's ``app``."""
    app.command()(filters)


def _measure(**params):
    measures = dsim.list_measures()
    if FILTER_MEASURE not in measures:
        raise dsim.DsimError(
            f"measure {FILTER_MEASURE!r} is not registered (is the filter_structure plugin installed?)"
        )
    return measures[FILTER_MEASURE].with_params(**params)


def _network(arch: str, weights: str, seed: int):
    model = dsim.create_backbone(arch, weights=weights, num_classes=0, seed=seed)
    return model.eval()


def _panel(measure, model, layer: str, view: str) -> dict[str, Any]:
    m = measure.with_params(layer=layer, view=view)
    arrays = m.filters(model)
    test = m.test_filters(arrays)
    return {
        "layer": m.layer_name(model),
        "view": view,
        "arrays": arrays,
        "structured": [bool(s) for s in test["structured"]],
        "p": [round(float(x), 4) for x in test["p"]],
        "effect": [round(float(x), 4) for x in test["effect"]],
        "share": float(sum(test["structured"]) / max(1, len(test["structured"]))),
    }


def _short(name: str, n: int = 24) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def _tile(a, kind: str):
    """One filter ``(C, h, w)`` as an RGB tile in [0, 1]: kernels symmetric around grey, images
    stretched between their 1st and 99th percentile."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    if a.shape[0] != 3:
        a = np.repeat(a.mean(axis=0, keepdims=True), 3, axis=0)
    if kind == "kernels":
        s = np.abs(a).max()
        t = 0.5 + a / (2 * s) if s > 0 else np.full_like(a, 0.5)
    else:
        lo, hi = np.percentile(a, [1, 99])
        t = np.clip((a - lo) / (hi - lo), 0, 1) if hi > lo else np.full_like(a, 0.5)
    return t.transpose(1, 2, 0)


def _mosaic(arrays, structured, kind: str, show: int):
    """Up to ``show`` tiles in a near-square grid; a green frame marks a structured filter."""
    import math

    import numpy as np

    n = min(len(arrays), show)
    scale = max(1, math.ceil(12 / min(arrays.shape[-2:])))  # 3x3 kernels drawn at 12x12
    h, w = arrays.shape[-2] * scale, arrays.shape[-1] * scale
    root = max(1, math.ceil(math.sqrt(n)))
    # a full last row where a divisor of n close to the square root allows it (32 -> 8 x 4)
    cols = next((c for c in range(root, 2 * root + 1) if n % c == 0), root)
    rows = max(1, math.ceil(n / cols))
    pad = 1
    out = np.ones((rows * (h + 2 * pad) + 1, cols * (w + 2 * pad) + 1, 3))
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = r * (h + 2 * pad) + 1, c * (w + 2 * pad) + 1
        frame = (0.1, 0.7, 0.2) if structured[i] else (0.8, 0.8, 0.8)
        out[y - 1 : y + h + 2 * pad - 1, x - 1 : x + w + 2 * pad - 1] = frame
        out[y : y + h, x : x + w] = np.kron(_tile(arrays[i], kind), np.ones((scale, scale, 1)))
    return out


def _figure(checkpoints: list[dict[str, Any]], out: Path, show: int, method: str, dpi: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows = len(checkpoints[0]["panels"])
    n_cols = len(checkpoints)
    mosaics = [
        [_mosaic(p["arrays"], p["structured"], p["view"], show) for p in ck["panels"]] for ck in checkpoints
    ]
    # each row as tall as its tallest mosaic (8 kernels in a 4 x 2 grid need half the height)
    ratios = [max(m[i].shape[0] / m[i].shape[1] for m in mosaics) for i in range(n_rows)]
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(4.2 * n_cols, sum(3.6 * r + 0.5 for r in ratios)),
        squeeze=False,
        gridspec_kw={"height_ratios": [3.6 * r + 0.5 for r in ratios]},
    )
    for j, ck in enumerate(checkpoints):
        for i, p in enumerate(ck["panels"]):
            ax = axes[i][j]
            ax.imshow(mosaics[j][i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            what = "kernels" if p["view"] == "kernels" else "act. max."
            n = len(p["structured"])
            ax.set_title(
                f"{ck['label']}\n{p['layer']} {what}: {sum(p['structured'])}/{n} structured "
                f"({100 * p['share']:.0f} %)",
                fontsize=9,
            )
    fig.suptitle(f"filter structure ({method}); green frame = structured", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # room for the suptitle
    fig.savefig(out, dpi=dpi)
    plt.close(fig)


def _setup(
    out: Path,
    threads: Optional[int],
    method,
    threshold,
    min_effect,
    n_null,
    seed,
    image_size,
    steps,
    max_channels,
):
    """Check the output folder, make the measure with the options and set torch's threads."""
    import torch

    if not out.parent.exists():
        raise dsim.DsimError(f"cannot write {str(out)!r}: directory {str(out.parent)!r} does not exist")
    base = _measure(
        method=method,
        threshold=threshold,
        min_effect=min_effect,
        n_null=n_null,
        seed=seed,
        image_size=image_size,
        steps=steps,
        max_channels=max_channels,
    )
    if threads:
        torch.set_num_threads(threads)
    return base


def _checkpoints(
    base, arch: str, weights: str, compare_weights: Optional[str], layer, seed: int
) -> list[dict[str, Any]]:
    """Score the panels (first-layer kernels, then each ``layer``) of each checkpoint."""
    checkpoints = []
    for w in [weights] + ([compare_weights] if compare_weights else []):
        model = _network(arch, w, seed)
        layers = [base.layer_name(model, name) for name in (layer or [])]  # a bad name fails first
        panels = [_panel(base, model, "first", "kernels")] + [
            _panel(base, model, n, "images") for n in layers
        ]
        label = f"{arch} {w if w in ('random', 'imagenet') else _short(Path(w).name)}"
        checkpoints.append(
            {
                "arch": arch,
                "weights": w,
                "weights_id": base.weights_id(model),
                "label": label,
                "panels": panels,
            }
        )
    return checkpoints


def _report(
    checkpoints, out: Path, method: str, threshold: float, min_effect: float, n_null: int
) -> dict[str, Any]:
    """The scores as the ``--json`` report."""
    return {
        "figure": str(out),
        "method": method,
        "threshold": threshold,
        "min_effect": min_effect,
        "n_null": n_null,
        "checkpoints": [
            {
                **{k: ck[k] for k in ("arch", "weights", "weights_id")},
                "panels": [
                    {
                        "layer": p["layer"],
                        "view": p["view"],
                        "filters": len(p["structured"]),
                        "structured": int(sum(p["structured"])),
                        "share": round(p["share"], 4),
                        "p": p["p"],
                        "effect": p["effect"],
                    }
                    for p in ck["panels"]
                ],
            }
            for ck in checkpoints
        ],
    }


def _print_table(checkpoints, out: Path, method: str, threshold: float, min_effect: float) -> None:
    """Print the scores as a table, then the figure's path."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"filter structure ({method}, p < {threshold}, effect >= {min_effect})")
    for col in ("checkpoint", "layer", "view", "filters", "structured"):
        table.add_column(col, justify="right" if col in ("filters", "structured") else "left")
    for ck in checkpoints:
        for p in ck["panels"]:
            n, k = len(p["structured"]), int(sum(p["structured"]))
            view = "kernels" if p["view"] == "kernels" else "act. max."
            table.add_row(ck["label"], p["layer"], view, str(n), f"{k} ({100 * p['share']:.0f} %)")
    con = Console(soft_wrap=False)
    con.print(table)
    con.print(f"figure: {out}")


def filters(
    arch: str = typer.Option(..., "--arch", "-a", help="Backbone name (smallcnn, resnet18, ...)."),
    weights: str = typer.Option(
        ...,
        "--weights",
        "-w",
        help="Checkpoint file, 'random' (seeded init) or 'imagenet' where the backbone has it.",
    ),
    layer: Optional[List[str]] = typer.Option(
        None,
        "--layer",
        "-l",
        help=(
            "A conv layer to show by activation maximisation, by name or 'last' (repeatable); the first "
            "layer is always shown as kernels."
        ),
    ),
    compare_weights: Optional[str] = typer.Option(
        None,
        "--compare-weights",
        help="A second checkpoint (or 'random') of the same architecture, side by side.",
    ),
    out: Path = typer.Option(Path("filters.png"), "--out", "-o", help="PNG file to write."),
    method: str = typer.Option(
        "autocorr", "--method", help="Structure statistic: autocorr, directional, orientation."
    ),
    threshold: float = typer.Option(
        0.05, "--threshold", help="Permutation p-value below which a filter is structured."
    ),
    min_effect: float = typer.Option(
        0.1, "--min-effect", help="Least effect (share of the way from chance to 1)."
    ),
    n_null: int = typer.Option(499, "--n-null", help="Spatial shufflings per filter (the null)."),
    image_size: int = typer.Option(32, "--image-size", help="Activation-maximisation image size in pixels."),
    steps: int = typer.Option(64, "--steps", help="Gradient-ascent steps of activation maximisation."),
    max_channels: int = typer.Option(
        64, "--max-channels", help="Channels of a deeper layer to maximise and score."
    ),
    show: int = typer.Option(64, "--show", help="Filters drawn per panel (all are scored)."),
    dpi: int = typer.Option(110, "--dpi", help="Resolution of the figure."),
    seed: int = typer.Option(0, "--seed", help="Seed of random weights, the shufflings and the start noise."),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="torch threads (default: torch's choice; 1 is faster on busy shared cores)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the scores (and per-filter p-values) as JSON."),
) -> None:
    """Draw a checkpoint's first-layer kernels and activation-maximisation images of deeper layers,
    and print each panel's share of *structured* filters (Fok 2019: more structure, better
    transfer). A filter is structured when a permutation test of its spatial arrangement gives p <
    --threshold and an effect >= --min-effect (docs/filters.md). No data is needed."""
    base = _setup(out, threads, method, threshold, min_effect, n_null, seed, image_size, steps, max_channels)
    checkpoints = _checkpoints(base, arch, weights, compare_weights, layer, seed)
    _figure(checkpoints, out, show, method, dpi)
    report = _report(checkpoints, out, method, threshold, min_effect, n_null)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    _print_table(checkpoints, out, method, threshold, min_effect)
