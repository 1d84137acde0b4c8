"""Fitted predictors: saving and loading one (JSON named by the hash of its content), fitting a
predictor on every known result, and the explicit choice of the predictor ``dsim.rank`` uses.

Evaluation of predictors (meta-datasets, leave-one-target-out, noise ceilings) is in
:mod:`dsim.evaluation.evaluate`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from dsim.evaluation.evaluate import pair_values
from dsim.kernel.cache import default_cache_dir
from dsim.kernel.catalog import (
    get_predictor,
    known_measure_values,
    known_results,
    list_measures,
    list_predictors,
    value_kinds,
)
from dsim.kernel.defaults import DEFAULT_PREDICTOR, LEARNED_PREDICTOR
from dsim.kernel.errors import DsimError, StorageError, one_line, warn
from dsim.kernel.files import atomic_write, user_path
from dsim.kernel.interfaces import Predictor
from dsim.kernel.records import TransferResult, stable_hash
from dsim.kernel.registry import get_registry
from dsim.networks.checkpoints import source_cards

__all__ = [
    "predictor_dir",
    "save_fitted",
    "load_fitted",
    "fitted_info",
    "results_fingerprint",
    "fit_default",
    "choose_predictor",
    "evidence_predictor",
    "evidence",
    "ship_evidence_predictor",
    "FITTED",
]

STATE_VERSION = 1
#: ``dsim rank --predictor fitted``: the predictor ``dsim predictor fit`` saved last
FITTED = "fitted"


def predictor_dir() -> Path:
    """``$DSIM_PREDICTOR_DIR``, else ``<user data dir>/dsim/predictors``."""
    return user_path("DSIM_PREDICTOR_DIR", "predictors")


def results_fingerprint(results: Iterable[TransferResult]) -> str:
    return stable_hash(
        sorted((r.setup, r.source, r.target, r.fold, round(r.auc, 10), r.origin) for r in results)
    )


def _params(pred: Predictor) -> dict[str, Any]:
    return pred.get_params()


def save_fitted(pred: Predictor, results: Sequence[TransferResult], *, make_current: bool = True) -> Path:
    """Write a fitted predictor as JSON under :func:`predictor_dir`, named by the hash of its
    content, and (by default) make it the one ``dsim rank`` uses. Returns the file path."""
    doc = _document(pred, results)
    text = json.dumps(doc, sort_keys=True, indent=1)
    key = stable_hash(json.loads(text))[:16]
    d = predictor_dir()
    path = d / f"{pred.name}-{key}.json"
    try:
        d.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)
        if make_current:
            atomic_write(d / "current.json", json.dumps({"file": path.name}))
    except OSError as exc:
        raise StorageError(
            f"predictor folder {str(d)!r} cannot be written ({one_line(exc)}): set DSIM_PREDICTOR_DIR "
            "to a writable folder"
        ) from None
    return path


def _document(pred: Predictor, results: Sequence[TransferResult]) -> dict[str, Any]:
    state = pred.get_state()
    return {
        "version": STATE_VERSION,
        "predictor": pred.name,
        "params": _params(pred),
        "state": state,
        "trained_on": {
            "results": results_fingerprint(results),
            "n_results": len(results),
            "targets": sorted({r.target for r in results}),
            "setups": sorted({r.setup for r in results}),
        },
    }


def fitted_info(path: str | Path | None = None) -> dict[str, Any] | None:
    """The saved document of the current (or given) fitted predictor, or None when there is none."""
    if path is None:
        cur = predictor_dir() / "current.json"
        if not cur.exists():
            return None
        try:
            path = predictor_dir() / json.loads(cur.read_text())["file"]
        except (ValueError, KeyError, OSError):
            raise DsimError(f"{cur}: unreadable; delete it or run `dsim predictor fit` again") from None
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DsimError(f"{path}: fitted predictor file is missing; run `dsim predictor fit` again") from None
    except (ValueError, OSError) as exc:
        raise DsimError(f"{path}: not a fitted predictor ({exc})") from None
    if doc.get("version") != STATE_VERSION:
        raise DsimError(f"{path}: saved by another dsim version; run `dsim predictor fit` again")
    doc["path"] = str(path)
    return doc


def load_fitted(path: str | Path | None = None) -> Predictor | None:
    """The fitted predictor saved by :func:`save_fitted` (the current one by default), or None."""
    doc = fitted_info(path)
    if doc is None:
        return None

    pred = get_predictor(doc["predictor"], **doc.get("params", {}))
    pred.set_state(doc.get("state", {}))
    pred.fitted_from = doc
    return pred


def fit_default(
    name: str = LEARNED_PREDICTOR,
    params: Mapping[str, Any] | None = None,
    results: Sequence[TransferResult] | None = None,
):
    """Fit predictor ``name`` on every known result (published + ``dsim validate``), with the
    measure values known or computable from cards for those pairs. Returns (predictor, results,
    values)."""

    results, values, cards, kinds = evidence(results)
    pred = get_predictor(name, **dict(params or {}))
    pred.fit(results, values, cards, kinds)
    return pred, results, values


def evidence(results: Sequence[TransferResult] | None = None):
    """What a predictor learns from: every known result (or ``results``), the measure values of
    their pairs (known, plus card-only measures), the candidates' cards and the measures' kinds."""
    results = list(known_results() if results is None else results)
    if not results:
        raise DsimError(
            "no measured results to fit on (the published plugins are disabled and no `dsim validate` runs exist)"
        )
    cards = source_cards()
    known = known_measure_values()
    pairs = {(r.source, r.target) for r in results if r.source != r.target}
    values = pair_values(pairs, known, cards, list_measures())
    return results, values, cards, value_kinds(known)


def _shipped_dir() -> Path:
    return Path(str(resources.files("dsim") / "fitted"))


def _evidence_key(
    name: str, params: Mapping[str, Any], results: Sequence[TransferResult] | None = None
) -> str:
    """The content key of a predictor fitted on the evidence, from what the fit is made of: its
    name and parameters, every known result and value, and the cards (whose facts and expert
    features become features): a change to any of them is another key. Cheap: nothing is fitted
    or computed to find it."""
    vals = sorted(
        (v.measure, v.source, v.target, v.fold or 0, round(float(v.value), 10))
        for v in known_measure_values()
    )
    cards = get_registry().fingerprint()

    cls = list_predictors().get(name)
    card_measures = sorted(
        (n, stable_hash(m.get_params())) for n, m in list_measures().items() if m.needs == "card"
    )
    return stable_hash(
        {
            "version": STATE_VERSION,
            "predictor": name,
            "params": dict(params),
            "results": results_fingerprint(known_results() if results is None else results),
            "values": stable_hash(vals),
            "cards": cards,
            "code": _code_id(cls) if cls is not None else None,
            "card_measures": card_measures,
        }
    )


def _code_id(cls) -> str:
    """A content hash of the source files of the package a predictor class comes from: a changed
    predictor (its features, its model selection) is another fit."""
    mod = sys.modules.get(cls.__module__)
    path = Path(getattr(mod, "__file__", "") or "")
    root = path.parent if (path.parent / "__init__.py").exists() and cls.__module__.count(".") > 1 else path
    files = sorted(root.rglob("*.py")) if root.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def evidence_predictor(
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    results: Sequence[TransferResult] | None = None,
) -> tuple[Predictor, str]:
    """The default predictor: ``name`` (the learned predictor) fitted on every known result (or
    on ``results``, a chosen part of them: ``dsim rank --evidence``), shipped with dsim for the
    evidence it ships, else fitted once and cached under the evidence's content key
    (:func:`_evidence_key`). Returns it with a note saying which."""
    name = name or LEARNED_PREDICTOR
    params = dict(params or {})
    key = _evidence_key(name, params, results)[:24]
    results = known_results() if results is None else list(results)
    origins = ", ".join(sorted({r.origin for r in results}))
    what = f"{name} fitted on the evidence: {len(results)} results for {len({r.target for r in results})} targets ({origins})"
    cached = default_cache_dir() / "predictors" / f"{key}.json"
    for where, path in (("shipped with dsim", _shipped_dir() / f"{key}.json"), ("cached", cached)):
        if path.is_file():
            try:
                return load_fitted(path), f"predictor: {what}; {where}"
            except DsimError:
                continue  # unreadable: refit below
    t0 = time.perf_counter()
    results, values, cards, kinds = evidence(results)
    pred = get_predictor(name, **params).fit(results, values, cards, kinds)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cached, json.dumps(_document(pred, results), sort_keys=True, indent=1))
    except OSError as exc:  # a cache that cannot be written: fitted again next time, said once
        warn(
            f"cache {cached.parent} cannot be written ({one_line(exc)}); working uncached: set "
            "DSIM_CACHE_DIR to a writable folder to keep results between runs",
            key="cache-unwritable",
        )
        return pred, f"predictor: {what}; fitted now (not cached)"
    took = time.perf_counter() - t0
    return pred, f"predictor: {what}; fitted now in {took:.1f} s (the evidence changed) and cached ({cached})"


def choose_predictor(
    choice: str | Predictor | None, *, results: Sequence[TransferResult] | None = None
) -> tuple[Predictor, str | None]:
    """The predictor a ranking uses, and a note saying which and why.

    ``choice``: a predictor object (used as is); a registered name (a fixed rule: a fresh
    instance; a learned predictor: fitted on every known result, like the default, and cached); ``"fitted"`` (the one ``dsim predictor fit``
    saved last); a path to a saved predictor (``.json``); or None, the default: the learned
    predictor fitted on every known result (:func:`evidence_predictor`; rank aggregation,
    :data:`dsim.kernel.defaults.DEFAULT_PREDICTOR`, when there is none to learn from); ``results``: the
    chosen evidence the default is fitted on (default: every known result)."""
    if isinstance(choice, Predictor):
        return choice, None
    if choice is None:
        try:
            return evidence_predictor(results=results)
        except DsimError as exc:  # no results, or the learned predictor is not installed
            return get_predictor(DEFAULT_PREDICTOR), f"predictor: {DEFAULT_PREDICTOR} ({exc})"
    if choice == FITTED or str(choice).endswith(".json"):
        fitted = load_fitted(None if choice == FITTED else choice)
        if fitted is None:
            raise DsimError(
                "no fitted predictor yet: run `dsim predictor fit` first (or rank with the default)"
            )
        doc = fitted.fitted_from
        info = doc.get("trained_on", {})
        note = (
            f"predictor: fitted {fitted.name} ({doc.get('path', '?')}), trained on {info.get('n_results', '?')} "
            f"results for targets {', '.join(info.get('targets', [])) or '?'}"
        )

        if info.get("results") and info["results"] != results_fingerprint(known_results()):
            note += "; the known results have changed since (run `dsim predictor fit` to refresh)"
        return fitted, note
    cls = list_predictors().get(str(choice))
    if cls is not None and cls.fit is not Predictor.fit:  # a learned predictor by name: fitted on
        return evidence_predictor(str(choice))  # the evidence (shipped, cached or fitted now)
    return get_predictor(str(choice)), None


def ship_evidence_predictor() -> Path:
    """Fit the default predictor on the evidence dsim ships and write it into the package
    (``src/dsim/fitted/``), so that a fresh install ranks without fitting first. Run it whenever
    the shipped evidence or the learned predictor changes (a test says when it is stale)."""

    d = _shipped_dir()
    for old in d.glob("*.json"):
        old.unlink()
    results, values, cards, kinds = evidence()

    pred = get_predictor(LEARNED_PREDICTOR).fit(results, values, cards, kinds)
    path = d / f"{_evidence_key(LEARNED_PREDICTOR, {})[:24]}.json"
    d.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(_document(pred, results), sort_keys=True, indent=1))
    return path
