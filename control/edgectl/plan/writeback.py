"""``--write-recipe``: a copy of the recipe with the TensorRT-LLM limits the plan chose.

The copy keeps every other key; relative paths (the checkpoint, a calibration file)
become absolute so the copy works from wherever it is written. It is loaded back with
the recipe schema and checked against the model before the command reports success.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from edgectl.build.recipe import (
    BUILTIN_CALIBRATION,
    EMBEDDED_SOURCE,
    Recipe,
    check_against_model,
    find_recipe,
    load_recipe,
)
from edgectl.config import load_yaml_mapping
from edgectl.errors import EdgectlError
from edgectl.plan.sizing import Plan

SERVING_KEYS = ("kv_cache_free_gpu_mem_fraction",)


def write_recipe(recipe_path: Path, recipe: Recipe, plan: Plan, out: Path) -> Recipe:
    if not plan.trtllm:
        raise EdgectlError(
            f"--write-recipe: device {plan.device} runs the CPU engine; pick a GPU device "
            "for TensorRT-LLM limits"
        )
    if not plan.fits:
        raise EdgectlError(f"--write-recipe: {plan.recipe} does not fit {plan.device}")
    data = load_yaml_mapping(find_recipe(recipe_path), "recipe")
    if recipe.source != EMBEDDED_SOURCE:
        data["source"] = recipe.source  # already resolved against the original recipe
    if recipe.calibration.dataset != BUILTIN_CALIBRATION:
        data.setdefault("calibration", {})["dataset"] = recipe.calibration.dataset
    trtllm = data.setdefault("trtllm", {})
    serving = trtllm.setdefault("serving", {})
    for key, value in plan.trtllm.items():
        (serving if key in SERVING_KEYS else trtllm)[key] = value
    header = (
        f"# {recipe.name} with the TensorRT-LLM limits `edgectl plan` chose for "
        f"{plan.device} at context {plan.workload.context}, concurrency "
        f"{plan.workload.concurrency}.\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    written = load_recipe(out)
    check_against_model(written, plan.shape.as_config())
    return written
