"""The CPU engine's model: a recipe's precision -> an OpenVINO IR quantized by NNCF.

optimum-intel exports the float IR once per checkpoint (with the OpenVINO tokenizers and
the HF tokenizer files the serving code needs; cached, the export is the slow part), then
NNCF compresses it in one or more passes. Each pass covers a set of weight-bearing nodes,
which is how a recipe's per-layer-range mixed precision is expressed: NNCF itself only
knows one main precision per call (plus a ratio of backup-precision layers).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgectl.build.calibration import calibration_texts, tokenizer_spans
from edgectl.build.recipe import DATA_AWARE, GGUF_NATIVE, Recipe
from edgectl.config import cache_dir
from edgectl.progress import Progress
from edgectl.runtime.manifest import tool_versions
from edgectl.staging import staged_directory

MODEL_XML = "openvino_model.xml"
MODEL_BIN = "openvino_model.bin"
HEAD = "head"  # the tied embeddings / output head (one weight in the IR)
# OpenVINO CPU KV-cache element types for the recipe's precision.kv_cache.
KV_CACHE_PRECISION = {"fp16": "f16", "int8": "u8", "fp8": "u8"}
SMOOTH_QUANT_ALPHA = 0.95  # NNCF's default for transformer MatMuls
FLOAT_EXPORT_TOOLS = ("optimum-intel", "optimum", "transformers", "openvino", "openvino-tokenizers")
_LAYER = re.compile(r"\.layers\.(\d+)\.")


@dataclass
class CompressionPass:
    """One NNCF call: ``weights`` applied to the nodes of ``layers`` (and the head)."""

    weights: str
    layers: list[int]
    head: bool
    nodes: list[str] = field(default_factory=list)


def _checkpoint_key(checkpoint: Path) -> str:
    """Identifies a checkpoint + exporter versions without hashing gigabytes of weights."""
    digest = hashlib.sha256(json.dumps(tool_versions(FLOAT_EXPORT_TOOLS), sort_keys=True).encode())
    for path in sorted(checkpoint.iterdir()):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def float_export(checkpoint: Path, progress: Progress) -> Path:
    """The checkpoint as a float32 stateful IR + tokenizers, exported once and cached."""
    target = cache_dir() / "openvino-float" / f"{checkpoint.name}-{_checkpoint_key(checkpoint)}"
    if (target / MODEL_XML).is_file():
        return target
    progress("exporting the float OpenVINO IR and tokenizers (optimum-intel; cached after once)")
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig

    with staged_directory(target) as partial:
        main_export(
            str(checkpoint),
            str(partial),
            task="text-generation-with-past",
            ov_config=OVConfig(dtype="fp32"),
            convert_tokenizer=True,
        )
    return target


def layer_precisions(recipe: Recipe, num_layers: int) -> tuple[dict[int, str], str | None]:
    """Each decoder layer's weight format, and the head's (None: NNCF's default).

    Ranges are checked against the model by ``recipe.check_against_model`` before export.
    """
    precisions = dict.fromkeys(range(num_layers), recipe.precision.weights)
    mixed = recipe.mixed_precision
    if mixed is None:
        return precisions, None
    for item in mixed.layers:
        first, last = item.range
        precisions.update(dict.fromkeys(range(first, last + 1), item.weights))
    return precisions, mixed.lm_head


def plan_passes(precisions: dict[int, str], head: str | None) -> list[CompressionPass]:
    """Group layers by precision; 4-bit first (its statistics need float neighbours).

    Float layers get no pass. The head joins the pass of its precision; with ``head`` None
    it follows NNCF's default inside the passes (INT8 backup for a 4-bit model).
    """
    order = ("int4_awq", "int4_gptq", "int4_wo", "int8_sq", "int8_wo")
    passes = []
    for weights in order:
        layers = sorted(layer for layer, kind in precisions.items() if kind == weights)
        if layers or head == weights:
            passes.append(CompressionPass(weights, layers, head=head == weights))
    if head is None and passes:
        passes[0].head = True  # NNCF decides the head's precision in the main pass
    return passes


def weight_nodes(model: Any) -> dict[str, int | str]:
    """Weight-bearing nodes of the IR -> their decoder layer index, or HEAD."""
    nodes: dict[str, int | str] = {}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("MatMul", "Gather"):
            continue
        name = op.get_friendly_name()
        match = _LAYER.search(name)
        if kind == "MatMul" and match:
            nodes[name] = int(match.group(1))
        elif "lm_head" in name or "embed_tokens" in name:
            nodes[name] = HEAD
    return nodes


def _calibration_dataset(model: Any, texts: list[str], tokenizer_json: Path) -> Any:
    """An ``nncf.Dataset`` of whole-sequence inputs of the stateful IR, one per text."""
    import nncf
    import numpy as np
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    names = {port.get_any_name() for port in model.inputs}
    items = []
    for text in texts:
        ids = np.asarray([tokenizer.encode(text, add_special_tokens=False).ids], dtype=np.int64)
        item = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None, :],
            "beam_idx": np.zeros(1, dtype=np.int32),
        }
        items.append({key: value for key, value in item.items() if key in names})
    return nncf.Dataset(items)


def _run_pass(model: Any, step: CompressionPass, ignored: list[str], recipe: Recipe, data: Any):
    import nncf

    precision, cpu = recipe.precision, recipe.cpu
    ignored_scope = nncf.IgnoredScope(names=ignored) if ignored else None
    samples = recipe.calibration.samples if data is not None else 0
    if step.weights == "int8_sq":
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )

        alphas = AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT_ALPHA)
        return nncf.quantize(
            model,
            data,
            subset_size=samples,
            model_type=nncf.ModelType.TRANSFORMER,
            ignored_scope=ignored_scope,
            advanced_parameters=AdvancedQuantizationParameters(smooth_quant_alphas=alphas),
        )
    if step.weights == "int8_wo":
        mode = nncf.CompressWeightsMode.INT8_SYM if cpu.sym else nncf.CompressWeightsMode.INT8_ASYM
        return nncf.compress_weights(model, mode=mode, ignored_scope=ignored_scope)
    mode = nncf.CompressWeightsMode.INT4_SYM if cpu.sym else nncf.CompressWeightsMode.INT4_ASYM
    return nncf.compress_weights(
        model,
        mode=mode,
        group_size=precision.group_size,
        ratio=cpu.ratio,
        all_layers=True if step.head and recipe.mixed_precision is not None else None,
        ignored_scope=ignored_scope,
        dataset=data,
        subset_size=max(samples, 1),
        awq=step.weights == "int4_awq" or None,
        gptq=step.weights == "int4_gptq" or None,
        scale_estimation=(cpu.scale_estimation and data is not None) or None,
        backup_mode=nncf.BackupMode.INT8_ASYM,
    )


def _store_fp16(model: Any, nodes: dict[str, int | str], where: set[int | str]) -> None:
    """Store the float weights of ``where`` as FP16 (+ Convert to f32 at load).

    ``save_model(compress_to_fp16=True)`` leaves an NNCF-compressed model's remaining f32
    weights alone, so FP16 ranges of a mixed recipe are converted here, explicitly.
    """
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    done: set[str] = set()
    for op in model.get_ordered_ops():
        if nodes.get(op.get_friendly_name()) not in where:
            continue
        weight = op.input_value(0 if op.get_type_name() == "Gather" else 1).get_node()
        if weight.get_type_name() != "Constant" or weight.get_friendly_name() in done:
            continue
        if weight.get_output_element_type(0) != ov.Type.f32:
            continue
        done.add(weight.get_friendly_name())
        widen = ops.convert(ops.constant(weight.get_data().astype(np.float16)), ov.Type.f32)
        for target in list(weight.output(0).get_target_inputs()):
            target.replace_source_output(widen.output(0))


def _needs_data(passes: list[CompressionPass], recipe: Recipe) -> bool:
    """Data-aware formats, and INT4 extras (scale estimation, ratio by sensitivity).

    The recipe schema already refuses data-aware formats without static calibration.
    """
    if recipe.calibration.mode != "static":
        return False
    int4_extras = recipe.cpu.ratio < 1 or recipe.cpu.scale_estimation
    return any(
        p.weights in DATA_AWARE or (p.weights.startswith("int4") and int4_extras) for p in passes
    )


def export_openvino(recipe: Recipe, checkpoint: Path, out: Path, progress: Progress) -> dict:
    """Write the recipe's OpenVINO model into ``out`` (created); returns the applied config."""
    import openvino as ov

    source = float_export(checkpoint, progress)
    kv_cache = KV_CACHE_PRECISION[recipe.precision.kv_cache]
    if recipe.precision.weights == GGUF_NATIVE:
        from edgectl.build.gguf_native import export_gguf_native
        from edgectl.build.sources import source_gguf

        gguf_path = source_gguf(recipe.source)
        return export_gguf_native(gguf_path, source, out, recipe.cpu.gguf_q4_1, kv_cache, progress)
    shutil.copytree(source, out)
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    precisions, head = layer_precisions(recipe, int(config["num_hidden_layers"]))
    passes = plan_passes(precisions, head)
    model = ov.Core().read_model(out / MODEL_XML)
    nodes = weight_nodes(model)
    texts: list[str] = []
    data = None
    if _needs_data(passes, recipe):
        texts = calibration_texts(recipe.calibration, tokenizer_spans(out / "tokenizer.json"))
        data = _calibration_dataset(model, texts, out / "tokenizer.json")
    for number, step in enumerate(passes, 1):
        covered = set(step.layers) | ({HEAD} if step.head else set())
        step.nodes = [name for name, where in nodes.items() if where in covered]
        ignored = [name for name in nodes if name not in step.nodes]
        progress(
            f"NNCF pass {number}/{len(passes)}: {step.weights} on {len(step.layers)} layers"
            + (" + head" if step.head else "")
            + (f" ({len(texts)} calibration samples)" if data is not None else "")
        )
        model = _run_pass(model, step, ignored, recipe, data)
    if passes:
        float16 = {layer for layer, kind in precisions.items() if kind == "fp16"}
        _store_fp16(model, nodes, float16 | ({HEAD} if head == "fp16" else set()))
    model.set_rt_info(kv_cache, ["runtime_options", "KV_CACHE_PRECISION"])
    progress("saving the OpenVINO IR")
    staged = out / "staged_model.xml"
    ov.save_model(model, staged, compress_to_fp16=recipe.precision.weights != "fp32")
    del model
    staged.rename(out / MODEL_XML)
    staged.with_suffix(".bin").rename(out / MODEL_BIN)
    applied = {
        "weights": recipe.precision.weights,
        "group_size": recipe.precision.group_size,
        "sym": recipe.cpu.sym,
        "ratio": recipe.cpu.ratio,
        "scale_estimation": bool(recipe.cpu.scale_estimation and data is not None),
        "kv_cache": kv_cache,
        "float_storage": "fp32" if recipe.precision.weights == "fp32" else "fp16",
        "calibration_samples": len(texts),
        "calibration_seq_len": recipe.calibration.seq_len if texts else None,
        "passes": [
            {key: value for key, value in asdict(step).items() if key != "nodes"}
            | {"nodes": len(step.nodes)}
            for step in passes
        ],
        "nncf": tool_versions(("nncf",))["nncf"],
    }
    if recipe.precision.act_order:
        applied["act_order"] = "ignored: NNCF's GPTQ has no activation-order option"
    (out / "quantization.json").write_text(json.dumps(applied, indent=2), encoding="utf-8")
    return applied
