"""Build recipes (``build/*.yaml``): which checkpoint, which precision, which targets.

Everything TensorRT-LLM would reject at engine-build time on a GPU node is rejected
here instead, with the field named: a recipe that validates is one whose build plan
can run.  Checks that need the model's own dimensions (group size vs layer widths,
tensor parallelism vs heads, layer ranges) live in :func:`check_against_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edgectl.build.trtllm import TRTLLM_IMAGE
from edgectl.config import NAME_PATTERN, StrictModel, load_validated_yaml
from edgectl.errors import EdgectlError
from edgectl.resources import recipes_dir

EMBEDDED_SOURCE = "embedded:smollm2-135m-instruct"
BUILTIN_CALIBRATION = "builtin:calibration"

WeightFormat = Literal["fp32", "fp16", "int8_wo", "int8_sq", "int4_wo", "int4_awq", "int4_gptq"]
INT4_FORMATS = ("int4_wo", "int4_awq", "int4_gptq")
# Methods whose result depends on activations: they need calibration text.
DATA_AWARE = ("int8_sq", "int4_awq", "int4_gptq")
# Group sizes TensorRT-LLM's grouped INT4 GEMM kernels implement.
TRTLLM_INT4_GROUPS = (64, 128)


class Precision(StrictModel):
    """Weight format, INT4 grouping and the KV cache's dtype."""

    weights: WeightFormat = "int8_wo"
    group_size: int = Field(128, ge=8, le=1024)  # INT4 only: weights per scale
    act_order: bool = False  # GPTQ only: quantize columns by decreasing activation
    kv_cache: Literal["fp16", "int8", "fp8"] = "fp16"


class Calibration(StrictModel):
    """Static calibration on N samples of a text set, or none (weight-only / dynamic)."""

    mode: Literal["static", "none"] = "none"
    dataset: str = BUILTIN_CALIBRATION  # or a .txt path, relative to the recipe
    samples: int = Field(64, ge=1, le=4096)
    seq_len: int = Field(256, ge=16, le=8192)
    seed: int = 1234


class LayerRange(StrictModel):
    """Decoder layers ``range[0]..range[1]`` (inclusive, 0-based) in one weight format."""

    range: tuple[int, int]
    weights: WeightFormat

    @model_validator(mode="after")
    def _ordered(self) -> LayerRange:
        first, last = self.range
        if first < 0 or last < first:
            raise ValueError(f"range {list(self.range)}: need 0 <= first <= last")
        return self


class MixedPrecision(StrictModel):
    """Per-layer-range overrides of ``precision.weights``; the output head's precision."""

    layers: list[LayerRange] = Field(min_length=1)
    lm_head: Literal["fp32", "fp16", "int8_wo"] = "fp16"

    @model_validator(mode="after")
    def _disjoint(self) -> MixedPrecision:
        spans = sorted(item.range for item in self.layers)
        for (_, last), (first, _) in zip(spans, spans[1:], strict=False):
            if first <= last:
                raise ValueError(f"layer ranges overlap at layer {first}")
        return self


class CpuOptions(StrictModel):
    """OpenVINO/NNCF-only knobs for the CPU engine artifact."""

    ratio: float = Field(1.0, gt=0, le=1)  # share of INT4 layers; the rest stay INT8
    scale_estimation: bool = True  # NNCF data-aware scale search for INT4
    sym: bool = False


class TrtllmServing(StrictModel):
    """Parameters rendered into the ``tensorrt_llm`` model's config.pbtxt."""

    batch_scheduler_policy: Literal["max_utilization", "guaranteed_no_evict"] = (
        "guaranteed_no_evict"
    )
    kv_cache_free_gpu_mem_fraction: float = Field(0.9, gt=0, le=1)
    enable_kv_cache_reuse: bool = False
    max_queue_delay_microseconds: int = Field(0, ge=0, le=10_000_000)
    instance_count: int = Field(1, ge=1, le=16)


