"""Builds the continuous-batching engine on OpenVINO GenAI (imported lazily: it is heavy)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgectl.runtime.cancel_board import CancelBoard
from edgectl.runtime.detokenize import AnchoredDecoder, find_anchor_id
from edgectl.runtime.engine import (
    ContinuousBatchingEngine,
    DeviceGate,
    EngineLimits,
    EngineStats,
)
from edgectl.runtime.manifest import MANIFEST, read_manifest
from edgectl.runtime.speculative import Speculation, SpeculativeSettings, pipeline_properties


@dataclass
class SchedulerSettings:
    """OpenVINO GenAI ``SchedulerConfig`` knobs exposed through the model config."""

    max_num_seqs: int = 16
    max_num_batched_tokens: int = 512
    kv_cache_gb: float = 1.0
    enable_prefix_caching: bool = True
    dynamic_split_fuse: bool = True
    inference_precision: str = "f32"
    # CPU dynamic activation quantization group (0 = off; None = the plugin's default, 32).
    dynamic_quantization_group_size: int | None = None
    # KV-cache element type: u8, f16 or f32 (None = the artifact's own, from its recipe).
    kv_cache_precision: str | None = None
    # A fixed KV cache of this many blocks instead of kv_cache_gb (capacity measurements).
    num_kv_blocks: int | None = None


REQUIRED_FILES = ("openvino_model.xml", "openvino_model.bin", "tokenizer.json")
CHECKED_TOOLS = ("openvino", "openvino-genai")


def check_artifact(model_dir: Path) -> None:
    """Refuse a missing, incomplete or differently-built artifact with a clear reason.

    Called at model load so a mismatch fails the load, not the first request.
    """
    from importlib import metadata

    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        raise RuntimeError(
            f"{model_dir} is not a built CPU engine artifact: missing {', '.join(missing)} "
            "(run `edgectl build RECIPE`)"
        )
    if not (model_dir / MANIFEST).is_file():
        return  # hand-made artifact: nothing recorded to compare
    recorded = read_manifest(model_dir).runtime_tools
    for tool in CHECKED_TOOLS:
        expected = recorded.get(tool)
        try:
            found = metadata.version(tool)
        except metadata.PackageNotFoundError:
            found = "not installed"
        if expected and expected.split(".")[:2] != found.split(".")[:2]:
            raise RuntimeError(
                f"{model_dir} was built for {tool} {expected} but {found} is installed; "
                "rebuild it with `edgectl build RECIPE --force` or install the recorded version"
            )


def vocab_size(model_dir: Path) -> int | None:
    """The model's vocabulary size from its config.json (None when not recorded)."""
    import json

    path = model_dir / "config.json"
    if not path.is_file():
        return None
    size = json.loads(path.read_text(encoding="utf-8")).get("vocab_size")
    return int(size) if size else None


def load_tokenizer(model_dir: Path):
    """The HF fast tokenizer saved beside the OpenVINO model (``tokenizers`` only: light)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(model_dir / "tokenizer.json"))


def anchored_decoder(model_dir: Path) -> AnchoredDecoder:
    tokenizer = load_tokenizer(model_dir)
    anchor = find_anchor_id(lambda text: tokenizer.encode(text, add_special_tokens=False).ids)
    return AnchoredDecoder(tokenizer, anchor)


def kv_cache_whole_gb(kv_cache_gb: float) -> int:
    """OpenVINO GenAI sizes the KV cache in whole gigabytes (``cache_size``), at least one."""
    return max(1, int(round(kv_cache_gb)))


def create_pipeline(
    model_dir: Path,
    settings: SchedulerSettings,
    speculative: SpeculativeSettings | None = None,
):
    """OpenVINO GenAI's continuous-batching pipeline for ``model_dir`` on the CPU."""
    import openvino_genai as og

    scheduler = og.SchedulerConfig()
    scheduler.max_num_seqs = settings.max_num_seqs
    scheduler.max_num_batched_tokens = settings.max_num_batched_tokens
    scheduler.cache_size = kv_cache_whole_gb(settings.kv_cache_gb)
    if settings.num_kv_blocks is not None:
        scheduler.cache_size = 0
        scheduler.num_kv_blocks = settings.num_kv_blocks
    scheduler.enable_prefix_caching = settings.enable_prefix_caching
    scheduler.dynamic_split_fuse = settings.dynamic_split_fuse
    properties = plugin_properties(settings)
    if speculative is not None:  # also turns dynamic quantization off (lossless drafts)
        properties |= pipeline_properties(speculative, model_dir, settings.inference_precision)
    return og.ContinuousBatchingPipeline(str(model_dir), scheduler, "CPU", properties)


def plugin_properties(settings: SchedulerSettings) -> dict[str, object]:
    """The CPU plugin's load-time settings; unset ones keep the plugin's/artifact's own."""
    properties: dict[str, object] = {"INFERENCE_PRECISION_HINT": settings.inference_precision}
    if settings.dynamic_quantization_group_size is not None:
        properties["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = settings.dynamic_quantization_group_size
    if settings.kv_cache_precision:
        properties["KV_CACHE_PRECISION"] = settings.kv_cache_precision
    return properties


def build_engine(
    model_dir: Path,
    limits: EngineLimits,
    default_end_id: int,
    settings: SchedulerSettings,
    stats_hook: Callable[[EngineStats], None] | None = None,
    cancel_board: CancelBoard | None = None,
    device_gate: DeviceGate | None = None,
    speculative: SpeculativeSettings | None = None,
) -> ContinuousBatchingEngine:
    """Load the OpenVINO model in ``model_dir`` and wrap it in the engine loop (not started)."""
    check_artifact(model_dir)
    if limits.vocab_size is None:
        limits = dataclasses.replace(limits, vocab_size=vocab_size(model_dir))
    import numpy as np
    import openvino as ov
    import openvino_genai as og

    pipeline = create_pipeline(model_dir, settings, speculative)
    speculating = speculative is not None and speculative.enabled
    return ContinuousBatchingEngine(
        pipeline,
        anchored_decoder(model_dir),
        limits,
        default_end_id=default_end_id,
        generation_config_factory=og.GenerationConfig,
        structured_output_factory=og.StructuredOutputConfig,
        stop_criteria={name: getattr(og.StopCriteria, name) for name in ("EARLY", "HEURISTIC")},
        tensor_factory=lambda ids: ov.Tensor(np.asarray([ids], dtype=np.int64)),
        stats_hook=stats_hook,
        cancel_board=cancel_board,
        device_gate=device_gate,
        speculation=Speculation(speculative) if speculating else None,
    )
