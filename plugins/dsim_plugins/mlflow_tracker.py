"""MLflow tracker: ``dsim validate/pretrain ... --track mlflow`` and ``dsim results import --mlflow-...``.

What lands where (``dsim validate``):

- **experiment**: ``$MLFLOW_EXPERIMENT_NAME``, else ``dsim-<target>``; at
  ``$MLFLOW_TRACKING_URI``, else a local SQLite store beside dsim's results store
  (``<results dir>/mlflow/mlflow.db``, artifacts in ``<results dir>/mlflow/artifacts``; a
  ``sqlite:///`` URI dsim creates an experiment in keeps its artifacts beside the file too).
- **one run per (source, strategy, setup)** (tag ``dsim.kind=source``), named
  ``<source> · <strategy> · <setup>``: the parameters every fold shares, and at the end of the
  command the means over the folds (``auc_mean``, ``auc_std``, ``accuracy_mean``,
  ``kappa_mean``, ``T_mean``, ``T_std``), the ranking's ``predicted_score`` and
  ``predicted_rank`` of the source, ``spearman``, and the artifacts ``validate_report.json``
  and ``validate_plot.png``.
- **one nested run per fold** (tag ``dsim.kind=fold``, parent the run above), named
  ``<source> fold <k>``: parameters (source, target, strategy, backbone, checkpoint hash,
  setup, image_size, fold, folds, seed, dsim_version, fingerprints, every hyper-parameter as
  ``hp.<name>``, pretraining ones as ``hp.pretrain.<name>``), the per-epoch curves
  ``train_loss``, ``val_loss``, ``val_auc`` (step = epoch), and the fold's final ``auc``,
  ``accuracy``, ``kappa``, ``T`` (against the scratch baseline's same fold), sizes and timings.

Every fold run is tagged with dsim's run key (``dsim.run_key``, the content hash of everything
the result depends on) and logged from the driver once the fold is in dsim's results store: a
fold taken from the store is not run, so not logged again; a fold whose key has a finished run
already is skipped; a run left RUNNING by a killed command is marked FAILED and logged anew.
``dsim pretrain --track mlflow`` logs one run per checkpoint (tag ``dsim.checkpoint``) in
experiment ``dsim-pretrain`` (or ``$MLFLOW_EXPERIMENT_NAME``).

MLflow is imported only when a tracker method runs (``--track mlflow``), never at import.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import dsim

_INSTALL = 'pip install "dsim[mlflow]"'
_MAX_PARAM = 500  # MLflow's oldest limit on a parameter value's length


def _local_root() -> Path:
    return dsim.default_store_path().parent / "mlflow"


def _clean(name: str) -> str:
    """A metric or parameter name MLflow accepts (letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", name)


def _flat(prefix: str, d: Any, out: dict[str, str]) -> None:
    if isinstance(d, dict):
        for k, v in sorted(d.items()):
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[_clean(prefix)] = str(d)[:_MAX_PARAM]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class MlflowTracker(dsim.Tracker):
    name = "mlflow"
    description = (
        "log validate and pretrain runs to MLflow (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME; "
        "default: a local SQLite store beside the results store)"
    )
    install = _INSTALL

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._client = None
        self._uri: str | None = None
        self._artifacts: str | None = None
        self._experiments: dict[str, str] = {}
        self._parents: dict[str, dict[str, Any]] = {}  # group key -> run id, spec, fold runs
        self._say = None

    # ------------------------------------------------------------------ setup
    def unavailable(self) -> str | None:
        if importlib.util.find_spec("mlflow") is None:
            return f"mlflow is not installed: {_INSTALL}"
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            missing = [m for m in ("sqlalchemy", "alembic") if importlib.util.find_spec(m) is None]
            if missing:
                return (
                    f"the local MLflow store needs {' and '.join(missing)}: {_INSTALL} "
                    "(or set MLFLOW_TRACKING_URI to a tracking server)"
                )
        return None

    def _where(self, location: str | None = None) -> tuple[str, str | None]:
        """Tracking URI and (for the local default) the artifact root."""
        uri = location or os.environ.get("MLFLOW_TRACKING_URI")
        if uri and uri.startswith("sqlite:///"):  # artifacts beside the file, not in ./mlruns
            return uri, (Path(uri[len("sqlite:///") :]).expanduser().parent / "artifacts").as_uri()
        if uri:
            return uri, None
        root = _local_root()
        return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()

    def start(self, say) -> None:
        self._reset()
        self._say = say
        self._uri, self._artifacts = self._where()
        if os.environ.get("MLFLOW_TRACKING_URI"):
            say("info", f"mlflow: logging runs to {self._uri}")
        else:
            say(
                "info",
                f"mlflow: logging runs to the local store {_local_root()} (MLFLOW_TRACKING_URI unset; "
                f"view them with: mlflow ui --backend-store-uri {self._uri})",
            )

    def _c(self, uri: str | None = None):
        if self._client is None or uri is not None:
            import logging

            from mlflow.tracking import MlflowClient

            for n in ("mlflow", "alembic"):  # the local store's "creating tables" lines
                logging.getLogger(n).setLevel(logging.WARNING)
            client = MlflowClient(tracking_uri=uri or self._uri)
            if uri is not None:
                return client
            self._client = client
        return self._client

    def _experiment(self, name: str, tags: dict[str, str] | None = None) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or name
        if name in self._experiments:
            return self._experiments[name]
        c = self._c()
        exp = c.get_experiment_by_name(name)
        if exp is None:
            where = f"{self._artifacts}/{_clean(name).replace(' ', '_')}" if self._artifacts else None
            exp_id = c.create_experiment(name, artifact_location=where, tags=tags or {})
        else:
            exp_id = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                c.restore_experiment(exp_id)
        self._experiments[name] = exp_id
        return exp_id

    def _find(self, exp_id: str, tags: dict[str, str]) -> list:
        """Runs of the experiment with these tag values, newest first."""
        cond = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        return list(
            self._c().search_runs([exp_id], filter_string=cond, order_by=["attributes.start_time DESC"])
        )

    def _log(self, run_id: str, params: dict[str, str], metrics: dict[str, float], history=()) -> None:
        import time

        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        ms = [Metric(_clean(k), float(v), now, 0) for k, v in metrics.items() if _finite(v)]
        for h in history:
            step = int(h.get("epoch", 0))
            ms += [
                Metric(k, float(h[k]), now, step)
                for k in ("train_loss", "val_loss", "val_auc")
                if _finite(h.get(k))
            ]
        ps = [Param(k, v) for k, v in params.items()]
        c = self._c()
        for i in range(0, len(ps), 100):  # MLflow's limits per batch: 100 params, 1000 metrics
            c.log_batch(run_id, params=ps[i : i + 100])
        for i in range(0, len(ms), 1000):
            c.log_batch(run_id, metrics=ms[i : i + 1000])

    # ------------------------------------------------------------------ validate
    @staticmethod
    def _group(spec) -> str:
        d = spec.to_dict()
        d.pop("fold", None)
        return dsim.stable_hash(d)

    @staticmethod
    def _params(spec, checkpoint: str | None = None, fold: bool = True) -> dict[str, str]:
        hp = dict(spec.hyperparameters)
        out = {
            "source": spec.source,
            "target": spec.target,
            "strategy": spec.strategy,
            "backbone": spec.backbone,
            "setup": dsim.setup_of(spec),
            "image_size": str(hp.get("image_size", "")),
            "seed": str(spec.seed),
            "folds": str(spec.folds),
            "dsim_version": dsim.__version__,
        }
        if fold:
            out["fold"] = str(spec.fold)
        if checkpoint:
            out["checkpoint"] = checkpoint
        _flat("fingerprint", dict(spec.fingerprints), out)
        _flat("hp", hp, out)
        return out

    def _parent(self, exp_id: str, spec) -> dict[str, Any]:
        g = self._group(spec)
        if g in self._parents:
            return self._parents[g]
        c = self._c()
        found = self._find(exp_id, {"dsim.group_key": g, "dsim.kind": "source"})
        if found:  # an earlier command logged folds of this (source, strategy, setup)
            run_id = found[0].info.run_id
            c.update_run(run_id, status="RUNNING")
        else:
            run = c.create_run(
                exp_id,
                run_name=f"{spec.source} · {spec.strategy} · {dsim.setup_of(spec)}",
                tags={"dsim.group_key": g, "dsim.kind": "source", "dsim.target": spec.target},
            )
            run_id = run.info.run_id
            self._log(run_id, self._params(spec, fold=False), {})
        self._parents[g] = {"run_id": run_id, "spec": spec, "folds": []}
        return self._parents[g]

    def _fold_run(self, spec, status_note: str) -> tuple[str, dict[str, Any]] | None:
        """A new nested run for ``spec``'s fold, or None when one finished already."""
        c = self._c()
        exp_id = self._experiment(f"dsim-{spec.target}", {"dsim.target": spec.target})
        old = self._find(exp_id, {"dsim.run_key": spec.key})
        if any(r.info.status == "FINISHED" for r in old):
            return None
        for r in old:
            if r.info.status in ("RUNNING", "SCHEDULED"):  # its command was killed
                c.set_tag(r.info.run_id, "dsim.note", "interrupted; logged again by a later command")
                c.set_terminated(r.info.run_id, status="FAILED")
        parent = self._parent(exp_id, spec)
        run = c.create_run(
            exp_id,
            run_name=f"{spec.source} fold {spec.fold}",
            tags={
                "mlflow.parentRunId": parent["run_id"],
                "dsim.run_key": spec.key,
                "dsim.group_key": self._group(spec),
                "dsim.kind": "fold",
                "dsim.label": spec.label[:_MAX_PARAM],
                "dsim.status": status_note,
            },
        )
        return run.info.run_id, parent

    def run_finished(self, result) -> None:
        made = self._fold_run(result.spec, "finished")
        if made is None:
            return
        run_id, parent = made
        metrics = dict(result.metrics)
        metrics.update({f"time.{k}": v for k, v in dict(result.timings).items()})
        self._log(run_id, self._params(result.spec, result.checkpoint), metrics, result.history)
        self._c().set_terminated(run_id, status="FINISHED")
        parent["folds"].append((run_id, result))

    def run_failed(self, spec, error: str) -> None:
        made = self._fold_run(spec, "failed")
        if made is None:
            return
        run_id, _parent = made
        self._log(run_id, self._params(spec), {})
        self._c().set_tag(run_id, "dsim.error", error[:_MAX_PARAM])
        self._c().set_terminated(run_id, status="FAILED")

    def _baseline_aucs(self, report) -> dict[tuple, float]:
        """(setup, fold, seed) -> AUC of the target-only baseline folds in dsim's store."""
        with dsim.ResultsStore(report.store) as st:
            rows = st.rows(target=report.target)
        return {
            (r["setup"], int(r["fold"]), int(r["seed"])): float(r["auc"])
            for r in rows
            if r["source"] == r["target"] and r["auc"] is not None and r.get("seed") is not None
        }

    def validation_done(self, report) -> None:
        if not self._parents:
            return  # nothing new was logged in this command
        import dataclasses

        c = self._c()
        base = self._baseline_aucs(report)
        for p in self._parents.values():
            spec = p["spec"]
            for run_id, result in p["folds"]:
                s = result.spec
                b = base.get((dsim.setup_of(dataclasses.replace(s, strategy="scratch")), s.fold, s.seed))
                auc = result.metrics.get("auc")
                if s.source != s.target and b and _finite(auc):
                    c.log_metric(run_id, "T", (auc - b) / b * 100.0)
            n = dict(spec.hyperparameters).get("train_size")
            row = next(
                (
                    r
                    for r in report.rows
                    if r.source == spec.source and r.strategy == spec.strategy and (r.train_size or None) == n
                ),
                None,
            )
            if row is not None:
                self._log(
                    p["run_id"],
                    {},
                    {
                        "auc_mean": row.auc,
                        "auc_std": row.auc_std,
                        "accuracy_mean": row.accuracy,
                        "kappa_mean": row.kappa,
                        "T_mean": row.transferability,
                        "T_std": row.transferability_std,
                        "predicted_score": row.predicted,
                        "predicted_rank": row.predicted_rank,
                        "folds_failed": row.failed,
                        "spearman": report.spearman,
                    },
                )
        with tempfile.TemporaryDirectory(prefix="dsim-mlflow-") as tmp:
            rep = Path(tmp) / "validate_report.json"
            rep.write_text(json.dumps(report.to_dict(), indent=2, default=str))
            files = [rep]
            if any(r.auc is not None for r in report.rows):
                files.append(dsim.plot_report(report, Path(tmp) / "validate_plot.png"))
            for p in self._parents.values():
                for f in files:
                    c.log_artifact(p["run_id"], str(f))

    def close(self, error: BaseException | None = None) -> None:
        if self._client is not None:
            status = "FINISHED" if error is None else "KILLED"
            for p in self._parents.values():
                self._client.set_terminated(p["run_id"], status=status)
        self._reset()

    # ------------------------------------------------------------------ pretrain
    def pretrain_done(self, checkpoint: Path, meta) -> None:
        key = checkpoint.stem
        exp_id = self._experiment("dsim-pretrain")
        if any(r.info.status == "FINISHED" for r in self._find(exp_id, {"dsim.checkpoint": key})):
            self._say("info", f"mlflow: checkpoint {key[:12]} is logged already")
            return
        c = self._c()
        run = c.create_run(
            exp_id,
            run_name=f"pretrain {meta.get('backbone', '?')} on {meta.get('source', '?')}",
            tags={"dsim.checkpoint": key, "dsim.kind": "pretrain", "dsim.path": str(checkpoint)},
        )
        params: dict[str, str] = {"dsim_version": dsim.__version__, "checkpoint": key}
        for k in ("source", "backbone", "init", "seed", "images", "num_classes", "fingerprint"):
            if k in meta:
                params[k] = str(meta[k])[:_MAX_PARAM]
        _flat("hp", dict(meta.get("train") or {}), params)
        metrics = {f"val_{k}": v for k, v in dict(meta.get("val") or {}).items()}
        metrics.update({k: meta.get(k) for k in ("epochs_run", "best_epoch", "seconds")})
        self._log(run.info.run_id, params, metrics, meta.get("history") or ())
        meta_file = checkpoint.with_suffix(".json")
        if meta_file.exists():
            c.log_artifact(run.info.run_id, str(meta_file))
        c.set_terminated(run.info.run_id, status="FINISHED")

    # ------------------------------------------------------------------ import
    def read_runs(self, location, experiment, fields):
        if importlib.util.find_spec("mlflow") is None:
            raise dsim.DsimError(f"reading MLflow runs needs mlflow: {_INSTALL}")
        uri, _ = self._where(location)
        c = self._c(uri)
        exp = c.get_experiment_by_name(experiment)
        if exp is None:
            known = [e.name for e in c.search_experiments()]
            raise dsim.DsimError(
                f"MLflow experiment {experiment!r} not found at {uri}"
                + (f" (experiments there: {', '.join(known[:10])})" if known else "")
            )
        runs, token = [], None
        while True:
            page = c.search_runs(
                [exp.experiment_id],
                filter_string="attributes.status = 'FINISHED'",
                order_by=["attributes.start_time ASC"],
                max_results=1000,
                page_token=token,
            )
            runs += list(page)
            token = page.token
            if not token:
                break
        out: list[tuple[str, dict[str, str]]] = []
        folds: dict[tuple[str, str], int] = {}
        for r in runs:
            found = {**{k: str(v) for k, v in r.data.metrics.items()}, **r.data.params}
            row = {col: found[name] for col, name in fields.items() if name in found}
            if not all(row.get(k) for k in ("source", "target", "auc")):
                continue  # not a result (e.g. dsim's per-source summary run)
            if "fold" not in row:  # runs without a fold: numbered per (source, target) in start order
                ident = (row["source"], row["target"])
                row["fold"] = str(folds.setdefault(ident, 0))
                folds[ident] += 1
            out.append((f"run {r.info.run_id[:12]} ({r.info.run_name})", row))
        if not out:
            raise dsim.DsimError(
                f"MLflow experiment {experiment!r}: no finished run has "
                + ", ".join(f"{fields[k]!r}" for k in ("source", "target", "auc"))
                + " (name the parameters and metric that hold them with --source-param, --target-param, --auc-metric)"
            )
        return out


@dsim.hookimpl
def dsim_register_trackers():
    return [MlflowTracker()]
