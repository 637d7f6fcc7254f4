"""The engine step's input tensors -> one :class:`SequenceRequest` per engine sequence.

A request may carry a batch (``input_ids`` ``[B, L]`` with ``input_lengths``
``[B]``: one sequence per row, answered with ``batch_index``) and may ask for
``num_return_sequences`` independent samples (one sequence each, answered with
``sequence_index``).  Inputs NVIDIA's backend has but the CPU engine cannot
honour are refused by name with the reason, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgectl.runtime.contract import InvalidRequest, SamplingParams, decode_word_lists

Lookup = Callable[[str], "np.ndarray | None"]

# Inputs refused when a request sets them (a true flag or a non-empty tensor).
UNSUPPORTED_INPUTS = {
    "encoder_input_features": "encoder-decoder models are not served by the CPU engine",
    "encoder_output_lengths": "encoder-decoder models are not served by the CPU engine",
    "draft_input_ids": "speculative draft tokens are not accepted by the CPU engine",
    "draft_logits": "speculative draft logits are not accepted by the CPU engine",
    "draft_acceptance_threshold": (
        "the CPU engine's own speculation (engine.speculative) verifies drafts exactly, "
        "with no threshold"
    ),
    "embedding_bias": "OpenVINO GenAI has no per-token logit bias",
    "runtime_top_p_min": "top-p decay is not implemented by OpenVINO GenAI",
    "runtime_top_p_decay": "top-p decay is not implemented by OpenVINO GenAI",
    "runtime_top_p_reset_ids": "top-p decay is not implemented by OpenVINO GenAI",
    "return_context_logits": "OpenVINO GenAI does not expose logits",
    "return_generation_logits": "OpenVINO GenAI does not expose logits",
    "prompt_embedding_table": "prompt tuning tables are not supported on the CPU engine",
    "prompt_table_extra_ids": "prompt tuning tables are not supported on the CPU engine",
    "prompt_vocab_size": "prompt tuning tables are not supported on the CPU engine",
    "cross_attention_mask": "multimodal inputs are not supported on the CPU engine",
    "mrope_rotary_cos_sin": "multimodal inputs are not supported on the CPU engine",
    "mrope_position_deltas": "multimodal inputs are not supported on the CPU engine",
    "skip_cross_attn_blocks": "multimodal inputs are not supported on the CPU engine",
    "lora_task_id": "LoRA adapters are not supported on the CPU engine",
    "lora_weights": "LoRA adapters are not supported on the CPU engine",
    "lora_config": "LoRA adapters are not supported on the CPU engine",
    "context_phase_params": "disaggregated serving is not supported on the CPU engine",
    "lookahead_window_size": "lookahead decoding is not supported on the CPU engine",
    "lookahead_ngram_size": "lookahead decoding is not supported on the CPU engine",
    "lookahead_verification_set_size": "lookahead decoding is not supported on the CPU engine",
    "beam_search_diversity_rate": "diverse beam search is not exposed by the CPU engine",
}
# KV-cache retention hints: accepted and ignored (OpenVINO GenAI evicts on its own).
IGNORED_INPUTS = (
    "retention_token_range_starts",
    "retention_token_range_ends",
    "retention_token_range_priorities",
    "retention_token_range_durations_ms",
    "retention_decode_priority",
    "retention_decode_duration_ms",
)
# NVIDIA renamed these between releases; both names are accepted.
ALIASES = {"seed": "random_seed", "min_tokens": "min_length"}


@dataclass
class SequenceRequest:
    prompt_ids: list[int]
    params: SamplingParams
    batch_index: int
    sequence_index: int


def _is_set(array: np.ndarray) -> bool:
    flat = np.asarray(array).reshape(-1)
    if flat.size == 0:
        return False
    if flat.dtype == np.bool_:
        return bool(flat.any())
    if flat.dtype.kind in "iuf":
        return bool(np.any(flat != 0))
    return any(bool(value) for value in flat)


def refuse_unsupported(lookup: Lookup) -> None:
    for name, reason in UNSUPPORTED_INPUTS.items():
        array = lookup(name)
        if array is not None and _is_set(array):
            raise InvalidRequest(f"{name} is not supported: {reason}")
    lengths = lookup("decoder_input_lengths")
    if lengths is not None and _is_set(lengths):
        raise InvalidRequest(
            "decoder_input_ids is not supported: the CPU engine serves decoder-only models"
        )


class RowReader:
    """Per-row values of ``[B]``/``[B, 1]`` tensors; a single value applies to every row."""

    def __init__(self, lookup: Lookup, batch: int) -> None:
        self._lookup = lookup
        self._batch = batch

    def value(self, name: str, row: int, cast: Callable[[Any], Any], default: Any) -> Any:
        array = self._lookup(name)
        if array is None:
            return default
        flat = np.asarray(array).reshape(-1)
        if flat.size == self._batch:
            value = flat[row]
        elif flat.size == 1:
            value = flat[0]
        else:
            raise InvalidRequest(
                f"{name} must hold one value per request row ({self._batch}), got {flat.size}"
            )
        if isinstance(value, (float, np.floating)) and not np.isfinite(value):
            raise InvalidRequest(f"{name} must be a finite number, got {value}")
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InvalidRequest(f"{name} is not valid UTF-8 (byte {err.start})") from None
        return cast(value.item() if hasattr(value, "item") else value)

    def aliased(self, name: str, row: int, cast: Callable[[Any], Any], default: Any) -> Any:
        """``name`` or its older spelling; both given with different values is an error."""
        old = ALIASES[name]
        new_value = self.value(name, row, cast, None)
        old_value = self.value(old, row, cast, None)
        if new_value is not None and old_value is not None and new_value != old_value:
            raise InvalidRequest(f"{name} and {old} disagree ({new_value} vs {old_value})")
        if new_value is not None:
            return new_value
        return default if old_value is None else old_value

    def words(self, name: str, row: int) -> list[list[int]]:
        array = self._lookup(name)
        if array is None:
            return []
        packed = np.asarray(array)
        if packed.ndim == 3 and packed.shape[0] == self._batch:
            packed = packed[row]
        return decode_word_lists(packed)


def prompt_rows(lookup: Lookup) -> list[list[int]]:
    """``input_ids`` ``[B, L]`` cut to each row's ``input_lengths``."""
    ids = lookup("input_ids")
    if ids is None:
        raise InvalidRequest("input_ids is required")
    ids = np.asarray(ids)
    if ids.ndim == 1:
        ids = ids[np.newaxis]
    batch = ids.shape[0]
    lengths = lookup("input_lengths")
    flat = np.full(batch, ids.shape[1]) if lengths is None else np.asarray(lengths).reshape(-1)
    if flat.size != batch:
        raise InvalidRequest(
            f"input_lengths must hold {batch} values (one per row), got {flat.size}"
        )
    rows = []
    for row, length in zip(ids, flat, strict=True):
        if not 0 < int(length) <= row.size:
            raise InvalidRequest(f"input_lengths must be in [1, {row.size}], got {int(length)}")
        rows.append([int(i) for i in row[: int(length)]])
    return rows


