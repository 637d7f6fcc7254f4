"""NVIDIA's LLM-API model contract -> ``tensorrt_llm.SamplingParams`` arguments.

Triton-free and TensorRT-LLM-free, so the mapping is unit-tested here even though
the model itself only runs on GPU nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgectl.runtime.triton_io import scalar

Lookup = Callable[[str], "np.ndarray | None"]

# model.yaml keys handed to tensorrt_llm.LLM (the rest configure Triton or us).
LLM_ARGUMENTS = ("model", "tokenizer", "backend", "tensor_parallel_size", "pipeline_parallel_size")
# sampling_param_<name> input -> SamplingParams keyword
SAMPLING_INPUTS = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "max_tokens": "max_tokens",
    "seed": "seed",
    "exclude_input_from_output": "exclude_input_from_output",
    "return_perf_metrics": "return_perf_metrics",
}
REFUSED = {
    "image_url": "multimodal input is not rendered for text models",
    "lora_id": "LoRA adapters are not configured",
    "lora_name": "LoRA adapters are not configured",
    "lora_path": "LoRA adapters are not configured",
    "lora_ckpt_source": "LoRA adapters are not configured",
}


@dataclass
class RequestSettings:
    prompt: str
    streaming: bool
    sampling: dict[str, Any] = field(default_factory=dict)
    return_finish_reason: bool = True
    return_cumulative_logprob: bool = False


def _scalar(lookup: Lookup, name: str) -> Any:
    return scalar(lookup(name), name, lambda value: value, None)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def request_settings(lookup: Lookup, decoupled: bool) -> RequestSettings:
    """Read one request; ValueError (-> INVALID_ARG) names the offending input."""
    for name, reason in REFUSED.items():
        if lookup(name) is not None:
            raise ValueError(f"{name} is not supported: {reason}")
    prompts = lookup("text_input")
    if prompts is None or np.asarray(prompts).size != 1:
        raise ValueError("text_input must hold exactly one prompt (max_batch_size is 0)")
    streaming = bool(_scalar(lookup, "streaming") or False)
    if streaming and not decoupled:
        raise ValueError("streaming needs triton_config.decoupled: true in model.yaml")
    best_of = _scalar(lookup, "sampling_param_best_of")
    if best_of not in (None, 1):
        raise ValueError(f"sampling_param_best_of must be 1, got {best_of}")
    sampling = {}
    for suffix, keyword in SAMPLING_INPUTS.items():
        value = _scalar(lookup, f"sampling_param_{suffix}")
        if value is not None:
            sampling[keyword] = value
    stop = lookup("sampling_param_stop")
    if stop is not None:
        sampling["stop"] = [_text(word) for word in np.asarray(stop).reshape(-1)]
    finish = _scalar(lookup, "return_finish_reason")
    return RequestSettings(
        prompt=_text(np.asarray(prompts).reshape(-1)[0]),
        streaming=streaming,
        sampling=sampling,
        return_finish_reason=True if finish is None else bool(finish),
        return_cumulative_logprob=bool(_scalar(lookup, "return_cumulative_logprob") or False),
    )