class TrtllmTarget(StrictModel):
    """``trtllm-build`` limits and the serving parameters that must agree with them."""

    image: str = TRTLLM_IMAGE
    max_batch_size: int = Field(8, ge=1, le=2048)
    max_input_len: int = Field(1024, ge=1)
    max_seq_len: int = Field(2048, ge=2)
    max_num_tokens: int = Field(8192, ge=1)
    max_beam_width: int = Field(1, ge=1, le=8)  # requests may ask beam_width up to this
    paged_kv_cache: bool = True
    use_paged_context_fmha: bool = True
    tp_size: int = Field(1, ge=1, le=64)
    pp_size: int = Field(1, ge=1, le=64)
    speculative_decoding_mode: Literal["draft_tokens_external", "lookahead_decoding"] | None = None
    max_draft_len: int = Field(0, ge=0, le=64)
    serving: TrtllmServing = TrtllmServing()
    # engine: trtllm-build + NVIDIA's tensorrtllm backend behind our ensemble.
    # llmapi: NVIDIA's LLM-API model (text in, text out; model.yaml, no engine build).
    runtime: Literal["engine", "llmapi"] = "engine"

    @model_validator(mode="after")
    def _consistent(self) -> TrtllmTarget:
        if self.max_input_len >= self.max_seq_len:
            raise ValueError(
                f"max_input_len ({self.max_input_len}) must be below max_seq_len "
                f"({self.max_seq_len}): no room left to generate"
            )
        if self.use_paged_context_fmha and not self.paged_kv_cache:
            raise ValueError("use_paged_context_fmha needs paged_kv_cache: true")
        if self.serving.enable_kv_cache_reuse and not self.use_paged_context_fmha:
            raise ValueError(
                "serving.enable_kv_cache_reuse needs use_paged_context_fmha: true "
                "(TensorRT-LLM reuses KV blocks only with paged context FMHA)"
            )
        if self.speculative_decoding_mode == "draft_tokens_external" and self.max_draft_len < 1:
            raise ValueError("speculative_decoding_mode draft_tokens_external needs max_draft_len")
        if self.speculative_decoding_mode is None and self.max_draft_len:
            raise ValueError("max_draft_len is set but speculative_decoding_mode is not")
        return self


