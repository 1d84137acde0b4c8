"""The evidence a ranking stands on: which measured results it uses, said in its notes, and the
user's choice of them (``dsim rank --evidence``).

Every measured result has an *origin* (``published:cats-scans``, ``dsim validate``,
``imported:<file>``) and a *setup* (the protocol it was measured under, e.g.
``cats-scans:resnet50`` or ``dsim:smallcnn:28px``). An ``--evidence`` term names either, or one of
three groups: ``published`` (every published table), ``shipped`` (the matrices dsim measured
itself and ships, origins ``dsim:...``) and ``store`` (the user's results store: ``dsim validate``
runs and imported tables). A term alone keeps only the results it names (several terms:
their union); a term with a leading ``-`` (or ``not:``) leaves the results it names out.

>>> select_evidence(results, ["-published:cats-scans"])        # doctest: +SKIP
>>> select_evidence(results, ["store", "published:juodelyte2024"])  # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from dsim.kernel.errors import DsimError
from dsim.kernel.records import TransferResult, stable_hash

__all__ = ["parse_evidence", "select_evidence", "evidence_notes", "evidence_id", "GROUPS"]

#: the groups an ``--evidence`` term may name besides an origin or a setup
GROUPS = ("published", "shipped", "store")


def _group(r: TransferResult) -> str:
    origin = str(r.origin)
    if origin.startswith("published"):
        return "published"
    return "shipped" if origin.startswith("dsim:") else "store"


def _matches(term: str, r: TransferResult) -> bool:
    if term in GROUPS:
        return _group(r) == term
    if term in (r.setup, r.origin):
        return True
    # a prefix ending in ':' names every setup or origin under it (``dsim:`` = every dsim setup)
    return term.endswith(":") and (r.setup.startswith(term) or str(r.origin).startswith(term))


def parse_evidence(terms: Iterable[str] | str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(kept, left out)`` from ``--evidence`` terms (repeatable, or comma-separated)."""
    if terms is None:
        return (), ()
    items = [terms] if isinstance(terms, str) else list(terms)
    keep, drop = [], []
    for item in items:
        for t in str(item).split(","):
            t = t.strip()
            if not t:
                continue
            if t.startswith("-") or t.startswith("not:"):
                drop.append(t[1:] if t.startswith("-") else t[4:])
            else:
                keep.append(t[1:] if t.startswith("+") else t)
    return tuple(keep), tuple(drop)


def select_evidence(
    results: Sequence[TransferResult], terms: Iterable[str] | str | None
) -> tuple[list[TransferResult], str | None]:
    """The results the ``terms`` keep, and a note saying what was left out (None when all are
    kept). A term that names no result is a one-line error listing the setups and origins."""
    keep, drop = parse_evidence(terms)
    if not keep and not drop:
        return list(results), None
    for t in keep + drop:
        if not any(_matches(t, r) for r in results):
            setups = sorted({r.setup for r in results})
            origins = sorted({str(r.origin) for r in results})
            raise DsimError(
                f"--evidence {t!r} names no result; use {', '.join(GROUPS)}, an origin "
                f"({', '.join(origins) or 'none'}) or a setup ({', '.join(setups) or 'none'}), "
                "with a leading '-' to leave it out"
            )
    out = [
        r
        for r in results
        if (not keep or any(_matches(t, r) for t in keep)) and not any(_matches(t, r) for t in drop)
    ]
    left = len(results) - len(out)
    said = ", ".join([*keep, *(f"-{t}" for t in drop)])
    return out, f"evidence chosen ({said}): {len(out)} of {len(results)} results used, {left} left out"


def evidence_id(results: Iterable[TransferResult]) -> str:
    """A short content id of a set of results: two rankings with the same id used the same evidence."""
    return stable_hash(
        sorted((r.setup, r.source, r.target, r.fold, r.repeat, round(r.auc, 10), r.origin) for r in results)
    )[:8]


def _per_setup(rs: Iterable[TransferResult]) -> str:
    c = Counter(r.setup for r in rs)
    return ", ".join(f"{s} {n}" for s, n in sorted(c.items()))


def evidence_notes(results: Sequence[TransferResult], target: str) -> list[str]:
    """Two lines for a ranking's notes: the evidence it used (results per origin, the user's
    store per setup, and its id, which changes whenever any result does: a ranking of another
    target can change with it, through the predictor fitted on all of it), and the results about
    ``target`` per setup."""
    if not results:
        return ["evidence: no measured results (every prediction comes from the measures and cards)"]
    by_group: dict[str, list[TransferResult]] = defaultdict(list)
    for r in results:
        by_group[_group(r)].append(r)
    parts = []
    pub = Counter(str(r.origin) for r in by_group.get("published", []))
    if pub:
        parts.append("published tables " + ", ".join(f"{o} {n}" for o, n in sorted(pub.items())))
    shipped = by_group.get("shipped", [])
    if shipped:
        origins = ", ".join(sorted({str(r.origin) for r in shipped}))
        parts.append(
            f"dsim's own shipped matrices {origins} {len(shipped)} ({len({r.setup for r in shipped})} setups)"
        )
    own = by_group.get("store", [])
    if own:
        targets = sorted({r.target for r in own})
        shown = ", ".join(targets[:4]) + (f" and {len(targets) - 4} more" if len(targets) > 4 else "")
        parts.append(f"your store {len(own)} ({_per_setup(own)}; about {shown})")
    lines = [
        f"evidence: {len(results)} results for {len({r.target for r in results})} targets: "
        f"{'; '.join(parts)} (evidence id {evidence_id(results)}; any change to it can reorder every "
        "target's ranking through the predictor fitted on it)"
    ]
    mine = [r for r in results if r.target == target]
    if mine:
        lines.append(
            f"evidence about {target}: {len(mine)} results, per setup: {_per_setup(mine)} "
            "(T of a source uses the baseline of its own setup only)"
        )
    return lines
