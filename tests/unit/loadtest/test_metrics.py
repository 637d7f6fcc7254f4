"""Summary and percentile math of edgectl.loadtest.metrics (genai-perf definitions)."""

from __future__ import annotations

import pytest

from edgectl.loadtest.metrics import (
    RequestRecord,
    count_output_tokens,
    distribution,
    percentile,
    summarize,
)


def record(start: float, latency: float, ttft: float | None = 0.1, **kw) -> RequestRecord:
    values = dict(step="s", start=start, ok=True, latency_s=latency, ttft_s=ttft, max_tokens=11)
    values.update(kw)
    return RequestRecord(**values)


@pytest.mark.parametrize(
    ("pct", "expected"),
    [(0, 1.0), (50, 2.5), (90, 3.7), (99, 3.97), (100, 4.0)],
)
def test_percentile_interpolates_like_numpy(pct: float, expected: float) -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], pct) == pytest.approx(expected)


def test_percentile_of_one_value_and_errors() -> None:
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_distribution() -> None:
    dist = distribution([1.0, 2.0, 3.0, 10.0], "ms")
    assert dist is not None
    assert (dist["avg"], dist["min"], dist["max"], dist["p50"]) == (4.0, 1.0, 10.0, 2.5)
    assert dist["unit"] == "ms"
    assert distribution([], "ms") is None


def test_summary_metrics_follow_genai_perf_definitions() -> None:
    records = [
        record(100.0, 1.0, ttft=0.2, warmup=True),  # excluded
        record(101.0, 1.1, ttft=0.1, input_tokens=32),
        record(101.5, 2.1, ttft=0.1, input_tokens=32),
        record(102.0, 0.01, ok=False, ttft=None, error="HTTP 400: bad"),
    ]
    count_output_tokens(records, fixed_length=True, encode=None)
    summary = summarize(records)
    assert summary["request_count"] == 2
    assert summary["failure_count"] == 1
    assert summary["warmup_count"] == 1
    assert summary["errors"] == {"HTTP 400: bad": 1}
    # ITL per request = (latency - TTFT) / (tokens - 1): 1.0/10 and 2.0/10 seconds.
    assert summary["inter_token_latency"]["avg"] == pytest.approx(150.0)
    assert summary["time_to_first_token"]["p50"] == pytest.approx(100.0)
    assert summary["request_latency"]["max"] == pytest.approx(2100.0)
    # Window: first measured send (101.0) to last measured response (103.6).
    assert summary["duration_s"] == pytest.approx(2.6)
    assert summary["output_token_throughput"]["avg"] == pytest.approx(22 / 2.6)
    assert summary["request_throughput"]["avg"] == pytest.approx(2 / 2.6)
    assert summary["output_sequence_length"]["avg"] == 11
    assert summary["input_sequence_length"]["avg"] == 32


def test_summary_with_only_failures_has_no_metrics() -> None:
    records = [record(1.0, 0.01, ok=False, ttft=None, error="unknown model")] * 3
    count_output_tokens(records, fixed_length=True, encode=None)
    summary = summarize(records)
    assert summary["request_count"] == 0
    assert summary["failure_count"] == 3
    for metric in ("time_to_first_token", "request_latency", "output_token_throughput"):
        assert summary[metric] is None


def test_output_tokens_are_retokenized_when_length_is_not_fixed(bpe) -> None:
    ok = record(0.0, 1.0, output_text="hello world, hello there")
    failed = record(0.0, 1.0, ok=False, output_text="partial")
    count_output_tokens([ok, failed], fixed_length=False, encode=bpe.encode)
    assert ok.output_tokens == len(bpe.encode("hello world, hello there")) > 1
    assert failed.output_tokens == 0
    with pytest.raises(ValueError, match="tokenizer"):
        count_output_tokens([record(0.0, 1.0)], fixed_length=False, encode=None)


def test_record_round_trips_through_json() -> None:
    original = record(5.0, 1.5, itl_s=[0.01, 0.02], output_text="x", user=3)
    assert RequestRecord.from_json(original.to_json()) == original
    assert original.end == 6.5


def test_pooled_rounds_add_their_windows_not_the_gap_between_them() -> None:
    first = [record(100.0, 1.0, step="a-round1"), record(100.5, 1.5, step="a-round1")]
    second = [record(500.0, 1.0, step="a-round2"), record(500.2, 0.8, step="a-round2")]
    records = first + second
    count_output_tokens(records, fixed_length=True, encode=None)
    summary = summarize(records)
    assert summary["duration_s"] == pytest.approx(2.0 + 1.0)
    assert summary["request_count"] == 4
    assert summary["request_throughput"]["avg"] == pytest.approx(4 / 3.0)
