"""Quantize a HF Llama on CPU with NVIDIA Model Optimizer and write a TensorRT-LLM checkpoint.

This is the half of the GPU build that needs no GPU: ``modelopt`` calibrates and
quantizes the torch model here and ``export_tensorrt_llm_checkpoint`` writes the
``config.json`` + ``rank*.safetensors`` that ``trtllm-build`` compiles on a GPU node.
torch, transformers and modelopt are imported lazily (``edgectl --help`` stays instant).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from edgectl.build.recipe import DATA_AWARE, Recipe
from edgectl.errors import EdgectlError
from edgectl.progress import Progress

# modelopt preset per recipe weight format (INT4 presets get the recipe's group size).
MODELOPT_PRESETS = {
    "int8_wo": "INT8_WEIGHT_ONLY_CFG",
    "int8_sq": "INT8_SMOOTHQUANT_CFG",
    "int4_wo": "INT4_BLOCKWISE_WEIGHT_ONLY_CFG",
    "int4_awq": "INT4_AWQ_CFG",
    "int4_gptq": "INT4_BLOCKWISE_WEIGHT_ONLY_CFG",  # + the GPTQ algorithm below
}
_INT8_PER_CHANNEL = {"num_bits": 8, "axis": 0}
_KV_CACHE = {"int8": {"num_bits": 8, "axis": None}, "fp8": {"num_bits": (4, 3), "axis": None}}


def _weight_cfg(weights: str, group_size: int) -> dict[str, Any] | None:
    """The weight quantizer attributes of one format; ``None`` = keep full precision."""
    if weights in ("fp16", "fp32"):
        return None
    if weights.startswith("int8"):
        return dict(_INT8_PER_CHANNEL)
    return {"num_bits": 4, "block_sizes": {-1: group_size, "type": "static"}}


def _set_group_size(config: dict[str, Any], group_size: int) -> None:
    for entry in config["quant_cfg"]:
        attributes = entry.get("cfg") if isinstance(entry, dict) else None
        if isinstance(attributes, dict) and "block_sizes" in attributes:
            attributes["block_sizes"] = {**attributes["block_sizes"], -1: group_size}


def quantize_config(recipe: Recipe) -> dict[str, Any]:
    """The modelopt ``QuantizeConfig`` dict a recipe asks for (mixed precision included)."""
    import modelopt.torch.quantization as mtq

    precision = recipe.precision
    base = precision.weights
    if base in ("fp16", "fp32"):
        # Mixed precision over an fp16 base starts from "quantize nothing".
        config = copy.deepcopy(getattr(mtq, MODELOPT_PRESETS["int8_wo"]))
        config["quant_cfg"].append({"quantizer_name": "*weight_quantizer", "enable": False})
    else:
        config = copy.deepcopy(getattr(mtq, MODELOPT_PRESETS[base]))
        _set_group_size(config, precision.group_size)
    if base == "int4_gptq":
        config["algorithm"] = {"method": "gptq", "block_size": precision.group_size}
    entries = config["quant_cfg"]
    mixed = recipe.mixed_precision
    if mixed is not None:
        for item in mixed.layers:
            attributes = _weight_cfg(item.weights, precision.group_size)
            for layer in range(item.range[0], item.range[1] + 1):
                pattern = f"*layers.{layer}.*weight_quantizer"
                if attributes is None:
                    entries.append({"quantizer_name": pattern, "enable": False})
                else:
                    entries.append({"quantizer_name": pattern, "cfg": attributes, "enable": True})
        if mixed.lm_head == "int8_wo":
            entries.append(
                {"quantizer_name": "*lm_head*weight_quantizer", "cfg": _INT8_PER_CHANNEL}
            )
    if precision.kv_cache in _KV_CACHE:
        entries.append(
            {
                "quantizer_name": "*[kv]_bmm_quantizer",
                "cfg": _KV_CACHE[precision.kv_cache],
                "enable": True,
            }
        )
    return config


def calibration_batches(recipe: Recipe, checkpoint: Path) -> list[Any]:
    """Token batches for calibration: the recipe's text set, fixed seed, fixed length."""
    from transformers import AutoTokenizer

    from edgectl.build.calibration import calibration_texts

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    calibration = recipe.calibration
    batches = []
    for text in calibration_texts(calibration):
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=calibration.seq_len)
        batches.append(ids["input_ids"])
    if not batches:
        raise EdgectlError(f"calibration.dataset {calibration.dataset} gave no samples")
    return batches


def needs_calibration(recipe: Recipe) -> bool:
    formats = {recipe.precision.weights}
    if recipe.mixed_precision:
        formats |= {item.weights for item in recipe.mixed_precision.layers}
    return bool(formats & set(DATA_AWARE)) or recipe.calibration.mode == "static"


def write_checkpoint(
    recipe: Recipe, checkpoint: Path, out: Path, progress: Progress
) -> dict[str, Any]:
    """Quantize ``checkpoint`` per the recipe and export the TensorRT-LLM checkpoint to ``out``.

    Returns the checkpoint's ``quantization`` section (what TensorRT-LLM will read).
    """
    try:
        import modelopt.torch.quantization as mtq
        import torch
        from modelopt.torch.export import export_tensorrt_llm_checkpoint
        from transformers import AutoModelForCausalLM
    except ImportError as err:
        raise EdgectlError(
            f"the trtllm target needs the build extra ({err.name} is missing): "
            "pip install -e '.[build]'"
        ) from None

    progress("loading the source checkpoint for quantization (torch, fp32)")
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    batches = calibration_batches(recipe, checkpoint) if needs_calibration(recipe) else []
    if not batches:
        # Weight-only scales do not depend on activations; one short pass sets them.
        batches = [torch.tensor([[1, 2, 3, 4]])]

    def forward_loop(quantized: Any) -> None:
        with torch.no_grad():
            for index, batch in enumerate(batches, 1):
                quantized(batch)
                if index % 16 == 0 or index == len(batches):
                    progress(f"calibration {index}/{len(batches)}")

    dtype = torch.float16
    if recipe.precision.weights == "fp16" and recipe.mixed_precision is None:
        progress("no quantization: exporting fp16 weights")
    else:
        progress(f"quantizing with modelopt ({recipe.precision.weights})")
        model = mtq.quantize(model, quantize_config(recipe), forward_loop)
    progress("exporting the TensorRT-LLM checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        export_tensorrt_llm_checkpoint(
            model,
            "llama",
            dtype,
            out,
            inference_tensor_parallel=recipe.trtllm.tp_size,
            inference_pipeline_parallel=recipe.trtllm.pp_size,
        )
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    return config.get("quantization") or {}
