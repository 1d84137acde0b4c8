"""``dsim rank``, ``dsim measure``, ``dsim datasets``, ``dsim plugins``."""

from __future__ import annotations

import re
from typing import List, Optional

import typer

from dsim.defaults import DEFAULT_MAX_SAMPLES

from . import app
from ._util import Progress, console, parse_options, print_json, split_list


@app.command()
def rank(
    target: str = typer.Option(
        ...,
        "--target",
        "-t",
        help=(
            "Target dataset: a registered name (see `dsim datasets`) or a path to your own data (folder with"
            " one sub-folder per class, .csv of path,label, or .npz)."
        ),
    ),
    sources: Optional[str] = typer.Option(
        None,
        "--sources",
        "-s",
        help=(
            "Comma-separated candidate sources: dataset names, checkpoint cards (`dsim zoo`), timm:<model> or "
            ".pth/.pt files (with --arch); mixed in one ranking. Default: every dataset with data here, "
            "published results or known values, and the checkpoints whose weights are here."
        ),
    ),
    measures: Optional[str] = typer.Option(
        None,
        "--measures",
        "-m",
        help="Comma-separated measures (default: every measure that can run; see `dsim plugins`).",
    ),
    top: Optional[int] = typer.Option(None, "--top", "-k", help="Show only the K best sources."),
    predictor: Optional[str] = typer.Option(
        None,
        "--predictor",
        help=(
            "Predictor: a plugin name (`dsim plugins`), 'fitted' (the one `dsim predictor fit` saved) or a "
            "saved predictor's .json (default: rank aggregation)."
        ),
    ),
    probe: Optional[str] = typer.Option(
        None,
        "--probe",
        help="Probe network for image measures such as task2vec (any timm name; default resnet18).",
    ),
    probe_weights: Optional[str] = typer.Option(
        None,
        "--probe-weights",
        help=(
            "Probe weights: 'imagenet' (local cache only), 'random' (seeded random init, explicit) or a "
            "checkpoint file."
        ),
    ),
    max_samples: int = typer.Option(
        DEFAULT_MAX_SAMPLES,
        "--max-samples",
        help="Images per dataset that image measures look at (seeded stratified subsample).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for subsampling and random probes."),
    option: Optional[List[str]] = typer.Option(
        None, "--option", "-o", help="key=value passed to measure plugins (repeatable)."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Fail on an unreadable image file instead of leaving it out (and naming it)."
    ),
    arch: Optional[str] = typer.Option(
        None,
        "--arch",
        help="Architecture (a backbone name) of the .pth/.pt checkpoint files named in --sources.",
    ),
    zoo: Optional[List[str]] = typer.Option(
        None,
        "--zoo",
        help=(
            "YAML file of checkpoint cards (name, architecture, weights: file:<path> or timm:<name>, "
            "pretrained_on ...); without --sources its checkpoints are the candidates (repeatable)."
        ),
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the ranking as JSON (for machines)."),
    as_csv: bool = typer.Option(
        False,
        "--csv",
        help=(
            "Print one CSV row per source (rank, source, score, uncertainty, status, AUC, one column per "
            "measure)."
        ),
    ),
) -> None:
    """Rank candidate sources for a target dataset, best first.

    Numbers from real fine-tuning (published results shipped with dsim, or your own `dsim validate`
    runs) are marked **measured**; the rest are **predicted** from the
    similarity measures. Example: `dsim rank --target chest`.
    """
    import dsim

    opts = parse_options(option)
    _probe_flags(opts, split_list(measures, "--measures"), probe=probe, probe_weights=probe_weights)
    with Progress(enabled=not (as_json or as_csv)) as progress:
        ranking = dsim.rank(
            target,
            sources=split_list(sources, "--sources"),
            measures=split_list(measures, "--measures"),
            predictor=predictor,
            top=top,
            seed=seed,
            max_samples=max_samples,
            options=opts,
            progress=progress,
            strict=strict,
            arch=arch,
            zoo=tuple(zoo or ()),
        )
    if as_json:
        print_json(ranking.to_dict())
        return
    if as_csv:
        _print_csv(ranking)
        return
    _print_ranking(ranking)


def _ranked_by(row, measures, means) -> str:
    """What ranked a row: for a learned predictor the two features that set it apart most from the
    other candidates (its contribution minus their mean), else the measures it has values of; a
    measured row is placed by its own fine-tuning result."""
    if row.status == "measured":
        return "fine-tuning"
    contrib = [
        (abs(v["contribution"] - means.get(k, 0.0)), k)
        for k, v in row.contributions.items()
        if isinstance(v, dict) and v.get("contribution") is not None and k not in measures
    ]
    if row.status == "predicted" and contrib and max(c for c, _ in contrib) > 1e-9:
        return ", ".join(k.removeprefix("sim:") for _, k in sorted(contrib, reverse=True)[:2])
    have = [m for m in measures if (row.contributions.get(m) or {}).get("value") is not None]
    return f"{len(have)} scores" if len(have) > 3 else ", ".join(have)


def _probe_flags(opts: dict, measures: list[str] | None, **flags) -> None:
    """``--probe`` / ``--probe-weights``: set on the selected measures that take them (a ranking
    with card measures only ignores them); ``-o`` options stay strict."""
    if not any(flags.values()):
        return
    import dsim

    every = dsim.list_measures()
    chosen = [every[m] for m in (measures or every) if m in every]
    for key, value in flags.items():
        if value and any(key in m.param_names() for m in chosen):
            opts.setdefault(key, value)


def _print_csv(ranking) -> None:
    import csv
    import sys

    w = csv.writer(sys.stdout)
    measures = list(ranking.measures)
    w.writerow(["rank", "source", "score", "uncertainty", "status", "measured_auc", *measures])
    for r in ranking.rows:
        w.writerow(
            [
                r.rank,
                r.source,
                r.score,
                "" if r.uncertainty is None else r.uncertainty,
                r.status,
                "" if r.measured_auc is None else r.measured_auc,
                *[(r.contributions.get(m) or {}).get("value", "") for m in measures],
            ]
        )


def _fmt(x, digits=2):
    return "" if x is None else f"{x:.{digits}f}"


def _cell(text: str):
    """A table cell that never wraps: cut with an ellipsis when its column is narrowed."""
    from rich.text import Text

    return Text(text, no_wrap=True, overflow="ellipsis")


def _print_ranking(ranking) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    con = console()
    measures = list(ranking.measures)
    on_t = ranking.score_unit.startswith("transferability")
    title = f"Sources for target [bold]{ranking.target}[/bold]"
    if ranking.target_auc is not None:
        title += f" (target-only AUC {ranking.target_auc:.3f})"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    checkpoints = any(r.kind == "checkpoint" for r in ranking.rows)
    aucs = any(r.measured_auc is not None for r in ranking.rows)
    # Rows never wrap: numbers keep their width; names give way to an ellipsis on a narrow
    # terminal (rich narrows only the columns that may wrap; their cells are no-wrap Text).
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("source", no_wrap=True)  # what --sources takes: cut last
    if checkpoints:  # a ranking with checkpoints says each one's architecture (blank: a dataset)
        table.add_column(_cell("network"))
    table.add_column("T (%)" if on_t else "score", justify="right", no_wrap=True)
    table.add_column("±", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    if aucs:
        table.add_column("AUC", justify="right", no_wrap=True)
    shown = measures if len(measures) <= 4 else []  # many scores: named per row, values in --csv/--json
    for m in shown:
        table.add_column(m, justify="right", no_wrap=True)
    if not shown and measures:
        table.add_column(_cell("ranked by"))
    means: dict[str, float] = {}  # each feature's mean contribution over the predicted rows
    pred = [r for r in ranking.rows if r.status == "predicted"]
    for r in pred:
        for k, v in r.contributions.items():
            if isinstance(v, dict) and v.get("contribution") is not None:
                means[k] = means.get(k, 0.0) + v["contribution"] / len(pred)
    for r in ranking.rows:
        status = "[green]measured[/green]" if r.status == "measured" else "[yellow]predicted[/yellow]"
        cells = [str(r.rank), r.source]
        if checkpoints:
            cells.append(_cell(r.architecture or "" if r.kind == "checkpoint" else ""))
        cells += [_fmt(r.score), _fmt(r.uncertainty), status]
        if aucs:
            cells.append(_fmt(r.measured_auc, 3))
        cells += [_fmt((r.contributions.get(m) or {}).get("value"), 3) for m in shown]
        if not shown and measures:
            cells.append(_cell(_ranked_by(r, measures, means)))
        table.add_row(*cells)
    con.print(table)
    used = ", ".join(measures) or "no measure"
    con.print(
        f"score: {ranking.score_unit}; measured = real fine-tuning results, predicted = {ranking.predictor} "
        f"over {used}",
        highlight=False,
    )
    for f in ranking.failed:  # never ranked: listed apart, each with its reason
        con.print(f"[red]failed[/red] {f['source']} (not ranked): {escape(f['reason'])}", highlight=False)
    for n in ranking.notes:
        con.print(f"[dim]note: {n}[/dim]")
    # one line per reason: which measures and which sources it kept out
    grouped: dict[str, tuple[list[str], list[str]]] = {}
    for s in ranking.skipped:
        reason = s["reason"]
        if s.get("source"):  # the same reason for many sources: one line, the source names listed once
            reason = reason.replace(repr(s["source"]), "this source")
            # a missing file names itself and its download link: one line for all (--json has each)
            reason = re.sub(
                r"^\S+ not found in (\S+); download .*$",
                r"images not found in \1 (--json gives each download link)",
                reason,
            )
        measures_, sources_ = grouped.setdefault(reason, ([], []))
        if s.get("measure") and s["measure"] not in measures_:
            measures_.append(s["measure"])
        if s.get("source") and s["source"] not in sources_:
            sources_.append(s["source"])
    for reason, (measures_, sources_) in grouped.items():
        what = []
        if measures_:
            what.append(", ".join(measures_))
        if sources_:
            # a long list of registry cards left out is cut short (--json lists them all)
            cut = len(sources_) > 8
            shown = [*sources_[:6], f"and {len(sources_) - 6} more"] if cut else sources_
            what.append(("for " if measures_ else "") + ", ".join(shown))
        con.print(f"[dim]skipped {' '.join(what)}: {reason}[/dim]", highlight=False)


@app.command()
def measure(
    source: str = typer.Option(..., "--source", "-s", help="Source dataset name or path."),
    target: str = typer.Option(..., "--target", "-t", help="Target dataset name or path."),
    measure_name: str = typer.Option(..., "--measure", "-m", help="Measure name (see `dsim measures`)."),
    max_samples: int = typer.Option(
        DEFAULT_MAX_SAMPLES, "--max-samples", help="Images per dataset (seeded stratified subsample)."
    ),
    seed: int = typer.Option(0, "--seed"),
    probe: Optional[str] = typer.Option(
        None, "--probe", help="Probe network for image measures (timm name)."
    ),
    probe_weights: Optional[str] = typer.Option(
        None, "--probe-weights", help="'imagenet', 'random' or a checkpoint file."
    ),
    option: Optional[List[str]] = typer.Option(
        None, "--option", "-o", help="key=value passed to the measure (repeatable)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Compute one measure for one (source, target) pair: the value, its config and timings."""
    import dsim

    opts = parse_options(option)
    _probe_flags(opts, [measure_name], probe=probe, probe_weights=probe_weights)
    with Progress(enabled=not as_json) as progress:
        out = dsim.measure(
            source, target, measure_name, seed=seed, max_samples=max_samples, options=opts, progress=progress
        )
    if as_json:
        print_json(out)
        return
    con = console()
    con.print(
        f"{out['measure']} ({out['kind']}) {out['source']} -> {out['target']}: [bold]{out['value']:.6g}[/bold]"
    )
    con.print(f"config: {out['config']}")
    con.print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in out["timings"].items()))
    if out["contributions"]:
        con.print(f"contributions: {out['contributions']}")


@app.command()
def datasets(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    local: bool = typer.Option(False, "--local", help="Only datasets whose images are available here."),
) -> None:
    """List the dataset registry: names, aliases, facts, and whether the images are here."""
    from dsim.data import data_missing
    from dsim.registry import get_registry

    cards = list(get_registry())
    rows = []
    for c in cards:
        missing = data_missing(c) if c.loader else "card facts only"
        if local and missing:
            continue
        rows.append((c, missing))
    if as_json:
        print_json([{**c.to_dict(), "data_available": m is None, "data_missing": m} for c, m in rows])
        return
    from rich.table import Table

    table = Table(title="dsim dataset registry", title_justify="left")
    for col in ("name", "aliases", "origin", "modality", "ch", "classes", "images", "data here"):
        table.add_column(col)
    for c, m in rows:
        table.add_row(
            c.name,
            ", ".join(c.aliases),
            c.origin,
            c.modality,
            str(c.channels or ""),
            str(c.num_classes or ""),
            f"{c.size:,}" if c.size else "",
            "[green]yes[/green]" if m is None else "[dim]no[/dim]",
        )
    console().print(table)


@app.command()
def measures(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the measures: name, kind (distance: lower = closer; score: higher = better), what
    each needs (card facts, both datasets' images, a network and the target's images, the network
    alone), whether `dsim rank` runs it by default or only when --measures names it (opt-in),
    its parameters (set with -o key=value) and what it computes."""
    import dsim

    every = dsim.list_measures()
    rows = [
        {
            "name": n,
            "kind": m.kind,
            "needs": m.needs,
            "default": not m.opt_in,
            "parameters": m.get_params(),
            "description": m.description,
        }
        for n, m in every.items()
    ]
    if as_json:
        print_json(rows)
        return
    from rich import box
    from rich.table import Table

    table = Table(
        title="dsim measures", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("needs", no_wrap=True)
    table.add_column("in rank", no_wrap=True)
    table.add_column("what it computes")
    for r in rows:
        table.add_row(
            r["name"], r["kind"], r["needs"], "default" if r["default"] else "opt-in", r["description"]
        )
    con = console()
    con.print(table)
    con.print("[dim]parameters: `dsim measures --json`; set them with -o key=value[/dim]", highlight=False)


@app.command()
def plugins(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List every plugin, the package it comes from and what it provides; broken plugins are
    listed with their error."""
    from dsim.plugins import plugin_report

    report = plugin_report()
    if as_json:
        print_json(report)
        return
    from rich.table import Table

    table = Table(title="dsim plugins", title_justify="left")
    for col in ("plugin", "package", "provides", "events"):
        table.add_column(col)
    for r in report:
        provides = "; ".join(
            f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in r["provides"].items()
        )
        if r["error"]:
            provides = f"[red]error: {r['error']}[/red]"
        table.add_row(r["plugin"], r["package"], provides, ", ".join(r["events"]))
    console().print(table)


@app.command()
def zoo(
    as_json: bool = typer.Option(
        False, "--json", help="Print JSON (each card and whether its weights are here)."
    ),
    file: Optional[List[str]] = typer.Option(None, "--zoo", help="Also the cards of these zoo YAML files."),
) -> None:
    """List the checkpoint cards dsim knows (registry, plugins, --zoo files) and whether their
    weights are here. Shared files are found through DSIM_WEIGHTS_DIR; timm weights in the local
    cache (or with DSIM_ALLOW_DOWNLOAD=1)."""
    from dsim.checkpoints import checkpoint_missing, load_zoo
    from dsim.registry import get_registry

    cards = list(get_registry().checkpoints.values()) + [c for f in file or () for c in load_zoo(f)]
    rows = [(c, checkpoint_missing(c)) for c in cards]
    if as_json:
        print_json([{**c.to_dict(), "weights_here": m is None, "weights_missing": m} for c, m in rows])
        return
    from rich import box
    from rich.table import Table

    table = Table(
        title="dsim checkpoint zoo",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("name", no_wrap=True)  # what --sources takes: never cut
    table.add_column("architecture")
    table.add_column("pretrained on", no_wrap=True)
    table.add_column("weights", no_wrap=True)  # the kind; --json has the file or tag
    table.add_column("here", no_wrap=True)
    for c, m in rows:
        table.add_row(
            c.name,
            _cell(c.architecture),
            _cell(c.pretrained_on or ""),
            c.weights.split(":")[0],
            "[green]yes[/green]" if m is None else "[dim]no[/dim]",
        )
    con = console()
    con.print(table)
    missing = [m for _, m in rows if m]
    if missing:
        con.print(f"[dim]{len(missing)} without weights here; e.g. {missing[0]}[/dim]", highlight=False)
