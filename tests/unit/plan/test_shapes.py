"""Model shapes: the checkpoint's config.json first, else the shipped catalog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgectl.build.recipe import load_recipe
from edgectl.errors import EdgectlError
from edgectl.plan.shapes import catalog_shape, recipe_shape
from tests.model_shapes import SMOLLM2_CONFIG
from tests.paths import REPO_ROOT

from .conftest import recipe

SHIPPED = sorted((REPO_ROOT / "build").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_recipe_has_a_shape_without_its_checkpoint(path: Path, isolated_cache):
    shape = recipe_shape(load_recipe(path))
    assert shape.origin.startswith("shape catalog entry")
    assert path.stem.startswith(shape.name)


def test_the_catalog_agrees_with_the_embedded_model_config(smollm2) -> None:
    for key, value in SMOLLM2_CONFIG.items():
        assert getattr(smollm2, key) == value


def test_a_checkpoint_config_wins_over_the_catalog(tmp_path: Path) -> None:
    config = {**SMOLLM2_CONFIG, "vocab_size": 1000, "max_position_embeddings": 2048}
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = recipe_shape(recipe(name="smollm2-135m-x", source=str(tmp_path)))
    assert shape.vocab_size == 1000 and shape.head_dim == 64
    assert shape.origin == str(tmp_path / "config.json")


def test_model_option_picks_an_entry_or_lists_them() -> None:
    assert catalog_shape("Llama-3.1-8B-Instruct").name == "llama-3.1-8b"
    assert catalog_shape("llama-2-70b").num_key_value_heads == 8
    with pytest.raises(EdgectlError, match="--model gpt-5: not in the shape catalog; known: "):
        catalog_shape("gpt-5")


def test_a_recipe_without_config_or_match_says_what_to_do(tmp_path: Path, isolated_cache):
    made = recipe(name="my-model-int8", source=str(tmp_path / "nowhere"))
    with pytest.raises(
        EdgectlError, match=r"no checkpoint config at .*nowhere/config.json.*--model"
    ):
        recipe_shape(made)


def test_llama_2_7b_is_not_mistaken_for_70b() -> None:
    assert recipe_shape(recipe(name="llama-2-70b-int4", source="/x")).name == "llama-2-70b"
    assert recipe_shape(recipe(name="llama-2-7b-chat-int4", source="/x")).name == "llama-2-7b"
