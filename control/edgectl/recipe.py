"""Build recipes (``build/*.yaml``): which checkpoint, which precision, which target."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgectl.config import NAME_PATTERN, format_validation_error, load_yaml_mapping
from edgectl.errors import EdgectlError

EMBEDDED_SOURCE = "embedded:smollm2-135m-instruct"


class CpuTarget(BaseModel):
    """OpenVINO weight compression for the CPU engine step."""

    model_config = ConfigDict(extra="forbid")
    weight_format: Literal["fp32", "fp16", "int8", "int4"] = "int8"
    group_size: int = Field(64, ge=-1)
    ratio: float = Field(1.0, gt=0, le=1)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    source: str = EMBEDDED_SOURCE  # or a HF Llama checkpoint directory (relative to the recipe)
    eos_token: str | None = None
    targets: list[Literal["cpu"]] = ["cpu"]
    cpu: CpuTarget = CpuTarget()


def load_recipe(path: Path) -> Recipe:
    """Load and validate a recipe; errors name the field."""
    data = load_yaml_mapping(path, "recipe")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise EdgectlError(format_validation_error(err, f"recipe {path}")) from None
    if recipe.source != EMBEDDED_SOURCE:
        source = Path(recipe.source)
        if not source.is_absolute():
            source = (Path(path).parent / source).resolve()
        recipe.source = str(source)
    return recipe
