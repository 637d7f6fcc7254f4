"""Per-stage breakdown from canned Triton statistics (the /v2/models/stats JSON shape)."""

from __future__ import annotations

import pytest

from edgectl.errors import EdgectlError
from edgectl.loadtest.breakdown import (
    compute_breakdown,
    diff_stats,
    format_breakdown,
    parse_model_stats,
)

STEPS = ["preprocessing", "tensorrt_llm", "postprocessing"]
MS = 1_000_000
PHASES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


def model(name: str, requests: int, executions: int | None = None, **phase_ms: float) -> dict:
    """One model_stats entry; phase_ms maps phase -> total milliseconds."""
    executions = requests if executions is None else executions
    stats = {
        phase: {"count": executions if phase.startswith("compute") else requests,
                "ns": int(phase_ms.get(phase, 0) * MS)}
        for phase in PHASES
    }  # fmt: skip
    stats["fail"]["count"] = int(phase_ms.get("fail_count", 0))
    return {
        "name": name, "version": "1", "inference_count": requests,
        "execution_count": executions, "inference_stats": stats,
    }  # fmt: skip


def payload(*models: dict) -> dict:
    return {"model_stats": list(models)}


def stream_stats(scale: int = 1) -> dict:
    """10 streamed requests: 64 postprocessing calls each, engine execute only enqueues."""
    return payload(
        model("ensemble", 10 * scale, success=4000 * scale, queue=1 * scale, fail_count=2),
        model("preprocessing", 10 * scale, executions=5 * scale, queue=10 * scale,
              compute_input=2 * scale, compute_infer=15 * scale, compute_output=3 * scale),
        model("tensorrt_llm", 10 * scale, queue=4 * scale, compute_infer=5 * scale),
        model("postprocessing", 640 * scale, queue=5 * scale, compute_infer=640 * scale),
    )  # fmt: skip


def test_parse_reads_counts_and_phases() -> None:
    times = parse_model_stats(stream_stats())
    pre = times["preprocessing"]
    assert (pre.executions, pre.inferences) == (5, 10)
    assert pre.compute_ns == 20 * MS
    assert times["ensemble"].count("fail") == 2


def test_streaming_breakdown_adds_up_and_separates_overlapped_detokenization() -> None:
    result = compute_breakdown(parse_model_stats(stream_stats()), "ensemble", STEPS)
    assert result is not None
    stages = {stage.name: stage for stage in result.stages}
    assert result.requests == 10
    assert result.total_ms == pytest.approx(400.0)
    assert stages["queueing"].ms == pytest.approx(2.0)  # (1 + 10 + 4 + 5) / 10
    assert "preprocessing 1.0, tensorrt_llm 0.4" in stages["queueing"].detail
    assert stages["tokenization"].ms == pytest.approx(2.0)
    assert "avg batch 2.00" in stages["tokenization"].detail
    # 64 ms of detokenization per request in 64 calls: only the last call is critical.
    assert stages["detokenization"].ms == pytest.approx(1.0)
    assert result.overlapped_ms == pytest.approx(63.0)
    assert stages["engine"].ms == pytest.approx(400.0 - 2.0 - 2.0 - 1.0)
    assert sum(stage.ms for stage in result.stages) == pytest.approx(result.total_ms)
    assert sum(stage.pct for stage in result.stages) == pytest.approx(100.0)


def test_non_streaming_detokenization_is_fully_on_the_critical_path() -> None:
    stats = payload(
        model("ensemble", 4, success=800),
        model("preprocessing", 4, compute_infer=8),
        model("tensorrt_llm", 4, compute_infer=1),
        model("postprocessing", 4, compute_infer=20),
    )
    result = compute_breakdown(parse_model_stats(stats), "ensemble", STEPS)
    assert result is not None
    stages = {stage.name: stage.ms for stage in result.stages}
    assert stages["detokenization"] == pytest.approx(5.0)
    assert result.overlapped_ms == 0
    assert stages["engine"] == pytest.approx(200.0 - 2.0 - 5.0)


def test_delta_of_two_snapshots_is_the_window_in_between() -> None:
    before = parse_model_stats(stream_stats(scale=1))
    after = parse_model_stats(stream_stats(scale=3))
    delta = diff_stats(after, before)
    assert delta["ensemble"].count("success") == 20
    result = compute_breakdown(delta, "ensemble", STEPS)
    assert result is not None and result.total_ms == pytest.approx(400.0)


def test_no_completed_requests_means_no_breakdown() -> None:
    idle = parse_model_stats(payload(model("ensemble", 0)))
    assert compute_breakdown(idle, "ensemble", STEPS) is None
    assert "nothing to break down" in format_breakdown(None)
    with pytest.raises(EdgectlError, match="steps"):
        compute_breakdown(idle, "ensemble", ["only"])


def test_format_lists_every_stage_with_ms_and_percent() -> None:
    result = compute_breakdown(parse_model_stats(stream_stats()), "ensemble", STEPS)
    text = format_breakdown(result)
    for name in ("queueing", "tokenization", "engine", "detokenization", "total"):
        assert f"| {name}" in text or f"| **{name}" in text
    assert "| engine | 395.0 | 98.8% |" in text


def test_server_memory_counts_the_process_and_its_children() -> None:
    import os
    import subprocess
    import sys

    from edgectl.runtime.processes import RssSampler, server_processes, server_rss_bytes

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pids = {proc.pid for proc in server_processes(os.getpid())}
        assert {os.getpid(), child.pid} <= pids
        assert server_rss_bytes(os.getpid()) > server_rss_bytes(child.pid) > 0
        with RssSampler(os.getpid(), interval_s=0.05) as sampler:
            pass
        assert sampler.peak_mib is not None and sampler.peak_mib > 1
    finally:
        child.kill()
        child.wait()
    assert server_rss_bytes(child.pid) == 0
    with RssSampler(None) as idle:
        pass
    assert idle.peak_mib is None


def test_pooled_windows_add_up() -> None:
    from edgectl.loadtest.breakdown import add_stats

    one = parse_model_stats(stream_stats())
    pooled = add_stats(one, one)
    assert pooled["ensemble"].count("success") == 20
    assert pooled["preprocessing"].executions == 10
    result = compute_breakdown(pooled, "ensemble", STEPS)
    assert result is not None and result.total_ms == pytest.approx(400.0)
