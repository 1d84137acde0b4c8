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
    from dsim.validation.store import ResultsStore

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
    file: Optional[str] = typer.Argument(
        None,
        help="CSV table: source, target, auc [, fold, repeat, accuracy, kappa, origin, ...] (or --mlflow-experiment).",
    ),
    setup: Optional[str] = typer.Option(
        None,
        "--setup",
        help=(
            "Name of the protocol the results were measured under (one per table; required for a CSV, "
            "default mlflow:EXPERIMENT for an MLflow experiment)."
        ),
    ),
    origin: Optional[str] = typer.Option(
        None,
        "--origin",
        help="Where the numbers come from (default: imported:FILE, or mlflow:EXPERIMENT).",
    ),
    mlflow_experiment: Optional[str] = typer.Option(
        None,
        "--mlflow-experiment",
        help="Import the finished runs of this MLflow experiment instead of a CSV (pip install 'dsim[mlflow]').",
    ),
    mlflow_uri: Optional[str] = typer.Option(
        None,
        "--mlflow-uri",
        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else the local store `--track mlflow` writes).",
    ),
    source_param: str = typer.Option("source", "--source-param", help="MLflow parameter naming the source."),
    target_param: str = typer.Option("target", "--target-param", help="MLflow parameter naming the target."),
    auc_metric: str = typer.Option("auc", "--auc-metric", help="MLflow metric holding the test AUC."),
    fold_param: str = typer.Option(
        "fold", "--fold-param", help="MLflow parameter numbering the fold (absent: runs numbered in order)."
    ),
    store: Optional[str] = typer.Option(None, "--store", help=_STORE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the import summary as JSON."),
) -> None:
    """Import a results table of your own: one row per (source, target, fold, repeat) with its
    test AUC. Columns source, target, auc are required; fold, repeat, accuracy, kappa, origin,
    backbone and strategy are optional; any other column is kept as a hyper-parameter.

    Or import an MLflow experiment's finished runs (--mlflow-experiment, --mlflow-uri): each run
    with a source, a target (parameters) and an AUC (metric) is one row; name them with
    --source-param, --target-param, --auc-metric when your runs call them otherwise (accuracy,
    kappa, backbone and strategy are read when present). Runs logged by `--track mlflow` need
    no option.

    Every row is checked first: a bad row (missing column, non-numeric value, AUC outside
    [0, 1], a duplicate (source, target, fold, repeat)) is reported with its line and column
    (or run), and then nothing is imported. Names dsim does not know become the table's own
    sources and targets. `dsim rank` and `dsim predictor` then use the results as measured.

    Example: `dsim results import my_study.csv --setup my-study:resnet50:224px`

    Example: `dsim results import --mlflow-uri sqlite:///mlflow.db --mlflow-experiment my-study`
    """
    from dsim.kernel.errors import DsimError

    if mlflow_experiment:
        if file:
            raise DsimError("give a CSV file or --mlflow-experiment, not both")
        from dsim.validation.results_table import import_tracker_runs

        fields = {"source": source_param, "target": target_param, "auc": auc_metric, "fold": fold_param}
        summary = import_tracker_runs(
            "mlflow",
            mlflow_experiment,
            location=mlflow_uri,
            fields=fields,
            setup=setup,
            origin=origin,
            store=store,
        )
    else:
        if not file:
            raise DsimError("give a CSV file to import (or --mlflow-experiment NAME)")
        if mlflow_uri:
            raise DsimError("--mlflow-uri needs --mlflow-experiment")
        from dsim.validation.results_table import import_results_table

        summary = import_results_table(file, setup=setup or "", origin=origin, store=store)
    if as_json:
        print_json(summary)
        return
    from rich.markup import escape

    con = console()
    for line in summary["lines"]:
        con.print(escape(line), highlight=False)
