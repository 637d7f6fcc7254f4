"""Shared shapes and recipes for the planner's tests (dimensions from the public configs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgectl.build.recipe import Recipe
from edgectl.plan.shapes import catalog_shape


def recipe(**fields) -> Recipe:
    """A TensorRT-LLM recipe; ``weights``, ``kv_cache``, ``group_size`` set its precision."""
    precision = {k: fields.pop(k) for k in ("weights", "kv_cache", "group_size") if k in fields}
    return Recipe.model_validate(
        {
            "name": "t",
            "targets": ["trtllm"],
            "precision": precision,
            "calibration": {"mode": "static"},  # any format may then be data-aware
            **fields,
        }
    )


@pytest.fixture
def smollm2():
    return catalog_shape("smollm2-135m")


@pytest.fixture
def llama8b():
    return catalog_shape("llama-3.1-8b")


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty edgectl cache: no calibrated devices, no checkpoints."""
    monkeypatch.setenv("EDGECTL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
