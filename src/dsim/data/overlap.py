"""The target's own images are never a candidate source for it.

Before a ranking measures anything, every candidate source with images here is asked, through the
overlap checks plugins register (:class:`dsim.OverlapCheck`, ``dsim_register_overlap_checks``),
which share of the target's images it holds: the same images under another name, path,
resolution or encoding. A source holding at least :data:`EXCLUDE_SHARE` of them is left out with
"holds the target's images"; one holding at least :data:`FLAG_SHARE` stays, flagged in the notes
with its share. Registered names and paths alike: the check looks at pixels, not at names.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from dsim.data.loading import data_missing, load_dataset
from dsim.kernel.errors import DsimError
from dsim.kernel.interfaces import Context
from dsim.kernel.plugins import named
from dsim.kernel.records import DatasetCard

__all__ = ["exclude_overlaps", "overlap_shares", "EXCLUDE_SHARE", "FLAG_SHARE", "TARGET_SAMPLE"]

#: a source holding this share of the target's images is no candidate for it
EXCLUDE_SHARE = 0.5
#: a smaller overlap from this share on is named in the ranking's notes
FLAG_SHARE = 0.05
#: target images compared (a seeded, stratified sample) against every image of each source
TARGET_SAMPLE = 300


def overlap_shares(source, target, ctx: Context) -> dict[str, float]:
    """The share of ``target``'s images each overlap check finds in ``source``."""
    out = {}
    for name, check in named("dsim_register_overlap_checks", "overlap check").items():
        try:
            out[name] = float(check.share(source, target, ctx))
        except DsimError:
            raise
        except Exception as exc:  # a plugin that raises: name it
            raise DsimError(f"overlap check {name!r} raised {type(exc).__name__}: {exc}") from None
    return out


def exclude_overlaps(
    target: Any,
    cands: Sequence[DatasetCard],
    ckpt_of: dict,
    skipped: list[dict[str, str]],
    notes: list[str],
    ctx: Context,
    load: Callable[[DatasetCard], Any] = load_dataset,
) -> list[DatasetCard]:
    """``cands`` without the sources that hold ``target``'s images (a :class:`ResolvedTarget`);
    each left out is added to ``skipped`` with why, each partial overlap to ``notes``. ``load``
    reads all images of a source (the ranking passes its own, so each is read once)."""
    if not named("dsim_register_overlap_checks", "overlap check"):
        return list(cands)
    sample = target.load(TARGET_SAMPLE, seed=ctx.seed)
    keep = []
    for c in cands:
        if c.name in ckpt_of or not c.loader or data_missing(c) is not None:
            keep.append(c)
            continue
        try:
            shares = overlap_shares(load(c), sample, ctx)
        except DsimError as exc:  # unreadable: the measures say so when its turn comes
            notes.append(f"overlap with {c.name!r} not checked: {exc}")
            keep.append(c)
            continue
        share = max(shares.values(), default=0.0)
        found = round(share * len(sample))
        if share >= EXCLUDE_SHARE:
            skipped.append(
                {
                    "source": c.name,
                    "reason": f"holds the target's images ({share:.0%}: {found} of {len(sample)} "
                    "sampled target images have a near-duplicate in it)",
                }
            )
            continue
        if share >= FLAG_SHARE:
            notes.append(
                f"{c.name} holds {share:.0%} of the target's images ({found} of {len(sample)} sampled "
                "have a near-duplicate in it); kept as a candidate, but it has seen part of the target"
            )
        keep.append(c)
    return keep
