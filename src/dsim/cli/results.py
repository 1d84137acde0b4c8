"""``dsim results`` (list or export the results store) and ``dsim results import FILE.csv``."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from . import app
from ._util import console, print_json

results_app = typer.Typer(
    help=(
        "The results store: every finished fold of `dsim validate`, imported results tables and "
        "copied published tables. Without a sub-command: list or export it."
    ),
    invoke_without_command=True,
)
app.add_typer(results_app, name="results")

_STORE_HELP = "Results store file (default $DSIM_RESULTS or the user data dir)."


def _f(x, d=3):
    return "" if x is None else f"{x:.{d}f}"


@results_app.callback()
def results(
    ctx: typer.Context,
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Only results for this target."),
    source: Optional[str] = typer.Option(None, "--source", "-s", help="Only results from this source."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="Only this strategy."),
    as_csv: bool = typer.Option(False, "--csv", help="Export CSV (one row per fold) to stdout."),
    as_json: bool = typer.Option(False, "--json", help="Export JSON (one object per fold) to stdout."),
    import_published: bool = typer.Option(
        False,
        "--import-published",
        help=(
            "First copy the published results the plugins ship (cats-scans, Juodelyte et al.) into the store."
        ),
    ),
    failures: bool = typer.Option(False, "--failures", help="List the runs that failed and why."),
    store: Optional[str] = typer.Option(None, "--store", help=_STORE_HELP),
) -> None:
    """List or export the results store: one row per finished fold of every `dsim validate` run
    (and imported results), with AUC, accuracy, kappa and the run's setup.

    `dsim results import FILE.csv --setup NAME` imports a results table of your own.
    """
    if ctx.invoked_subcommand is not None:
        return
    from dsim.store import ResultsStore

    with ResultsStore(store) as st:
        if import_published:
            st.check_writable()
            n = st.import_published()
            console(stderr=True).print(f"imported {n} published results into {st.path}")
        if failures:
            rows = st.failures()
            if as_json:
                print_json(rows)
            else:
                for r in rows:
                    console().print(f"{r['label']}: {r['error']}", highlight=False)
            return
        rows = st.rows(target=target, source=source, strategy=strategy)
        path = st.path
    cols = [
        "source",
        "target",
        "strategy",
        "backbone",
        "fold",
        "repeat",
        "seed",
        "setup",
        "auc",
        "accuracy",
        "kappa",
        "origin",
        "key",
    ]
    if as_json:
        print_json(
            [
                {
                    **{c: r[c] for c in cols},
                    "metrics": r["metrics"],
                    "timings": r["timings"],
                    "hyperparameters": r["hyperparameters"],
                }
                for r in rows
            ]
        )
        return
    if as_csv:
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(cols)
        for r in rows:
            w.writerow([r[c] for c in cols])
        return
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"results store {path} ({len(rows)} rows)", title_justify="left")
    for c in ("source", "target", "strategy", "fold", "repeat", "setup", "AUC", "acc", "kappa", "origin"):
        t.add_column(c)
    for r in rows:
        t.add_row(
            escape(r["source"]),
            escape(r["target"]),
            r["strategy"],
            str(r["fold"]),
            str(r["repeat"]),
            escape(r["setup"]),
            _f(r["auc"]),
            _f(r["accuracy"]),
            _f(r["kappa"]),
            escape(r["origin"]),
        )
    console().print(t)


@results_app.command("import")
def results_import(
    file: str = typer.Argument(
        ..., help="CSV table: source, target, auc [, fold, repeat, accuracy, kappa, origin, ...]."
    ),
    setup: str = typer.Option(
        ..., "--setup", help="Name of the protocol the results were measured under (one per table)."
    ),
    origin: Optional[str] = typer.Option(
        None,
        "--origin",
        help="Where the numbers come from (default: imported:FILE, FILE the table's file name).",
    ),
    store: Optional[str] = typer.Option(None, "--store", help=_STORE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the import summary as JSON."),
) -> None:
    """Import a results table of your own: one row per (source, target, fold, repeat) with its
    test AUC. Columns source, target, auc are required; fold, repeat, accuracy, kappa, origin,
    backbone and strategy are optional; any other column is kept as a hyper-parameter.

    Every row is checked first: a bad row (missing column, non-numeric value, AUC outside
    [0, 1], a duplicate (source, target, fold, repeat)) is reported with its line and column,
    and then nothing is imported. Names dsim does not know become the table's own sources and
    targets. `dsim rank` and `dsim predictor` then use the results as measured.

    Example: `dsim results import my_study.csv --setup my-study:resnet50:224px`
    """
    from dsim.results_table import import_results_table

    summary = import_results_table(file, setup=setup, origin=origin, store=store)
    if as_json:
        print_json(summary)
        return
    from rich.markup import escape

    con = console()
    for line in summary["lines"]:
        con.print(escape(line), highlight=False)
