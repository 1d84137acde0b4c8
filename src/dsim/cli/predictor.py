"""``dsim predictor fit|evaluate|show``."""

from __future__ import annotations

from typing import List, Optional

import typer

from dsim.kernel.defaults import LEARNED_PREDICTOR

from . import app
from ._util import Progress, console, print_json, split_list

predictor_app = typer.Typer(
    help="Fit, evaluate and inspect the predictor that `dsim rank` uses.", no_args_is_help=True
)
app.add_typer(predictor_app, name="predictor")


@predictor_app.command("fit")
def predictor_fit(
    name: str = typer.Option(
        LEARNED_PREDICTOR, "--predictor", "-p", help="Predictor plugin to fit (see `dsim plugins`)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap ensemble."),
    as_json: bool = typer.Option(False, "--json", help="Print what was saved as JSON."),
) -> None:
    """Fit a predictor on every known result (published tables, imported tables and `dsim
    validate` runs) and save it; `dsim rank --predictor fitted` ranks with it."""
    from dsim.networks.checks import check_environment
    from dsim.ranking.predictors import fit_default, fitted_info, save_fitted

    check_environment()  # DSIM_PREDICTOR_DIR (where it is saved) and the rest, before fitting
    params = {"seed": seed} if "seed" in dsim_param_names(name) else {}
    with Progress(enabled=not as_json) as progress:
        progress.stage(f"predictor fit: fitting {name} on every known result")
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
    from dsim.kernel.catalog import list_predictors

    cls = list_predictors().get(name)
    return cls.param_names() if cls is not None else []


@predictor_app.command("show")
def predictor_show(
    evidence: Optional[List[str]] = typer.Option(
        None, "--evidence", help="As for `dsim rank --evidence`: the predictor a ranking with it uses."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the predictor `dsim rank` uses (the default: fitted on the evidence, with what it
    learnt), and the one `dsim predictor fit` saved last (`dsim rank --predictor fitted`)."""
    import dsim
    from dsim.data.evidence import evidence_id, select_evidence
    from dsim.ranking.predictors import choose_predictor, fitted_info, predictor_dir

    results, chosen = select_evidence(dsim.known_results(), evidence)
    pred, note = choose_predictor(None, results=results if chosen else None)
    used = {
        "predictor": pred.name,
        "params": pred.get_params(),
        "note": note,
        "evidence_id": evidence_id(results),
        "n_results": len(results),
        "summary": list(pred.summary()),
    }
    doc = fitted_info()
    if as_json:
        print_json({"used_by_rank": used, "fitted": doc})
        return
    con = console()
    con.print(f"`dsim rank` uses: {note or pred.name} (evidence id {used['evidence_id']})", highlight=False)
    for line in used["summary"]:
        con.print(f"  {line}", highlight=False)
    if doc is None:
        con.print(
            f"no predictor saved by `dsim predictor fit` in {predictor_dir()} (--predictor fitted)",
            highlight=False,
        )
        return
    info = doc["trained_on"]
    con.print(
        f"saved by `dsim predictor fit` (--predictor fitted): {doc['predictor']} {doc['params']} at "
        f"{doc['path']}: trained on {info['n_results']} results, targets {', '.join(info['targets'])}",
        highlight=False,
    )


@predictor_app.command("evaluate")
def predictor_evaluate(
    predictors: Optional[str] = typer.Option(
        None,
        "--predictors",
        help="Comma-separated labels of the suite to run (default: all: prior-evidence, meta-ranker, "
        "rank-aggregation, track-record, fixed-blend, baselines, each measure alone).",
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
    from dsim.evaluation.evaluate import (
        default_suite,
        evaluate_suite,
        mean_metrics,
        meta_dataset,
        noise_ceiling,
        render_table,
    )
    from dsim.kernel.errors import DsimError

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
    out = {}
    with Progress(enabled=not as_json) as progress:
        progress.stage(f"predictor evaluate: {len(suite)} predictors, leave-one-target-out")
        for i, item in enumerate(suite):
            progress(f"predictor evaluate: {item[0]}", i, len(suite))

            def per_target(target: str, k: int, n: int, name: str = item[0]) -> None:
                progress(f"predictor evaluate: {name}: held-out target {target}", k, n)

            out.update(
                evaluate_suite([item], meta.results, meta.values, meta.cards, meta.kinds, progress=per_target)
            )
    if not any(out.values()):
        raise DsimError("no target has three or more measured sources to evaluate on")
    ceil = noise_ceiling(meta.results)
    if as_json:
        print_json(
            {"tasks": out, "summary": {k: mean_metrics(v) for k, v in out.items()}, "noise_ceiling": ceil}
        )
        return
    for line in render_table(out, ceil, meta.name, metric=metric):
        print(line)
    n = len(next(iter(out.values())))
    print(
        f"{n} held-out task(s); with few targets these numbers are per-target anecdotes, not a population "
        "estimate (docs/evaluation.md)"
    )
