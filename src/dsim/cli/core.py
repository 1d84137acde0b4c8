"""``dsim rank``, ``dsim measure``, ``dsim datasets``, ``dsim plugins``."""

from __future__ import annotations

import re
from typing import List, Optional

import typer

from dsim.kernel.defaults import DEFAULT_MAX_SAMPLES, DEFAULT_PREDICTOR, LEARNED_PREDICTOR

from . import app
from ._util import (
    CARD_OPTION,
    FACT_OPTION,
    Progress,
    console,
    fit_columns,
    parse_options,
    print_json,
    split_list,
)


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
            "published results or known values (and, with --with-checkpoints, the checkpoints whose "
            "weights are here)."
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
            f"saved predictor's .json (default: {LEARNED_PREDICTOR} fitted on every known result; "
            f"{DEFAULT_PREDICTOR} when there is none to learn from)."
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
    fact: Optional[List[str]] = FACT_OPTION,
    card: Optional[str] = CARD_OPTION,
    evidence: Optional[List[str]] = typer.Option(
        None,
        "--evidence",
        help=(
            "Measured results to use: a setup (cats-scans:resnet50, dsim:smallcnn:28px), an origin "
            "(published:cats-scans), 'published', 'shipped' (dsim's own measured matrices) or 'store' (your results store); a leading '-' leaves it "
            "out: --evidence=-published:cats-scans. Repeatable or comma-separated (default: all; the "
            "notes name what was used)."
        ),
    ),
    with_checkpoints: bool = typer.Option(
        False,
        "--with-checkpoints",
        help=(
            "Without --sources or --zoo, also rank the checkpoints whose weights files are here (each "
            "costs a forward pass of its network over the target; left out by default, named in a note)."
        ),
    ),
    holdout_target: bool = typer.Option(
        False,
        "--holdout-target",
        help=(
            "Rank as if the target had never been measured: its own results (and those of its images "
            "at another size) are held out of the evidence and the predictor's fit. What `dsim "
            "validate` compares its measurements with."
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
            facts=list(fact or ()),
            card=card,
            evidence=tuple(evidence or ()),
            with_checkpoints=with_checkpoints,
            holdout_target=holdout_target,
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
    from rich.markup import escape

    con = console()
    measures = list(ranking.measures)
    on_t = ranking.score_unit.startswith("transferability")
    title = f"Sources for target [bold]{ranking.target}[/bold]"
    if ranking.target_auc is not None:
        where = f" in {ranking.target_auc_setup}" if ranking.target_auc_setup else ""
        title += f" (target-only AUC {ranking.target_auc:.3f}{where})"
    checkpoints = any(r.kind == "checkpoint" for r in ranking.rows)
    aucs = any(r.measured_auc is not None for r in ranking.rows)
    shown = measures if len(measures) <= 4 else []  # many scores: named per row, values in --csv/--json
    setups = any(r.setup for r in ranking.rows)
    # (header, right-aligned, may narrow): numbers keep their width, names are never cut; on a
    # narrow terminal the descriptive columns narrow (ellipsis), then the least useful are left out
    cols = [("#", True, False), ("source", False, False)]
    if checkpoints:  # a ranking with checkpoints says each one's architecture (blank: a dataset)
        cols.append(("network", False, True))
    cols += [("T (%)" if on_t else "score", True, False), ("±", True, False), ("status", False, False)]
    if aucs:
        cols.append(("AUC", True, False))
    cols += [(m, True, False) for m in shown]
    split = any(r.prior is not None for r in ranking.rows)  # a prior + evidence predictor
    if split:  # each row's prior, its evidence shift, and whether it is told apart from #1
        cols += [("prior", True, False), ("evid.", True, False), ("≈", False, False)]
    if not shown and measures:
        cols.append(("ranked by", False, True))
    if setups:  # where each measured row was measured (the names --evidence takes)
        cols.append(("setup", False, True))
    means: dict[str, float] = {}  # each feature's mean contribution over the predicted rows
    pred = [r for r in ranking.rows if r.status == "predicted"]
    for r in pred:
        for k, v in r.contributions.items():
            if isinstance(v, dict) and v.get("contribution") is not None:
                means[k] = means.get(k, 0.0) + v["contribution"] / len(pred)
    rows = []
    for r in ranking.rows:
        cells = [str(r.rank), r.source]
        if checkpoints:
            cells.append(r.architecture or "" if r.kind == "checkpoint" else "")
        cells += [_fmt(r.score), _fmt(r.uncertainty), r.status]
        if aucs:
            cells.append(_fmt(r.measured_auc, 3))
        cells += [_fmt((r.contributions.get(m) or {}).get("value"), 3) for m in shown]
        if split:
            cells += [
                _fmt(r.prior),
                "" if r.evidence is None or not r.evidence_parts else f"{r.evidence:+.2f}",
                "≈" if r.tied_with_first else "",
            ]
        if not shown and measures:
            cells.append(_ranked_by(r, measures, means))
        if setups:
            cells.append(r.setup or "")
        rows.append(cells)
    headers = [c[0] for c in cols]
    keep = fit_columns(
        headers,
        rows,
        con.width,
        drop=("ranked by", *reversed(shown), "AUC", "network", "setup", "evid.", "prior", "±"),
        wrap=tuple(h for h, _r, narrow in cols if narrow),
        per_column=2,
    )
    table = _listing_table(title)
    for i in keep:
        h, right, narrow = cols[i]
        table.add_column(_cell(h) if narrow else h, justify="right" if right else "left", no_wrap=not narrow)
    colour = {"measured": "[green]measured[/green]", "predicted": "[yellow]predicted[/yellow]"}
    for cells in rows:
        table.add_row(
            *[
                colour.get(cells[i], cells[i])
                if headers[i] == "status"
                else (_cell(cells[i]) if cols[i][2] else cells[i])
                for i in keep
            ]
        )
    con.print(table)
    if len(keep) < len(headers):
        left = ", ".join(h for j, h in enumerate(headers) if j not in keep)
        con.print(f"[dim]{left}: left out to fit {con.width} columns (wider terminal, --csv or --json)[/dim]")
    used = f"over {', '.join(measures)}" if measures else "from track records and card facts (no measure)"
    con.print(
        f"score: {ranking.score_unit}; measured = real fine-tuning results, predicted = {ranking.predictor} "
        f"{used}",
        highlight=False,
    )
    if any(r.tied_with_first for r in ranking.rows):
        con.print("≈: not told apart from #1 (closer than 1.28 sd of the difference)", highlight=False)
    for f in ranking.failed:  # never ranked: listed apart, each with its reason
        con.print(f"[red]failed[/red] {f['source']} (not ranked): {escape(f['reason'])}", highlight=False)
    for n in ranking.notes:
        con.print(f"[dim]note: {escape(n)}[/dim]", highlight=False)
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
    from dsim.data.loading import data_missing
    from dsim.kernel.registry import get_registry

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

    headers = ["name", "aliases", "origin", "modality", "ch", "classes", "images", "data here"]
    cells = [
        [
            c.name,
            ", ".join(c.aliases),
            c.origin,
            c.modality,
            str(c.channels or ""),
            str(c.num_classes or ""),
            f"{c.size:,}" if c.size else "",
            "yes" if m is None else "no",
        ]
        for c, m in rows
    ]
    con = console()
    # names are never cut: on a narrow terminal aliases and modality wrap, then the least useful
    # columns are left out (--json has them all)
    keep = fit_columns(
        headers,
        cells,
        con.width,
        drop=("ch", "images", "aliases", "modality", "classes", "origin"),
        wrap=("aliases", "modality"),
        per_column=2,
    )
    table = _listing_table("dsim dataset registry")
    for i in keep:
        table.add_column(headers[i], no_wrap=headers[i] not in ("aliases", "modality"))
    for row in cells:
        table.add_row(
            *[
                ("[green]yes[/green]" if row[i] == "yes" else "[dim]no[/dim]")
                if headers[i] == "data here"
                else row[i]
                for i in keep
            ]
        )
    con.print(table)
    if len(keep) < len(headers):
        left = ", ".join(h for j, h in enumerate(headers) if j not in keep)
        con.print(f"[dim]{left}: left out to fit {con.width} columns (wider terminal or --json)[/dim]")


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

    table = _listing_table("dsim measures")
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
    from dsim.kernel.plugins import plugin_report

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
    from dsim.kernel.registry import get_registry
    from dsim.networks.checkpoints import checkpoint_missing, load_zoo

    cards = list(get_registry().checkpoints.values()) + [c for f in file or () for c in load_zoo(f)]
    rows = [(c, checkpoint_missing(c)) for c in cards]
    if as_json:
        print_json([{**c.to_dict(), "weights_here": m is None, "weights_missing": m} for c, m in rows])
        return

    table = _listing_table("dsim checkpoint zoo")
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


def _listing_table(title: str):
    """A rich table of one listing (a ranking, the registry, the measures, the zoo): plain
    header rule, no outer edge."""
    from rich import box
    from rich.table import Table

    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
