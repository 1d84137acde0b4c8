"""``dsim validate``, ``dsim pretrain``."""

from __future__ import annotations

import os
import sys
import time
from typing import List, Optional

import typer

from dsim.validation.config import DATA_PLACEMENTS, DEFAULT_PRETRAIN, DEFAULT_TRAIN, QUICK, ValidateConfig

from . import app
from ._util import CARD_OPTION, FACT_OPTION, console, fit_columns, parse_options, print_json, split_list

#: the defaults every option below shows (one place: ValidateConfig's fields)
_D = ValidateConfig()
_TRACK_HELP = (
    "Log the runs to an experiment tracker: mlflow (pip install 'dsim[mlflow]'; honours "
    "MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_NAME). Folds taken from the store are not logged again."
)


class _RunProgress:
    """Rich bars on stderr: pretraining jobs and runs finished across all workers (with ETA), and
    the epochs of the run in flight in this process (local executor)."""

    def __init__(self, enabled: bool):
        from dsim.kernel.progress import LineProgress, is_terminal

        self.enabled = enabled and is_terminal()
        # without a terminal: plain lines (a stage start, then one at least every 10 s)
        self.lines = LineProgress() if enabled and not self.enabled else None
        self._p = None
        self._overall = None
        self._pre = None
        self._run = None

    def _start(self):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console(stderr=True),
            transient=True,
        )
        self._p.start()
        self._pre = self._p.add_task("pretraining", total=1, visible=False)
        self._overall = self._p.add_task("runs", total=1)
        self._run = self._p.add_task("run", total=1, visible=False)

    def overall(self, desc: str, done: int, total: int) -> None:
        if self.lines is not None and total:
            self.lines(f"validate {desc}", done, total)  # a stage each: pretraining, runs
        if not self.enabled:
            return
        if self._p is None:
            self._start()
        if desc == "pretraining":
            self._p.update(
                self._pre, description="pretraining", completed=done, total=max(total, 1), visible=total > 0
            )
            return
        self._p.update(self._overall, description="all runs", completed=done, total=max(total, 1))

    def run(self, desc: str, done: int, total: int) -> None:
        if self.lines is not None:
            self.lines(desc, done, total)
        if not self.enabled:
            return
        if self._p is None:
            self._start()
        if done <= 1:
            self._p.reset(self._run, total=max(total, 1), visible=True)
        from rich.markup import escape

        self._p.update(self._run, description=escape(desc[:70]), completed=done, total=max(total, 1))

    def event(self, kind: str, message: str) -> None:
        from rich.markup import escape

        message = escape(message)
        con = console(stderr=True)
        if kind == "error":
            con.print(f"[red]failed[/red] {message}", highlight=False)
        elif kind == "warning":
            con.print(f"[yellow]warning:[/yellow] {message}", highlight=False)
        elif kind == "plan":
            con.print(message, highlight=False)
        elif kind == "info":
            con.print(f"[dim]{message}[/dim]", highlight=False)
        elif kind == "done" and not self.enabled:
            con.print(f"[dim]done {message}[/dim]", highlight=False)

    def close(self):
        if self._p is not None:
            self._p.stop()
        if self.lines is not None:
            self.lines.close()


def _hp(pairs: Optional[List[str]]) -> dict:
    return parse_options(pairs)


