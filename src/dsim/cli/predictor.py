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
    """Fit a predictor on every known result (published + `dsim validate` runs) and save it; `dsim
    rank` then uses it instead of rank aggregation."""
    from dsim.predictors import fit_default, fitted_info, save_fitted

    params = {"seed": seed} if name == "meta-ranker" else {}
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
        f"{', '.join(info['targets'])}; saved {path}"
    )
    if hasattr(pred, "coefficients"):
        coefs = sorted(pred.coefficients().items(), key=lambda kv: -abs(kv[1]))
        con.print(
            "weights (standardised features, > 0 = transfers better): "
            + ", ".join(f"{k} {v:+.3f}" for k, v in coefs if abs(v) > 1e-4)
        )
    state = pred.get_state() if hasattr(pred, "get_state") else {}
    if state.get("model") in ("learned", "skill-weighted", "best-rule") and state.get("inner_spearman"):
        nan = float("nan")
        learned = max(state["inner_spearman"].values())
        mix, best = state.get("mix_spearman"), state.get("best_rule_spearman")
        kept = {
            "learned": "the learned weights",
            "skill-weighted": "the skill-weighted rule mix",
            "best-rule": f"one rule, {str(state.get('best_rule', '')).removeprefix('rule:')}",
        }[state["model"]]
        con.print(
            f"model: {kept} — inner leave-one-target-out Spearman: learned {learned:.2f}, rule mix "
            f"{mix if mix is not None else nan:.2f}, best single rule {best if best is not None else nan:.2f}"
        )


@predictor_app.command("show")
def predictor_show(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the fitted predictor `dsim rank` uses (or say that rank aggregation is used)."""
    from dsim.predictors import fitted_info, predictor_dir

    doc = fitted_info()
    if as_json:
        print_json(doc)
        return
    if doc is None:
        console().print(
            f"no fitted predictor in {predictor_dir()}: `dsim rank` uses rank aggregation "
            "(run `dsim predictor fit`)"
        )
        return
    info = doc["trained_on"]
    console().print(
        f"{doc['predictor']} {doc['params']} at {doc['path']}: trained on {info['n_results']} results, "
        f"targets {', '.join(info['targets'])}"
    )


@predictor_app.command("evaluate")
def predictor_evaluate(
    predictors: Optional[str] = typer.Option(
        None,
        "--predictors",
        help="Comma-separated labels of the suite to run (default: all: meta-ranker, rank-aggregation, baselines, each measure alone).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print every task's metrics as JSON."),
) -> None:
    """Leave-one-target-out evaluation on the results store: per held-out target, Spearman rho,
    weighted Kendall tau, top-1 hit and regret of every predictor and baseline, beside the noise
    ceiling of the measured ranking. A predictor never sees the results of the target it ranks."""
    import dsim
    from dsim.predictors import default_suite, evaluate_suite, noise_ceiling, pair_values, summarise
    from dsim.registry import get_registry

    results = dsim.known_results()
    cards = {c.name: c for c in get_registry()}
    measures = dsim.list_measures()
    values = pair_values(
        {(r.source, r.target) for r in results if r.source != r.target},
        dsim.known_measure_values(),
        cards,
        measures,
    )
    kinds = {m.name: m.kind for m in measures.values()}
    suite = default_suite(sorted({v.measure for v in values}))
    wanted = split_list(predictors)
    if wanted:
        unknown = sorted(set(wanted) - {s[0] for s in suite})
        if unknown:
            raise dsim.DsimError(
                f"unknown predictor label(s) {', '.join(unknown)}; choose from {', '.join(s[0] for s in suite)}"
            )
        suite = [s for s in suite if s[0] in wanted]
    out = evaluate_suite(suite, results, values, cards, kinds)
    ceil = noise_ceiling(results)
    if as_json:
        print_json(
            {"tasks": out, "summary": {k: summarise(v) for k, v in out.items()}, "noise_ceiling": ceil}
        )
        return
    from rich.table import Table

    tasks = [(r["setup"], r["target"]) for r in next(iter(out.values()))]
    multi = len({s for s, _ in tasks}) > 1
    label = (lambda s, t: f"{t} [{s}]") if multi else (lambda s, t: t)
    table = Table(title="leave-one-target-out: Spearman rho per held-out target", title_justify="left")
    table.add_column("predictor")
    for s, t in tasks:
        table.add_column(label(s, t), justify="right")
    for col in ("mean rho", "w. tau", "top-1", "regret T", "regret AUC"):
        table.add_column(col, justify="right")
    cmap = {(c["setup"], c["target"]): c["ceiling"] for c in ceil}
    table.add_row(
        "[dim]noise ceiling[/dim]",
        *[f"[dim]{cmap[k]:.2f}[/dim]" if k in cmap else "" for k in tasks],
        "",
        "",
        "",
        "",
        "",
    )
    for lab, rows in out.items():
        by = {(r["setup"], r["target"]): r for r in rows}
        sm = summarise(rows)
        table.add_row(
            lab,
            *[f"{by[k]['spearman']:.2f}" if k in by else "" for k in tasks],
            f"{sm['spearman']:.2f}",
            f"{sm['weighted_tau']:.2f}",
            f"{sm['top1']:.2f}",
            f"{sm['regret_t']:.2f}",
            f"{sm.get('regret_auc', float('nan')):.3f}",
        )
    con = console()
    con.print(table)
    con.print(
        f"[dim]{len(tasks)} held-out task(s); with few targets these numbers are per-target anecdotes, "
        "not a population estimate (docs/evaluation.md)[/dim]"
    )
