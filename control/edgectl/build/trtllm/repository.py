"""The Triton repository and tokenizer that travel with a TensorRT-LLM artifact."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgectl.build.recipe import Recipe
from edgectl.runtime.manifest import ServingIds

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
    "config.json",
)


def copy_tokenizer(checkpoint: Path, out: Path) -> None:
    """What the pre/postprocessing steps load (tokenizer.json + chat template)."""
    out.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, out / name)


def render_trtllm_repository(
    recipe: Recipe, folder: Path, served_from: Path, serving: ServingIds
) -> Path:
    """The Triton repository for the engine, with limits equal to the engine's own.

    Written into ``folder`` (the build's staging dir) with paths under ``served_from``.
    """
    from edgectl.config import EngineConfig
    from edgectl.deploy.repository import (
        ServedModel,
        render_repository,
        trtllm_serving_values,
    )

    target = recipe.trtllm
    engine = EngineConfig(
        max_batch_size=target.max_batch_size,
        max_input_len=target.max_input_len,
        max_output_len=target.max_seq_len - target.max_input_len,
        max_num_seqs=target.max_batch_size,
        max_num_tokens=max(16, target.max_num_tokens),
        enable_kv_cache_reuse=target.serving.enable_kv_cache_reuse,
    )
    model = ServedModel(
        name="ensemble",
        engine="trtllm",
        engine_dir=served_from / "engine",
        tokenizer_dir=served_from / "tokenizer",
        end_id=serving.end_id,
        pad_id=serving.pad_id,
    )
    serving_values = {
        **trtllm_serving_values(target.serving),
        "max_beam_width": str(target.max_beam_width),
    }
    return render_repository([model], engine, folder / "model_repository", serving_values)


LLMAPI_TEMPLATE = "llmapi_tensorrt_llm"
HF_CHECKPOINT_DIR = "hf_checkpoint"


def llmapi_settings(recipe: Recipe, served_from: Path, decoupled: bool) -> dict:
    """``model.yaml`` of NVIDIA's LLM-API model: ``tensorrt_llm.LLM`` arguments + Triton's."""
    target = recipe.trtllm
    return {
        "model": str(served_from / HF_CHECKPOINT_DIR),
        "tokenizer": str(served_from / "tokenizer"),
        "backend": "pytorch",
        "tensor_parallel_size": target.tp_size,
        "pipeline_parallel_size": target.pp_size,
        "triton_config": {"max_batch_size": 0, "decoupled": decoupled},
    }


def render_llmapi_repository(
    recipe: Recipe, folder: Path, served_from: Path, decoupled: bool = True
) -> Path:
    """A repository holding one ``tensorrt_llm`` LLM-API model (it replaces the ensemble)."""
    import yaml

    from edgectl.deploy.repository import TEMPLATES, _render_one

    out = folder / "model_repository"
    out.mkdir(parents=True)
    values = {"engine_name": "tensorrt_llm", "decoupled": "true" if decoupled else "false"}
    _render_one(TEMPLATES / LLMAPI_TEMPLATE, out / "tensorrt_llm", values)
    settings = llmapi_settings(recipe, served_from, decoupled)
    (out / "tensorrt_llm" / "1" / "model.yaml").write_text(
        yaml.safe_dump(settings, sort_keys=False), encoding="utf-8"
    )
    return out
