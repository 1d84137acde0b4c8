"""Shared test set-up: the small real datasets of ../shared/data are read in place, and every test
session gets its own empty representation cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()

if not os.environ.get("DSIM_DATA_DIR") and SHARED_DATA.is_dir():
    os.environ["DSIM_DATA_DIR"] = str(SHARED_DATA)
os.environ.setdefault("DSIM_QUIET_PLUGIN_ERRORS", "")


def data_file(name: str) -> Path:
    for d in os.environ.get("DSIM_DATA_DIR", "").split(os.pathsep):
        if d and (Path(d) / name).exists():
            return Path(d) / name
    pytest.skip(f"{name} not found in DSIM_DATA_DIR (point it at ../shared/data)")


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory):
    os.environ["DSIM_CACHE_DIR"] = str(tmp_path_factory.mktemp("dsim-cache"))
    # no fitted predictor from the user's data dir may change what tests rank
    os.environ["DSIM_PREDICTOR_DIR"] = str(tmp_path_factory.mktemp("dsim-predictors"))
    yield


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir() and not os.environ.get("DSIM_DATA_DIR"):
        pytest.skip("../shared/data is not beside the repo")
    return Path(os.environ["DSIM_DATA_DIR"].split(os.pathsep)[0])


@pytest.fixture
def fresh_plugins():
    """Reload plugins before and after a test that registers its own."""
    import dsim.kernel.plugins

    dsim.kernel.plugins.reset()
    yield dsim.kernel.plugins
    dsim.kernel.plugins.reset()
