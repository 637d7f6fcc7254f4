"""The time-slicing policy file (``edgectl timeslice apply POLICY``): schema and loading.

A policy names two or more served models, each one's share of the device (a relative
weight), its slot length, its priority and optionally a memory estimate, plus one
device memory budget.  ``mode: auto`` keeps every model loaded (co-resident) when the
estimates fit the budget and swaps them otherwise.  Paths are relative to the policy
file.  Errors name the field (``models.1.share``), like the config and recipes do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edgectl.config import (
    NAME_PATTERN,
    EdgectlConfig,
    ModelConfig,
    StrictModel,
    load_validated_yaml,
)
from edgectl.deploy.repository import ServedModel
from edgectl.errors import EdgectlError
from edgectl.runtime.openvino_engine import kv_cache_whole_gb

GB = 1e9
# What an engine stub holds besides its weights and KV cache (OpenVINO runtime, tokenizer,
# Python): measured ~0.35 GB RSS per SmolLM2 stub here (benchmarks/timeslice_coresident.py
# prints the measured figure); rounded up, since the budget must not be overrun.
ENGINE_OVERHEAD_GB = 0.5


class SwapSettings(StrictModel):
    """Swap mode only (models that do not fit together take turns being loaded)."""

    wait_timeout_s: float = Field(30.0, gt=0, le=3600)
    min_resident_s: float = Field(2.0, ge=0, le=3600)


class ModelShare(StrictModel):
    """One served model and its part of the device."""

    name: str = Field(pattern=NAME_PATTERN)  # the served ensemble's name
    recipe: Path | None = None  # build/*.yaml, relative to the policy file
    artifact: Path | None = None  # or a built artifact directory
    engine: Literal["cpu", "trtllm"] = "cpu"
    share: float = Field(gt=0, le=1_000_000)  # relative weight, normalised over busy models
    slot_ms: int | None = Field(None, ge=10, le=60_000)  # default: default_slot_ms
    priority: int = Field(1, ge=1, le=100)  # 1 = highest
    memory_gb: float | None = Field(None, gt=0)  # default: estimated from the artifact

    @model_validator(mode="after")
    def _one_source(self) -> ModelShare:
        if (self.recipe is None) == (self.artifact is None):
            raise ValueError("set exactly one of recipe or artifact")
        return self


class TimeslicePolicy(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    mode: Literal["auto", "coresident", "swap"] = "auto"
    memory_budget_gb: float = Field(gt=0)
    default_slot_ms: int = Field(100, ge=10, le=60_000)
    swap: SwapSettings = SwapSettings()
    models: list[ModelShare] = Field(min_length=2, max_length=16)

    @model_validator(mode="after")
    def _unique_names(self) -> TimeslicePolicy:
        seen: set[str] = set()
        for model in self.models:
            if model.name in seen:
                raise ValueError(f"model {model.name!r} is listed twice")
            seen.add(model.name)
        return self

    def slot_ms(self, model: ModelShare) -> int:
        return model.slot_ms if model.slot_ms is not None else self.default_slot_ms

    def configured_shares(self) -> dict[str, float]:
        """Each model's fraction of the device when every model has work."""
        total = sum(model.share for model in self.models)
        return {model.name: model.share / total for model in self.models}

    def model(self, name: str) -> ModelShare:
        for model in self.models:
            if model.name == name:
                return model
        raise EdgectlError(f"policy {self.name} has no model {name!r}")


def load_policy(path: Path) -> TimeslicePolicy:
    """Load and validate a policy; ``recipe``/``artifact`` paths become absolute."""
    policy = load_validated_yaml(path, TimeslicePolicy, "timeslice policy")
    base = Path(path).resolve().parent
    for model in policy.models:
        for field in ("recipe", "artifact"):
            value = getattr(model, field)
            if value is not None and not value.expanduser().is_absolute():
                setattr(model, field, (base / value.expanduser()).resolve())
    return policy


@dataclass(frozen=True)
class PlannedModel:
    """A policy model resolved to what gets served, with its memory estimate."""

    share: ModelShare
    served: ServedModel
    memory_gb: float
    memory_source: str  # "policy" or "estimate"


def plan_models(policy: TimeslicePolicy, config: EdgectlConfig) -> list[PlannedModel]:
    """Resolve each model's artifact (it must be built) and its memory estimate."""
    from edgectl.deploy.artifacts import served_model

    planned = []
    for model in policy.models:
        fields = {"name": model.name, "engine": model.engine, "artifact": model.artifact}
        if model.recipe is not None:
            fields["recipe"] = model.recipe
        one = config.model_copy(update={"model": ModelConfig(**fields)})
        try:
            served = served_model(one)
        except EdgectlError as err:
            raise EdgectlError(f"policy {policy.name}, model {model.name}: {err}") from None
        if model.memory_gb is not None:
            planned.append(PlannedModel(model, served, model.memory_gb, "policy"))
        else:
            estimate = estimate_memory_gb(served.engine_dir, config.engine.kv_cache_gb)
            planned.append(PlannedModel(model, served, estimate, "estimate"))
    return planned


def estimate_memory_gb(artifact: Path, kv_cache_gb: float) -> float:
    """Weights on disk + the KV cache the engine reserves + the stub's fixed overhead.

    The CPU engine rounds its KV cache to whole GB (``kv_cache_whole_gb``).
    """
    weights = sum(p.stat().st_size for p in Path(artifact).glob("*.bin"))
    kv = kv_cache_whole_gb(kv_cache_gb)
    return round(weights / GB + kv + ENGINE_OVERHEAD_GB, 3)


def resolved_mode(policy: TimeslicePolicy, planned: list[PlannedModel]) -> str:
    """``coresident`` or ``swap``; a co-resident policy that overruns its budget is refused."""
    largest = max(planned, key=lambda item: item.memory_gb)
    if largest.memory_gb > policy.memory_budget_gb:
        raise EdgectlError(
            f"policy {policy.name}: model {largest.share.name} alone needs "
            f"{largest.memory_gb:g} GB ({largest.memory_source}) but memory_budget_gb is "
            f"{policy.memory_budget_gb:g}; no mode can serve it"
        )
    need = sum(item.memory_gb for item in planned)
    fits = need <= policy.memory_budget_gb
    if policy.mode == "auto":
        return "coresident" if fits else "swap"
    if policy.mode == "coresident" and not fits:
        detail = ", ".join(
            f"{p.share.name} {p.memory_gb:g} GB ({p.memory_source})" for p in planned
        )
        raise EdgectlError(
            f"policy {policy.name}: the models need {need:.2f} GB together ({detail}) but "
            f"memory_budget_gb is {policy.memory_budget_gb:g}; raise the budget, set "
            "memory_gb per model, or use mode swap (or auto)"
        )
    return policy.mode
