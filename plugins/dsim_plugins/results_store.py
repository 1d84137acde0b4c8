"""The results store as prior knowledge: ``dsim_known_results`` from ``dsim validate``'s store.

Design: the validate *driver* writes every finished fold to the store itself (one writer, also
when runs execute on Ray workers; written before the run-finished event fires, so a tracker
plugin that raises cannot lose a result). This plugin only reads: it hands the stored results to
``dsim rank``, which then marks the validated sources *measured* (and the predictor can learn
from them), and the results tables imported with ``dsim results import FILE.csv --setup NAME``
(origin ``imported:<file name>`` unless given). Rows copied from the plugins' published tables
(``dsim results --import-published``) are left to those plugins, so nothing is counted twice. A
store that does not exist yet yields nothing (and is not created).
"""

from __future__ import annotations

import dsim


@dsim.hookimpl
def dsim_known_results():
    path = dsim.default_store_path()
    if not path.exists():
        return []
    with dsim.ResultsStore(path) as store:
        return store.transfer_results(include_published=False)


@dsim.hookimpl
def dsim_known_state():
    """The store's files as they are now (the database and its write-ahead log): a result written
    since changes them, and the next ``dsim.rank`` reads the store again."""
    path = dsim.default_store_path()
    out = []
    for p in (path, path.with_name(path.name + "-wal")):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        out.append((str(p), st.st_mtime_ns, st.st_size))
    return out
