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
    serving_values = trtllm_serving_values(target.serving)
    return render_repository([model], engine, folder / "model_repository", serving_values)
