"""``dsim predictor fit|evaluate|show``."""

from __future__ import annotations

from typing import Optional

import typer

from . import app
from ._util import console, print_json, split_list

predictor_app = typer.Typer(
    help="Fit, evaluate and inspect the predictor that `dsim rank` uses.", no_args_is_help=True
)
app.add_typer(predictor_app, name="predictor")


@predictor_app.command("fit")
def predictor_fit(
    name: str = typer.Option(
        "meta-ranker", "--predictor", "-p", help="Predictor plugin to fit (see `dsim plugins`)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap ensemble."),
    as_json: bool = typer.Option(False, "--json", help="Print what was saved as JSON."),
) -> None:
    """Fit a predictor on every known result (published tables, imported tables and `dsim
    validate` runs) and save it; `dsim rank --predictor fitted` ranks with it."""
    from dsim.predictors import fit_default, fitted_info, save_fitted

    params = {"seed": seed} if "seed" in dsim_param_names(name) else {}
    pred, results, values = fit_default(name, params)
    path = save_fitted(pred, results)
    doc = fitted_info(path)
    if as_json:
        print_json(doc)
        return
    con = console()
    info = doc["trained_on"]
    con.print(
        f"fitted {pred.name} on {info['n_results']} results ({len(values)} measure values), targets "
        f"{', '.join(info['targets'])}; saved {path}",
        highlight=False,
    )
    for line in pred.summary():
        con.print(line, highlight=False)


def dsim_param_names(name: str) -> list[str]:
    from dsim.catalog import list_predictors

    cls = list_predictors().get(name)
    return cls.param_names() if cls is not None else []


@predictor_app.command("show")
def predictor_show(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the predictor `dsim predictor fit` saved last (`dsim rank --predictor fitted`)."""
    from dsim.predictors import fitted_info, predictor_dir

    doc = fitted_info()
    if as_json:
        print_json(doc)
        return
    if doc is None:
        console().print(f"no fitted predictor in {predictor_dir()} (run `dsim predictor fit`)")
        return
    info = doc["trained_on"]
    console().print(
        f"{doc['predictor']} {doc['params']} at {doc['path']}: trained on {info['n_results']} results, "
        f"targets {', '.join(info['targets'])}",
        highlight=False,
    )


@predictor_app.command("evaluate")
def predictor_evaluate(
    predictors: Optional[str] = typer.Option(
        None,
        "--predictors",
        help="Comma-separated labels of the suite to run (default: all: meta-ranker, rank-aggregation, "
        "baselines, each measure alone).",
    ),
    setup: Optional[str] = typer.Option(
        None,
        "--setup",
        help="Only results of this setup (exact name, or a prefix ending in ':'; `dsim results` lists "
        "setups), e.g. a table imported with `dsim results import --setup NAME`.",
    ),
    metric: str = typer.Option("spearman", "--metric", help="Per-target column: spearman or weighted_tau."),
    as_json: bool = typer.Option(False, "--json", help="Print every task's metrics as JSON."),
) -> None:
    """Leave-one-target-out evaluation on every known result (or one setup): per held-out target,
    Spearman rho, weighted Kendall tau, top-1 hit and regret of every predictor and baseline,
    beside the noise ceiling of the measured ranking. A predictor never sees the results of the
    target it ranks, nor of the datasets holding the same images (the registry's family rule)."""
    import dsim
    from dsim.errors import DsimError
    from dsim.evaluation import (
        default_suite,
        evaluate_suite,
        meta_dataset,
        noise_ceiling,
        render_table,
        summarise,
    )

    if metric not in ("spearman", "weighted_tau"):
        raise DsimError(f"--metric {metric!r}: use spearman or weighted_tau")
    results = dsim.known_results()
    if setup:
        results = [
            r for r in results if r.setup == setup or (setup.endswith(":") and r.setup.startswith(setup))
        ]
        if not results:
            known = sorted({r.setup for r in dsim.known_results()})
            raise DsimError(f"no results under setup {setup!r}; known setups: {', '.join(known)}")
    meta = meta_dataset(setup or "known results", results)
    suite = default_suite(sorted({v.measure for v in meta.values}))
    wanted = split_list(predictors, "--predictors")
    if wanted:
        unknown = sorted(set(wanted) - {s[0] for s in suite})
        if unknown:
            raise DsimError(
                f"unknown predictor label(s) {', '.join(unknown)}; choose from {', '.join(s[0] for s in suite)}"
            )
        suite = [s for s in suite if s[0] in wanted]
    out = evaluate_suite(suite, meta.results, meta.values, meta.cards, meta.kinds)
    if not any(out.values()):
        raise DsimError("no target has three or more measured sources to evaluate on")
    ceil = noise_ceiling(meta.results)
    if as_json:
        print_json(
            {"tasks": out, "summary": {k: summarise(v) for k, v in out.items()}, "noise_ceiling": ceil}
        )
        return
    for line in render_table(out, ceil, meta.name, metric=metric):
        print(line)
    n = len(next(iter(out.values())))
    print(
        f"{n} held-out task(s); with few targets these numbers are per-target anecdotes, not a population "
        "estimate (docs/evaluation.md)"
    )