@app.command()
def validate(
    ctx: typer.Context,
    target: str = typer.Option(
        ...,
        "--target",
        "-t",
        help="Target dataset: a registered name or a path to your data (folder, .csv, .npz).",
    ),
    top: int = typer.Option(
        _D.top,
        "--top",
        "-k",
        help="Validate the K best-ranked sources that can be trained here (ignored with --sources).",
    ),
    sources: Optional[str] = typer.Option(
        None,
        "--sources",
        "-s",
        help=(
            "Comma-separated sources instead of the ranking's top K: dataset names, 'a+b' for the union of "
            "several, 'imagenet', checkpoint card names (`dsim zoo`; fine-tuned in their own architecture), "
            "'timm:<name>', or checkpoint files (.pt/.pth, trained as --backbone)."
        ),
    ),
    strategy: str = typer.Option(
        ",".join(_D.strategies),
        "--strategy",
        help=(
            "Transfer strategy (comma-separated for several): finetune, gradual-unfreeze, feature-extractor,"
            " linear-probe, linear-svm, moment-init, domain-ri, domain-in, all-ri, all-in, radiomics (`dsim "
            "plugins` lists them)."
        ),
    ),
    backbone: str = typer.Option(
        _D.backbone,
        "--backbone",
        "-b",
        help="Network: smallcnn (CPU-scale, 28 px) or any timm model (resnet18, resnet50, densenet121 ...).",
    ),
    folds: int = typer.Option(
        _D.folds,
        "--folds",
        help="Stratified k-fold cross-validation (80/10/10 train/val/test for k=5, as cats-scans).",
    ),
    train_sizes: Optional[str] = typer.Option(
        None,
        "--train-sizes",
        help="Data-size curve: training images per run, e.g. 50,100,200,500,1000,2000 (Romero et al.).",
    ),
    image_size: Optional[int] = typer.Option(
        None,
        "--image-size",
        help=(
            f"Input size in pixels for pretraining and fine-tuning (default {DEFAULT_TRAIN['image_size']}; a "
            "checkpoint: its native size, at which it is also ranked; a smaller size is warned about)."
        ),
    ),
    epochs: Optional[int] = typer.Option(
        None,
        "--epochs",
        help=f"Maximum fine-tuning epochs (early stopping on validation loss decides; default {DEFAULT_TRAIN['epochs']}).",
    ),
    pretrain_epochs: Optional[int] = typer.Option(
        None,
        "--pretrain-epochs",
        help=f"Maximum source pretraining epochs (default {DEFAULT_PRETRAIN['epochs']}).",
    ),
    target_max: Optional[int] = typer.Option(
        None, "--target-max", help="Use at most this many target images (seeded, stratified)."
    ),
    source_max: Optional[int] = typer.Option(
        None, "--source-max", help="Pretrain on at most this many images per source."
    ),
    executor: str = typer.Option(
        _D.executor,
        "--executor",
        help="local (sequential, GPU when present) or ray (pip install 'dsim[ray]').",
    ),
    address: Optional[str] = typer.Option(
        _D.address,
        "--address",
        help=(
            "Ray cluster address: host:6379, or auto on a node of a running cluster (default: start a local "
            "Ray)."
        ),
    ),
    cpus_per_run: Optional[float] = typer.Option(
        _D.cpus_per_run,
        "--cpus-per-run",
        help=(
            "CPUs each pretraining job and run asks Ray for; torch threads are set to match (default 1 on "
            "Ray; locally: torch's own)."
        ),
    ),
    gpus_per_run: Optional[float] = typer.Option(
        _D.gpus_per_run,
        "--gpus-per-run",
        help=(
            "GPUs each task asks Ray for, fractional (0.25: four runs share a GPU; default 1 when the "
            "cluster has GPUs, else 0)."
        ),
    ),
    data_placement: str = typer.Option(
        _D.data_placement,
        "--data-placement",
        help=f"{' or '.join(DATA_PLACEMENTS)}: the driver ships every dataset through Ray's object store, or workers read registered datasets from their own DSIM_DATA_DIR (shared storage).",
    ),
    seed: int = typer.Option(_D.seed, "--seed", help="Seed for splits, initialisation and subsampling."),
    device: str = typer.Option(_D.device, "--device", help="auto (CUDA when present), cpu, cuda, cuda:1 ..."),
    hp: Optional[List[str]] = typer.Option(
        None,
        "--hp",
        help=(
            "Fine-tuning hyper-parameter key=value (lr, batch_size, patience, weight_decay, augment, ordinal"
            " ...); repeatable."
        ),
    ),
    store: Optional[str] = typer.Option(
        None, "--store", help="Results store file (default $DSIM_RESULTS or the user data dir)."
    ),
    plot: Optional[str] = typer.Option(None, "--plot", help="Write a PNG of AUC per source with error bars."),
    measures: Optional[str] = typer.Option(
        None, "--measures", "-m", help="Measures for the ranking that predictions come from (default: all)."
    ),
    zoo: Optional[List[str]] = typer.Option(
        None, "--zoo", help="A checkpoint zoo YAML whose card names --sources may use (repeatable)."
    ),
    fact: Optional[List[str]] = FACT_OPTION,
    card: Optional[str] = CARD_OPTION,
    evidence: Optional[List[str]] = typer.Option(
        None,
        "--evidence",
        help="As for `dsim rank --evidence`: the measured results the ranking compared with uses.",
    ),
    quick: bool = typer.Option(
        False,
        "--quick",
        help=(
            "A CPU check of the whole loop in minutes: "
            + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items())
            + " (options given beside it win). It checks that everything runs; it cannot separate "
            "sources (the report says so)."
        ),
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    track: Optional[str] = typer.Option(None, "--track", help=_TRACK_HELP),
) -> None:
    """Check a ranking with real transfer runs.

    Ranks the sources of TARGET (or takes --sources), pretrains each source once (cached by
    content; see `dsim pretrain`; the plan of runs and pretraining jobs is printed before they
    start), fine-tunes on the target with k-fold cross-validation, and
    reports measured AUC, accuracy, Cohen's kappa and transferability
    T = (AUC(S->T) - AUC(T)) / AUC(T) x 100 against a from-scratch baseline, next to the predicted
    score, with the Spearman correlation between them.

    Every finished fold is written to the results store at once: run the same command again
    after an interruption and it resumes, recomputing nothing that finished. A failing run is
    reported with its reason and the others go on.

    Example: `dsim validate --target pneumoniamnist --sources cifar10-sample,usps --folds 3`
    """
    from dsim.validation.validate import validate as _validate

    if quick:  # the preset fills the options not given on the command line
        from click.core import ParameterSource

        given = {k for k in QUICK if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
        preset = {k: v for k, v in QUICK.items() if k not in given}
        top = preset.get("top", top)
        folds = preset.get("folds", folds)
        target_max = preset.get("target_max", target_max)
        source_max = preset.get("source_max", source_max)
        epochs = preset.get("epochs", epochs)
        pretrain_epochs = preset.get("pretrain_epochs", pretrain_epochs)
        image_size = preset.get("image_size", image_size)
    config = ValidateConfig(
        top=top,
        strategies=tuple(split_list(strategy, "--strategy") or ()),
        backbone=backbone,
        folds=folds,
        train_sizes=train_sizes,
        seed=seed,
        target_max=target_max,
        source_max=source_max,
        executor=executor,
        address=address,
        device=device,
        cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run,
        data_placement=data_placement,
        rank_options={
            **({"measures": split_list(measures, "--measures")} if measures is not None else {}),
            **({"evidence": tuple(evidence)} if evidence else {}),
        },
        zoo=tuple(zoo or ()),
    )
    hyper = _hp(hp)
    if image_size is not None:
        hyper["image_size"] = image_size
    if epochs is not None:
        hyper["epochs"] = epochs
    php = {"image_size": image_size} if image_size is not None else {}
    if pretrain_epochs is not None:
        php["epochs"] = pretrain_epochs
    if track:  # an unknown or uninstalled tracker is refused before any work starts
        from dsim.kernel.tracking import check_trackers

        check_trackers(track)
    rp = _RunProgress(enabled=not as_json)
    if rp.lines is not None:
        rp.lines.stage(
            f"validate {target}: reading the target" + (", ranking its sources" if not sources else "")
        )
    try:
        report = _validate(
            target,
            config,
            hyperparameters=hyper,
            pretrain_hyperparameters=php,
            sources=split_list(sources, "--sources"),
            store=store,
            progress=rp.overall,
            run_progress=rp.run,
            on_event=rp.event,
            facts=list(fact or ()),
            card=card,
            track=track,
        )
    finally:
        rp.close()
    if plot:
        from dsim.validation.report import plot_report

        plot_report(report, plot)
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report, plot)
    failed = _not_measured(report)
    if failed:
        print(f"error: {failed}", file=sys.stderr)
        raise typer.Exit(1)


