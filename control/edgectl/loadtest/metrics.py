"""Per-request records and the statistics NVIDIA's genai-perf / AIPerf report.

Metric names and definitions follow genai-perf: time to first token, inter-token
latency ((request latency - TTFT) / (output tokens - 1), per request), request latency,
output/input sequence length, output token throughput and request throughput over the
measured window (first measured request sent -> last measured response received; the
windows of pooled steps, e.g. several rounds of the same step, are added up).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

STATS = ("avg", "min", "max", "p50", "p90", "p99")


@dataclass
class RequestRecord:
    """One request as the locust user saw it (a line of records.jsonl)."""

    step: str
    start: float  # epoch seconds when the request was sent
    ok: bool
    latency_s: float  # send -> last response
    ttft_s: float | None = None  # send -> first response carrying output
    itl_s: list[float] = field(default_factory=list)  # gaps between successive responses
    input_tokens: int = 0
    max_tokens: int = 0
    output_text: str = ""
    responses: int = 0
    warmup: bool = False
    error: str | None = None
    user: int = 0
    output_tokens: int | None = None  # filled by count_output_tokens()

    @property
    def end(self) -> float:
        return self.start + self.latency_s

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestRecord:
        return cls(**data)


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {pct}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values: Sequence[float], unit: str) -> dict[str, Any] | None:
    """avg/min/max/p50/p90/p99 of ``values``; None when there is nothing to describe."""
    if not values:
        return None
    return {
        "unit": unit,
        "avg": sum(values) / len(values),
        "min": min(values),
        "max": max(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
    }


def count_output_tokens(
    records: Iterable[RequestRecord], fixed_length: bool, encode: Callable[[str], list[int]] | None
) -> None:
    """Set ``output_tokens`` on every successful record.

    With a fixed output length (an end id the model never emits) a completed request
    generated exactly ``max_tokens``; otherwise the text is re-tokenized, as genai-perf
    does (a streamed piece may hold several tokens, so pieces are not tokens).
    """
    for record in records:
        if not record.ok:
            record.output_tokens = 0
        elif fixed_length:
            record.output_tokens = record.max_tokens
        elif encode is not None:
            record.output_tokens = len(encode(record.output_text))
        else:
            raise ValueError("output tokens need a tokenizer when the output length is not fixed")


def summarize(records: Sequence[RequestRecord]) -> dict[str, Any]:
    """genai-perf-style metrics of one step's measured (non-warm-up) requests."""
    measured = [r for r in records if not r.warmup]
    good = [r for r in measured if r.ok]
    failed = [r for r in measured if not r.ok]
    summary: dict[str, Any] = {
        "request_count": len(good),
        "failure_count": len(failed),
        "warmup_count": len(records) - len(measured),
        "errors": _error_counts(failed),
    }
    window = _window(good)
    tokens = [r.output_tokens or 0 for r in good]
    itl = [
        (r.latency_s - r.ttft_s) / (n - 1)
        for r, n in zip(good, tokens, strict=True)
        if r.ttft_s is not None and n > 1
    ]
    summary.update(
        {
            "time_to_first_token": distribution(
                [r.ttft_s * 1000 for r in good if r.ttft_s is not None], "ms"
            ),
            "inter_token_latency": distribution([gap * 1000 for gap in itl], "ms"),
            "request_latency": distribution([r.latency_s * 1000 for r in good], "ms"),
            "output_sequence_length": distribution([float(n) for n in tokens], "tokens"),
            "input_sequence_length": distribution([float(r.input_tokens) for r in good], "tokens"),
            "output_token_throughput": _rate(sum(tokens), window, "tokens/sec"),
            "request_throughput": _rate(len(good), window, "requests/sec"),
            "duration_s": window,
        }
    )
    return summary


def _window(good: Sequence[RequestRecord]) -> float:
    """Measured time: first send to last response, per step, summed over pooled steps."""
    by_step: dict[str, list[RequestRecord]] = {}
    for record in good:
        by_step.setdefault(record.step, []).append(record)
    return sum(max(r.end for r in step) - min(r.start for r in step) for step in by_step.values())


def _rate(amount: float, seconds: float, unit: str) -> dict[str, Any] | None:
    return {"unit": unit, "avg": amount / seconds} if seconds > 0 else None


def _error_counts(failed: Sequence[RequestRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in failed:
        message = (record.error or "unknown error")[:200]
        counts[message] = counts.get(message, 0) + 1
    return counts
