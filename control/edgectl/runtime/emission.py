"""What the engine hands a response sink: ids per beam plus TensorRT-LLM's side outputs.

Kept free of Triton and OpenVINO so the engine loop and its unit tests share it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# OpenVINO GenAI's GenerationFinishReason -> the finish_reason extension output.
_FINISH_REASONS = {"STOP": "stop", "LENGTH": "length"}


@dataclass
class RequestTiming:
    """TensorRT-LLM's perf outputs, in nanoseconds of the engine's monotonic clock (0 = not yet)."""

    arrival_ns: int = 0
    first_scheduled_ns: int = 0
    first_token_ns: int = 0
    last_token_ns: int = 0


@dataclass
class Emission:
    """One response of one engine sequence: ``ids[beam]`` and per-beam side outputs."""

    ids: list[list[int]]
    log_probs: list[list[float]]
    cum_log_probs: list[float]
    final: bool
    finish_reasons: list[str]  # "" until final, then "stop" or "length" per beam
    num_input_tokens: int
    num_output_tokens: int  # generated so far (the end id not counted)
    timing: RequestTiming = field(default_factory=RequestTiming)
    batch_index: int = 0
    sequence_index: int = 0
    key: int = 0
    end_id: int = 0


@dataclass
class Beam:
    ids: list[int]
    log_probs: list[float]
    score: float
    finish_reason: str


def _cut_at_stop(
    ids: list[int], log_probs: list[float], stop_match: Callable[[Sequence[int]], int]
) -> tuple[list[int], list[float], bool]:
    """Cut a finished beam before the first stop word it contains."""
    for end in range(1, len(ids) + 1):
        matched = stop_match(ids[:end])
        if matched:
            return ids[: end - matched], log_probs[: end - matched], True
    return ids, log_probs, False


def finished_beams(
    outputs: Sequence[Any],
    count: int,
    end_id: int,
    stop_match: Callable[[Sequence[int]], int],
) -> list[Beam]:
    """The ``count`` best beams, best first (TensorRT-LLM's order: by the length-normalised
    score), without end ids and cut at stop words."""
    beams = []
    for output in outputs:
        ids = [int(token) for token in output.generated_ids]
        log_probs = [float(value) for value in output.generated_log_probs]
        log_probs += [0.0] * (len(ids) - len(log_probs))
        reason = _FINISH_REASONS.get(str(output.finish_reason).split(".")[-1], "stop")
        while ids and ids[-1] == end_id:
            ids.pop()
            log_probs.pop()
            reason = "stop"
        ids, log_probs, stopped = _cut_at_stop(ids, log_probs[: len(ids)], stop_match)
        beams.append(Beam(ids, log_probs, float(output.score), "stop" if stopped else reason))
    beams.sort(key=lambda beam: beam.score, reverse=True)
    return beams[:count]