def _not_measured(report) -> str | None:
    """Why the validation measured nothing worth its name, or None: no run succeeded, or a source
    has no successful run at all (the baseline alone is never a success)."""
    ok = {r.source for r in report.rows if r.folds - r.failed > 0 and r.auc is not None}
    sources = list(dict.fromkeys(r.source for r in report.rows if r.source != report.target))
    if not sources:
        return "no source was validated: the target-only baseline alone measures no transfer"
    if not ok & set(sources):
        return f"no source run succeeded ({len(report.failures)} failed); see the failures above"
    lost = [s for s in sources if s not in ok]
    if lost:
        return f"no successful run for {', '.join(lost)}; see the failures above"
    return None


def _f(x, d=3):
    return "" if x is None else f"{x:.{d}f}"


def _print_report(report, plot) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = Console(soft_wrap=False, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)
    title = f"dsim validate: target [bold]{report.target}[/bold] ({report.setup})"
    if report.baseline_auc is not None:
        title += f", from-scratch AUC {report.baseline_auc:.3f}"
    setups = {r.setup for r in report.rows if r.setup}
    several = len(setups) > 1  # checkpoints in their own networks: each row says its setup
    headers = ["source", "strategy", "n", "folds", "AUC", "±", "acc", "kappa", "T (%)", "± T"]
    headers += ["predicted", "pred. #", "meas. #"] + (["setup"] if several else [])
    rows = []
    for r in report.rows:
        cells = [
            r.source,
            r.strategy,
            str(r.train_size or "all"),
            f"{r.folds}" + (f" ({r.failed} failed)" if r.failed else ""),
            _f(r.auc),
            _f(r.auc_std),
            _f(r.accuracy),
            _f(r.kappa),
            _f(r.transferability, 1),
            _f(r.transferability_std, 1),
            _f(r.predicted, 2),
            str(r.predicted_rank or ""),
            str(r.measured_rank or ""),
        ]
        rows.append(cells + ([r.setup] if several else []))
    # names are never cut: the least useful columns are left out to fit (--json has them all)
    keep = fit_columns(
        headers,
        rows,
        con.width,
        drop=("kappa", "acc", "±", "n", "pred. #", "folds", "strategy"),
        wrap=("setup",),
        per_column=3,
    )
    t = Table(title=title, title_justify="left")
    for i in keep:
        h = headers[i]
        t.add_column(
            h,
            justify="left" if h in ("source", "strategy", "setup") else "right",
            no_wrap=h != "setup",
            overflow="fold",
        )
    for cells in rows:
        t.add_row(
            *[
                escape(cells[i]).replace("failed)", "[red]failed)[/red]")
                if headers[i] == "folds"
                else escape(cells[i])
                for i in keep
            ]
        )
    con.print(t)
    if several:
        con.print("T of each row: against the from-scratch run of its own setup (network, input size)")
    if len(keep) < len(headers):
        left = ", ".join(h for j, h in enumerate(headers) if j not in keep)
        con.print(f"[dim]{left}: left out to fit {con.width} columns (--json has them)[/dim]")
    rho = "n/a" if report.spearman is None else f"{report.spearman:.2f}"
    regret = "" if report.regret_auc is None else f"; top-1 regret {report.regret_auc:.3f} AUC"
    if report.spearman is not None and report.decidable is False:
        rho += " (not decidable at this scale: see the warnings below)"
    con.print(
        f"Spearman(predicted, measured T) = {rho} over {report.spearman_n} sources{regret}; "
        f"runs: {report.runs_done} done, {report.runs_skipped} from the store, {len(report.failures)} failed "
        f"({report.seconds:.0f}s); pretraining: {report.pretraining_jobs} jobs, {report.pretrained} trained now; "
        f"store: {report.store}"
    )
    for n in report.notes:
        con.print(f"[dim]note: {escape(n)}[/dim]", highlight=False)
    for w in report.warnings:
        con.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False)
    from dsim.validation.validate import same_failure

    seen: dict[str, list] = {}  # one line per reason: the same failure in every fold is said once
    for f in report.failures:
        seen.setdefault(same_failure(f["error"]), []).append(f)
    for reason, fs in seen.items():
        times = f" ({len(fs)} runs)" if len(fs) > 1 else ""
        con.print(f"[red]failed[/red]{times} {escape(reason)}", highlight=False)
    if plot:
        con.print(f"plot: {plot}")


