"""A model's shape: from its checkpoint's config.json, else from the shipped shape catalog.

The planner needs only dimensions, never weights, so a recipe whose checkpoint is not on
this machine (the shipped Llama recipes) still plans: its shape comes from
``plan/data/models.yaml``, chosen by ``--model NAME`` or matched from the recipe.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from edgectl.build.recipe import EMBEDDED_SOURCE, Recipe
from edgectl.config import cache_dir
from edgectl.errors import EdgectlError

_REQUIRED = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "vocab_size",
)


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a Llama-style decoder (what the memory and speed formulas use)."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    origin: str  # where the shape came from, printed with the plan

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any], origin: str) -> ModelShape:
        missing = [key for key in _REQUIRED if key not in config]
        if missing:
            raise EdgectlError(f"{origin}: model config lacks {', '.join(missing)}")
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return cls(
            name=name,
            hidden_size=hidden,
            intermediate_size=int(config["intermediate_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            vocab_size=int(config["vocab_size"]),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            max_position_embeddings=int(config.get("max_position_embeddings", 4096)),
            origin=origin,
        )

    def as_config(self) -> dict[str, Any]:
        """The config.json keys ``recipe.check_against_model`` reads."""
        return {k: v for k, v in asdict(self).items() if k not in ("name", "origin")}


def catalog_shapes() -> dict[str, dict[str, Any]]:
    text = resources.files("edgectl.plan").joinpath("data/models.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def catalog_shape(name: str) -> ModelShape:
    shapes = catalog_shapes()
    key = _match(name.lower(), shapes)
    if key is None:
        raise EdgectlError(
            f"--model {name}: not in the shape catalog; known: {', '.join(sorted(shapes))}"
        )
    fields = {k: v for k, v in shapes[key].items() if k != "names"}
    return ModelShape.from_config(key, fields, f"shape catalog entry {key}")


def _match(label: str, shapes: dict[str, dict[str, Any]]) -> str | None:
    """The catalog entry whose name (or alias) is ``label`` or its leading part."""
    best: tuple[int, str] | None = None
    for key, entry in shapes.items():
        for alias in (key, *entry.get("names", [])):
            if label == alias or label.startswith(alias + "-"):
                if best is None or len(alias) > best[0]:
                    best = (len(alias), key)
    return best[1] if best else None


def checkpoint_config(recipe: Recipe) -> Path:
    """Where the recipe's checkpoint config.json is (it may not exist on this machine)."""
    if recipe.source == EMBEDDED_SOURCE:
        return cache_dir() / "checkpoints" / "smollm2-135m-instruct" / "config.json"
    return Path(recipe.source) / "config.json"


def recipe_shape(recipe: Recipe, model: str | None = None) -> ModelShape:
    """``--model`` when given, else the checkpoint's config.json, else a catalog match."""
    if model:
        return catalog_shape(model)
    config = checkpoint_config(recipe)
    source_name = Path(recipe.source.split(":", 1)[-1]).name  # "embedded:NAME" or a folder
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        return ModelShape.from_config(source_name, data, str(config))
    shapes = catalog_shapes()
    labels = [recipe.name.lower(), source_name.lower()]
    for label in labels:
        key = _match(label, shapes)
        if key:
            return catalog_shape(key)
    raise EdgectlError(
        f"recipe {recipe.name}: no checkpoint config at {config} and neither the recipe name "
        f"nor its source matches the shape catalog ({', '.join(sorted(shapes))}); "
        "pass --model NAME"
    )