def _guide_type(value: Any) -> str | None:
    text = str(value).strip().lower()
    return text or None


def row_params(reader: RowReader, row: int, exclude_default: bool) -> SamplingParams:
    return SamplingParams(
        max_new_tokens=reader.value("request_output_len", row, int, 0),
        end_id=reader.value("end_id", row, int, None),
        top_k=reader.value("runtime_top_k", row, int, 0),
        top_p=reader.value("runtime_top_p", row, float, 0.0),
        temperature=reader.value("temperature", row, float, None),
        seed=reader.aliased("seed", row, int, None),
        repetition_penalty=reader.value("repetition_penalty", row, float, 1.0),
        presence_penalty=reader.value("presence_penalty", row, float, 0.0),
        frequency_penalty=reader.value("frequency_penalty", row, float, 0.0),
        min_length=reader.aliased("min_tokens", row, int, 0),
        stop_words=reader.words("stop_words_list", row),
        streaming=reader.value("streaming", row, bool, False),
        exclude_input_in_output=reader.value("exclude_input_in_output", row, bool, exclude_default),
        beam_width=reader.value("beam_width", row, int, 1),
        num_return_sequences=reader.value("num_return_sequences", row, int, None),
        length_penalty=reader.value("len_penalty", row, float, 0.0),
        early_stopping=reader.value("early_stopping", row, bool, None),
        return_log_probs=reader.value("return_log_probs", row, bool, False),
        ignore_eos=reader.value("ignore_eos", row, bool, False),
        guide_type=reader.value("guided_decoding_guide_type", row, _guide_type, None),
        guide=reader.value("guided_decoding_guide", row, str, None),
    )


def sequence_requests(
    lookup: Lookup, exclude_default: bool, max_output_len: int
) -> list[SequenceRequest]:
    """Every engine sequence a request asks for; raises InvalidRequest before any starts."""
    refuse_unsupported(lookup)
    rows = prompt_rows(lookup)
    reader = RowReader(lookup, len(rows))
    sequences: list[SequenceRequest] = []
    for row, prompt in enumerate(rows):
        params = row_params(reader, row, exclude_default)
        if reader.words("bad_words_list", row):
            raise InvalidRequest("bad_words is not supported by the CPU engine")
        params.validate(max_output_len)
        if params.beam_search:
            sequences.append(SequenceRequest(prompt, params, row, 0))
            continue
        count = params.sequences
        single = replace(params, num_return_sequences=None)
        sequences.extend(SequenceRequest(prompt, single, row, index) for index in range(count))
    return sequences
