"""Calibration: the fit reproduces the engine's timings; predicted vs measured on a small
summary.json written here (the real engine and load test run in the slow e2e test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgectl.errors import EdgectlError
from edgectl.loadtest.summary import RunSummary, StepMetrics, StepSummary, write_summary
from edgectl.plan import calibrate, memory, performance

from .conftest import recipe


def fitted(smollm2, steps: dict[int, float], prefill_s: float = 0.08):
    made = recipe(weights="int8_wo", targets=["cpu"])
    run = calibrate.EngineRun(prefill_s=prefill_s, step_s=steps)
    return made, calibrate.fit_device(smollm2, made, 20.0, run, {"numpy_gemm_gflops": 100.0})


def test_the_fit_reproduces_the_measured_steps(smollm2) -> None:
    made, device = fitted(smollm2, {1: 0.012, 8: 0.030})
    weights = memory.weight_bytes(smollm2, made, "cpu")
    work = performance.Workload.of(smollm2, weights, memory.kv_bytes_per_token(smollm2, "fp16"))
    hw = performance.Hardware.of(device, set(weights.matmul))
    position = calibrate.PROMPT_TOKENS + calibrate.NEW_TOKENS / 2
    for batch, measured in {1: 0.012, 8: 0.030}.items():
        step = performance.decode_step(work, hw, batch, position).seconds
        assert step == pytest.approx(measured, rel=1e-3)
    prefill = performance.prefill_seconds(work, hw, calibrate.PROMPT_TOKENS)
    assert prefill == pytest.approx(0.08, rel=1e-3)
    assert device.source.figures == "measured" and device.kind == "cpu"


def test_overheads_are_never_negative(smollm2) -> None:
    _, device = fitted(smollm2, {1: 1e-6, 8: 1e-6})
    assert device.overheads.step_s == 0 and device.overheads.per_sequence_s == 0


def step(users: int, tok_s: float, ttft_ms: float) -> StepSummary:
    def dist(value: float, unit: str) -> dict:
        return {
            "unit": unit,
            "avg": value,
            "min": value,
            "max": value,
            "p50": value,
            "p90": value,
            "p99": value,
        }

    metrics = StepMetrics(
        request_count=10,
        failure_count=0,
        warmup_count=1,
        errors={},
        time_to_first_token=dist(ttft_ms, "ms"),
        inter_token_latency=None,
        request_latency=None,
        output_sequence_length=dist(64, "tokens"),
        input_sequence_length=dist(128, "tokens"),
        output_token_throughput={"unit": "tokens/sec", "avg": tok_s},
        request_throughput=None,
        duration_s=10.0,
    )
    return StepSummary(
        variant="server",
        level=users,
        users=users,
        step=f"server-c{users}",
        rounds=["1"],
        metrics=metrics,
        server_rss_mib=None,
        breakdown=None,
        locust={},
    )


def test_predicted_vs_measured_from_a_run_directory(smollm2, tmp_path: Path) -> None:
    made, device = fitted(smollm2, {1: 0.012, 8: 0.030})
    summary = RunSummary(
        profile={},
        model="ensemble",
        servers=[],
        started_at="now",
        machine={},
        steps=[step(1, 70.0, 90.0), step(16, 300.0, 500.0)],
    )
    write_summary(tmp_path, summary)
    rows = calibrate.compare_with_run(made, smollm2, "local", device, tmp_path)
    assert [r["concurrency"] for r in rows] == [1, 16]
    one = rows[0]
    # concurrency 1: one query = prefill + 64 x step(1) -> 64 / (0.08 + 64 x 0.012) tok/s
    expected = 64 / (0.08 + 64 * performance_step(smollm2, made, device, 1))
    assert one["predicted tok/s"] == pytest.approx(expected, abs=0.1)
    assert one["measured tok/s"] == 70.0 and one["measured TTFT p50 ms"] == 90.0
    assert one["tok/s error %"] == pytest.approx((one["predicted tok/s"] - 70) / 70 * 100, abs=0.2)
    assert one["predicted TTFT ms"] == pytest.approx(80.0, abs=0.1)
    assert one["TTFT error %"] == pytest.approx((80 - 90) / 90 * 100, abs=0.2)
    json.dumps(rows)  # --json prints them


def performance_step(shape, made, device, batch: int) -> float:
    weights = memory.weight_bytes(shape, made, "cpu")
    work = performance.Workload.of(shape, weights, memory.kv_bytes_per_token(shape, "fp16"))
    hw = performance.Hardware.of(device, set(weights.matmul))
    return performance.decode_step(work, hw, batch, 128 + 64 / 2).seconds


def test_a_directory_without_summary_is_refused(smollm2, tmp_path: Path) -> None:
    made, device = fitted(smollm2, {1: 0.012, 8: 0.030})
    with pytest.raises(EdgectlError, match=r"--against .*: no summary.json"):
        calibrate.compare_with_run(made, smollm2, "local", device, tmp_path)


def test_error_is_relative_to_the_measurement() -> None:
    assert calibrate.error_pct(125, 100) == 25 and calibrate.error_pct(75, 100) == -25


def test_cache_sizes_reads_sysfs_without_failing() -> None:
    sizes = calibrate.cache_sizes()
    assert all(value > 0 for value in sizes.values())


def test_time_requests_reads_prefill_and_steps_from_the_token_clock() -> None:
    """A fake engine: 100 ms prefill, 10 ms steps alone, 20 ms steps at batch 8."""
    calls = []

    def submit(text: str, timing: calibrate.Timings) -> None:
        calls.append(text)
        warmup = calibrate.WARMUP_ROUNDS * max(calibrate.BATCHES)
        step = 0.010 if len(calls) <= warmup + 4 else 0.020
        first = timing.start + 0.100
        timing.tokens = [first + i * step for i in range(calibrate.NEW_TOKENS)]
        timing.done.set()

    words = iter(range(10**6))
    run = calibrate.time_requests(
        submit,
        lambda text: [1] * len(text.split()),
        lambda ids: " ".join(f"w{next(words)}" for _ in ids),
        lambda message: None,
    )
    assert run.prefill_s == pytest.approx(0.100)
    assert run.step_s == {1: pytest.approx(0.010), 8: pytest.approx(0.020)}
    assert len(set(calls)) == len(calls)  # every prompt is fresh: no prefix cache hits


def test_timings_take_the_engines_emissions() -> None:
    from edgectl.plan.calibrate import NEW_TOKENS, Timings
    from edgectl.runtime.emission import Emission

    def emission(ids: list[int], final: bool) -> Emission:
        return Emission(
            ids=[ids], log_probs=[[]], cum_log_probs=[0.0], final=final,
            finish_reasons=["length" if final else ""], num_input_tokens=4,
            num_output_tokens=len(ids),
        )  # fmt: skip

    timing = Timings(0.0)
    timing.send(emission([1, 2], final=False))
    assert not timing.done.is_set() and len(timing.tokens) == 2
    timing.send(emission(list(range(NEW_TOKENS - 2)), final=True))
    assert timing.done.is_set() and len(timing.tokens) == NEW_TOKENS
    assert timing.step_s >= 0
