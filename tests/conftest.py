"""Fixtures every test folder may use: the embedded model, built once and cached.

The build lands in the edgectl cache (``EDGECTL_CACHE`` or ``~/.cache/edgectl``) and is
reused by later runs and by ``make demo``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.paths import REPO_ROOT

RECIPE = REPO_ROOT / "build" / "smollm2-135m-int8.yaml"


@pytest.fixture(scope="session")
def built_artifact() -> Path:
    from edgectl.build.builder import build
    from edgectl.build.recipe import load_recipe

    return build(load_recipe(RECIPE)).artifact