@app.command()
def pretrain(
    source: str = typer.Option(
        ..., "--source", "-s", help="Source dataset name, 'a+b' for the union of several, or a path."
    ),
    backbone: str = typer.Option(_D.backbone, "--backbone", "-b", help="smallcnn or any timm model name."),
    init: str = typer.Option(
        "random",
        "--init",
        help=(
            "Start from 'random' (seeded) or 'imagenet' weights (local cache; says how to supply them when "
            "absent)."
        ),
    ),
    image_size: int = typer.Option(DEFAULT_PRETRAIN["image_size"], "--image-size"),
    epochs: Optional[int] = typer.Option(
        None,
        "--epochs",
        help=f"Maximum epochs (early stopping on a 10% hold-out; default {DEFAULT_PRETRAIN['epochs']}).",
    ),
    max_samples: Optional[int] = typer.Option(
        None, "--max-samples", help="At most this many source images (seeded, stratified)."
    ),
    hp: Optional[List[str]] = typer.Option(
        None, "--hp", help="Hyper-parameter key=value (lr, batch_size, patience ...); repeatable."
    ),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    force: bool = typer.Option(False, "--force", help="Train again even when the checkpoint is cached."),
    as_json: bool = typer.Option(False, "--json", help="Print the checkpoint path and its metadata as JSON."),
    track: Optional[str] = typer.Option(None, "--track", help=_TRACK_HELP),
) -> None:
    """Pretrain a backbone on a source dataset and cache the checkpoint.

    The checkpoint is keyed by content: the source's data fingerprint, the backbone, the init and
    every hyper-parameter. Running the command again prints the cached file at once; `dsim
    validate` reuses it. Prints the checkpoint path (use it as a source: --sources path.pt).
    """
    import json as _json

    from dsim.networks.pretraining import pretrain as _pretrain

    hyper = _hp(hp)
    hyper["image_size"] = image_size
    if epochs is not None:
        hyper["epochs"] = epochs
    rp = _RunProgress(enabled=not as_json)
    if rp.lines is not None:
        rp.lines.stage(f"pretrain {source} on {backbone}: reading the source")
    t0 = time.perf_counter()
    try:
        path = _pretrain(
            source,
            backbone,
            init=init,
            hyperparameters=hyper,
            max_samples=max_samples,
            seed=seed,
            device=device,
            progress=rp.run,
            force=force,
            track=track,
        )
    finally:
        rp.close()
    meta_path = path.with_suffix(".json")
    meta = _json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if as_json:
        print_json({"checkpoint": str(path), **meta})
        return
    val = meta.get("val") or {}
    con = console()
    con.print(f"checkpoint: {path}", highlight=False)
    if meta:
        con.print(
            f"{meta.get('source')} on {meta.get('backbone')} ({meta.get('images')} images, {meta.get('num_classes')} classes): "
            f"{meta.get('epochs_run')} epochs, best {meta.get('best_epoch')}, hold-out accuracy {_f(val.get('accuracy'))}, "
            f"AUC {_f(val.get('auc'))}; {time.perf_counter() - t0:.1f}s this call",
            highlight=False,
        )
