from __future__ import annotations

from pathlib import Path

import pytest

from edgectl.errors import EdgectlError
from edgectl.recipe import EMBEDDED_SOURCE, load_recipe

BUILD_DIR = Path(__file__).resolve().parents[2] / "build"


def write_recipe(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def recipe_error(path: Path) -> str:
    with pytest.raises(EdgectlError) as err:
        load_recipe(path)
    return str(err.value)


@pytest.mark.parametrize(("name", "weight_format"), [("int8", "int8"), ("int4", "int4")])
def test_shipped_recipes_load(name, weight_format):
    recipe = load_recipe(BUILD_DIR / f"smollm2-135m-{name}.yaml")
    assert recipe.name == f"smollm2-135m-{name}"
    assert recipe.cpu.weight_format == weight_format
    assert recipe.source == EMBEDDED_SOURCE
    assert recipe.targets == ["cpu"]
    assert recipe.eos_token == "<|im_end|>"


def test_minimal_recipe_gets_defaults(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, "name: tiny\n"))
    assert (recipe.source, recipe.cpu.weight_format, recipe.cpu.group_size) == (
        EMBEDDED_SOURCE,
        "int8",
        64,
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("name: tiny\nsoruce: x\n", "soruce: unknown key"),
        ("name: tiny\ncpu:\n  weight_fmt: int8\n", "cpu.weight_fmt: unknown key"),
        ("name: tiny\ncpu:\n  weight_format: int3\n", "cpu.weight_format: "),
        ("name: tiny\ncpu:\n  ratio: 0\n", "cpu.ratio: "),
        ("name: tiny\ntargets: [gpu]\n", "targets.0: "),
        ("name: 'bad name!'\n", "name: "),
        ("description: no name\n", "name: "),
    ],
)
def test_invalid_recipe_names_the_field(tmp_path, text, key):
    path = write_recipe(tmp_path, text)
    message = recipe_error(path)
    assert f"  {key}" in message
    assert str(path) in message


def test_recipe_that_is_not_a_mapping_is_rejected(tmp_path):
    assert "must hold a mapping" in recipe_error(write_recipe(tmp_path, "[1, 2]\n"))


def test_missing_recipe_is_reported(tmp_path):
    assert "does not exist" in recipe_error(tmp_path / "nope.yaml")


def test_relative_source_is_resolved_against_the_recipe_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path / "recipes", "name: local\nsource: ../checkpoints/llama\n")
    recipe = load_recipe(Path("recipes/recipe.yaml"))
    assert path.exists()
    assert recipe.source == str((tmp_path / "checkpoints" / "llama").resolve())


def test_absolute_source_is_kept(tmp_path):
    source = tmp_path / "ckpt"
    recipe = load_recipe(write_recipe(tmp_path / "r", f"name: local\nsource: {source}\n"))
    assert recipe.source == str(source)
