"""SamplingParams (TensorRT-LLM meanings) -> an OpenVINO GenAI ``GenerationConfig``.

Kept apart from the engine loop so the mapping of every knob, and where the two
libraries' defaults differ, is in one place.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from edgectl.runtime.contract import SamplingParams

# guided_decoding_guide_type -> StructuredOutputConfig keyword; "json" means any JSON object.
GUIDE_KEYWORDS = {
    "json": "json_schema",
    "json_schema": "json_schema",
    "regex": "regex",
    "ebnf_grammar": "grammar",
}
ANY_JSON_OBJECT = json.dumps({"type": "object"})


def structured_output_arguments(params: SamplingParams) -> dict[str, str] | None:
    """The StructuredOutputConfig keyword arguments a request's guide asks for."""
    if params.guide_type is None:
        return None
    guide = params.guide if params.guide_type != "json" else ANY_JSON_OBJECT
    return {GUIDE_KEYWORDS[params.guide_type]: guide or ""}


def stop_criteria_name(params: SamplingParams) -> str:
    """TensorRT-LLM's ``early_stopping``: true (its default) stops once ``beam_width``
    beams are complete (OpenVINO's EARLY); false continues while better beams are
    likely (HEURISTIC)."""
    return "EARLY" if params.early_stopping in (None, True) else "HEURISTIC"


def configure(
    config: Any,
    params: SamplingParams,
    end_id: int,
    seed_offset: int = 0,
    structured_output_factory: Callable[..., Any] | None = None,
    stop_criteria: Mapping[str, Any] | None = None,
) -> Any:
    """Fill ``config`` for one engine sequence; ``seed_offset`` separates the n samples."""
    config.max_new_tokens = params.max_new_tokens
    config.eos_token_id = end_id
    config.stop_token_ids = set() if params.ignore_eos else {end_id}
    if params.ignore_eos:
        config.ignore_eos = True
    config.repetition_penalty = params.repetition_penalty
    config.presence_penalty = params.presence_penalty
    config.frequency_penalty = params.frequency_penalty
    config.min_new_tokens = params.min_length
    if params.return_log_probs or params.beam_search:
        config.logprobs = 1
    if params.beam_search:
        _beam_search(config, params, stop_criteria)
    elif not params.greedy:
        config.do_sample = True
        config.temperature = 1.0 if params.temperature is None else params.temperature
        config.top_p = params.effective_top_p
        if params.top_k > 0:
            config.top_k = params.top_k
        config.rng_seed = (params.seed or 0) + seed_offset
    arguments = structured_output_arguments(params)
    if arguments is not None and structured_output_factory is not None:
        config.structured_output_config = structured_output_factory(**arguments)
    return config


def _beam_search(config: Any, params: SamplingParams, stop_criteria: Mapping[str, Any] | None):
    config.num_beams = params.beam_width
    config.num_beam_groups = 1
    config.num_return_sequences = params.sequences
    # TensorRT-LLM's len_penalty defaults to 0 (raw cumulative log prob); OpenVINO's to 1.0.
    config.length_penalty = params.length_penalty
    name = stop_criteria_name(params)
    config.stop_criteria = stop_criteria[name] if stop_criteria else name