class Recipe(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    source: str = EMBEDDED_SOURCE  # or a HF Llama checkpoint directory (relative to the recipe)
    eos_token: str | None = None
    targets: list[Literal["cpu", "trtllm"]] = Field(["cpu"], min_length=1)
    precision: Precision = Precision()
    calibration: Calibration = Calibration()
    mixed_precision: MixedPrecision | None = None
    cpu: CpuOptions = CpuOptions()
    trtllm: TrtllmTarget = TrtllmTarget()

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets {self.targets} lists a target twice")
        weights = self.precision.weights
        formats = {weights} | {r.weights for r in (self.mixed_precision or _NO_MIX).layers}
        needs_data = sorted(formats & set(DATA_AWARE))
        if needs_data and self.calibration.mode != "static":
            raise ValueError(
                f"calibration.mode must be static for {', '.join(needs_data)} "
                "(they choose scales from activations)"
            )
        if self.precision.kv_cache == "int8" and self.calibration.mode != "static":
            raise ValueError("precision.kv_cache int8 needs calibration.mode static (KV scales)")
        if self.precision.act_order and weights != "int4_gptq":
            raise ValueError("precision.act_order applies to int4_gptq only")
        if "trtllm" in self.targets:
            self._check_trtllm(formats)
        return self

    def _check_trtllm(self, formats: set[str]) -> None:
        if self.trtllm.runtime == "llmapi" and formats - {"fp16", "fp32"}:
            raise ValueError(
                "trtllm.runtime llmapi serves the float checkpoint (the LLM API loads it "
                f"itself): precision.weights must be fp16 or fp32, got {sorted(formats)}"
            )
        group = self.precision.group_size
        if formats & set(INT4_FORMATS) and group not in TRTLLM_INT4_GROUPS:
            raise ValueError(
                f"precision.group_size {group}: TensorRT-LLM's INT4 kernels take "
                f"{' or '.join(map(str, TRTLLM_INT4_GROUPS))}"
            )
        if self.precision.act_order:
            # TensorRT-LLM's grouped INT4 GEMM has no g_idx (column permutation) input:
            # act-order checkpoints with groups decode to garbage (TensorRT-LLM issue #503).
            raise ValueError(
                "precision.act_order: TensorRT-LLM does not support act-order GPTQ with "
                "grouped INT4 weights; set act_order: false for the trtllm target"
            )
        if self.precision.kv_cache == "fp8" and formats & {"int8_sq", "int8_wo"}:
            raise ValueError("precision.kv_cache fp8 with INT8 weights: use kv_cache int8 or fp16")
        if self.mixed_precision and formats & {"int8_sq"} and len(formats) > 1:
            raise ValueError(
                "mixed_precision with int8_sq: TensorRT-LLM's mixed-precision checkpoints mix "
                "weight-only formats; SmoothQuant layers cannot be mixed in"
            )
        if "fp32" in formats:
            raise ValueError("precision.weights fp32: TensorRT-LLM engines build fp16/bf16 here")


_NO_MIX = MixedPrecision.model_construct(layers=[], lm_head="fp16")


def check_against_model(recipe: Recipe, model_config: dict) -> None:
    """Checks that need the checkpoint's dimensions (``config.json`` of a HF Llama)."""
    hidden = int(model_config["hidden_size"])
    intermediate = int(model_config["intermediate_size"])
    layers = int(model_config["num_hidden_layers"])
    heads = int(model_config["num_attention_heads"])
    kv_heads = int(model_config.get("num_key_value_heads") or heads)
    problems: list[str] = []
    precision = recipe.precision
    formats = {precision.weights} | {r.weights for r in (recipe.mixed_precision or _NO_MIX).layers}
    if formats & set(INT4_FORMATS):
        tp = recipe.trtllm.tp_size if "trtllm" in recipe.targets else 1
        for label, width in (
            ("hidden_size", hidden),
            ("intermediate_size / tp_size", intermediate // tp),
        ):
            if width % precision.group_size:
                problems.append(
                    f"precision.group_size {precision.group_size} does not divide {label} "
                    f"{width}; pick a group that divides it (e.g. "
                    f"{_largest_dividing_group(hidden, intermediate // tp)})"
                )
    if "trtllm" in recipe.targets:
        tp, pp = recipe.trtllm.tp_size, recipe.trtllm.pp_size
        if heads % tp or kv_heads % tp and tp % kv_heads:
            problems.append(
                f"trtllm.tp_size {tp} must divide num_attention_heads {heads} and "
                f"num_key_value_heads {kv_heads} (or be a multiple of the latter)"
            )
        if layers % pp:
            problems.append(f"trtllm.pp_size {pp} must divide num_hidden_layers {layers}")
    for item in (recipe.mixed_precision or _NO_MIX).layers:
        if item.range[1] >= layers:
            problems.append(
                f"mixed_precision.layers range {list(item.range)}: the model has layers "
                f"0..{layers - 1}"
            )
    if problems:
        raise EdgectlError(
            f"recipe {recipe.name} does not fit the model:\n  " + "\n  ".join(problems)
        )


def _largest_dividing_group(*widths: int) -> int:
    for group in (128, 64, 32, 16, 8):
        if all(width % group == 0 for width in widths):
            return group
    return 8


def find_recipe(path: Path) -> Path:
    """``path`` as given, else the recipe shipped with edgectl under that relative path
    (``build/smollm2-135m-int8.yaml`` works from any directory)."""
    path = Path(path)
    if path.is_file() or path.is_absolute():
        return path
    shipped = recipes_dir().parent / path
    return shipped if shipped.is_file() else path


def load_recipe(path: Path) -> Recipe:
    """Load and validate a recipe; errors name the field."""
    path = find_recipe(path)
    recipe = load_validated_yaml(path, Recipe, "recipe")
    base = Path(path).parent
    if recipe.source != EMBEDDED_SOURCE:
        recipe.source = str(_resolve(base, recipe.source))
    if recipe.calibration.dataset != BUILTIN_CALIBRATION:
        dataset = _resolve(base, recipe.calibration.dataset)
        if not dataset.is_file():
            raise EdgectlError(f"recipe {path}: calibration.dataset {dataset} is not a file")
        recipe.calibration.dataset = str(dataset)
    return recipe


def _resolve(base: Path, value: str) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate).resolve()
