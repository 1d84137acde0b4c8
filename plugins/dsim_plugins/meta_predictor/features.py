"""The meta-ranker's features of a (source, target) pair: card facts, within-target z-scored
measure values, and the source's track record on the other targets of the history."""

from __future__ import annotations

import math
from collections import defaultdict

import dsim

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy


def _log10(x):
    try:
        return math.log10(float(x)) if x is not None and float(x) > 0 else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _flag(cond, known):
    return float(cond) if known else float("nan")


def card_features(source: dsim.DatasetCard, target: dsim.DatasetCard) -> dict[str, float]:
    """Features of a (source, target) pair taken from the two cards (NaN where a fact is missing)."""
    s_med = source.origin in ("medical", "natural")
    t_med = target.origin in ("medical", "natural")
    f = {
        "log10_size": _log10(source.size),
        "log10_classes": _log10(source.num_classes),
        "source_medical": _flag(source.origin == "medical", s_med),
        "source_grey": _flag(source.channels == 1, source.channels is not None),
        "same_origin": _flag(source.origin == target.origin, s_med and t_med),
        "same_channels": _flag(
            source.channels == target.channels, source.channels is not None and target.channels is not None
        ),
        "same_modality": _flag(
            source.modality.strip().lower() == target.modality.strip().lower(),
            bool(source.modality and target.modality),
        ),
    }
    net = dict(source.network or {})  # a checkpoint candidate: facts of the network itself
    f["log10_parameters"] = _log10(net.get("parameters"))
    f["random_init"] = _flag(net.get("weights") == "random", bool(net))
    se, te = dict(source.expert or {}), dict(target.expert or {})
    for k in dsim.EXPERT_FEATURES:
        a, b = se.get(k), te.get(k)
        f[f"expert_match:{k}"] = (
            0.5
            if a in (None, "") or b in (None, "")
            else float(str(a).strip().lower() == str(b).strip().lower())
        )
    return f


def measure_features(candidates, measures, kinds) -> dict[str, dict[str, float]]:
    """source -> {"sim:<m>": z-score within the candidates, oriented so higher = more similar}."""
    out = {c.source.name: {} for c in candidates}
    for m in measures:
        vals = {
            c.source.name: float(c.values[m])
            for c in candidates
            if m in c.values and c.values[m] is not None and np.isfinite(c.values[m])
        }
        sign = -1.0 if kinds.get(m, "distance") == "distance" else 1.0
        if vals:
            v = np.array(list(vals.values())) * sign
            mu, sd = float(v.mean()), float(v.std())
            for name, x in vals.items():
                out[name][f"sim:{m}"] = (sign * x - mu) / sd if sd > 0 else 0.0
        for name in out:
            out[name].setdefault(f"sim:{m}", float("nan"))
    return out


#: shrinkage of the track record towards "average source": a source measured on n other targets
#: gets sum(z) / (n + TRACK_SHRINK), so one lucky target does not make a source look reliable
TRACK_SHRINK = 1.0


def track_table(groups) -> dict[str, list[tuple[str, float]]]:
    """source -> [(target, z)]: the source's measured T z-scored among the sources of each
    training group (setup, target) it was measured in."""
    out = defaultdict(list)
    for g in groups:
        T = np.array([t for _, t, _ in g["members"]], float)
        sd = float(T.std())
        if len(T) < 2 or sd == 0:
            continue
        for (s, _t, _), z in zip(g["members"], (T - T.mean()) / sd):
            out[s].append((g["target"], float(z)))
    return dict(out)


def track_record(table, source: str, exclude=()) -> float:
    """How well ``source`` transferred to the targets of ``table`` other than ``exclude``: the
    shrunk mean of its within-target z-scores (NaN when it has no such history). A target's own
    results never enter its own track-record feature, in training or ranking."""
    zs = [z for t, z in table.get(source, ()) if t not in exclude]
    return float(sum(zs) / (len(zs) + TRACK_SHRINK)) if zs else float("nan")


def _groups(results, values, cards):
    """Training groups: one per (setup, target) with at least two measured sources, as lists of
    (source, T, candidate)."""
    vals = defaultdict(lambda: defaultdict(list))
    for v in values:
        if v.value is not None and np.isfinite(v.value):
            vals[(v.source, v.target)][v.measure].append(float(v.value))
    by_setup = defaultdict(list)
    for r in results:
        by_setup[r.setup].append(r)
    groups = []
    for setup, rs in sorted(by_setup.items()):
        for target in sorted({r.target for r in rs}):
            measured = dsim.measured_transferability(rs, target)
            if len(measured) < 2:
                continue
            tcard = cards.get(target) or dsim.DatasetCard(name=target)
            members = []
            for source in sorted(measured):
                card = cards.get(source) or dsim.DatasetCard(name=source)
                v = {m: float(np.mean(xs)) for m, xs in vals.get((source, target), {}).items()}
                members.append((source, measured[source][0], dsim.Candidate(source=card, values=v)))
            groups.append({"setup": setup, "target": target, "tcard": tcard, "members": members})
    return groups


# --------------------------------------------------------------------------- shared ranking
