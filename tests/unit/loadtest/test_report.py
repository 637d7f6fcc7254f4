"""The report renders from a summary alone: tables, batch-size table, comparison, plots."""

from __future__ import annotations

from pathlib import Path

from edgectl.loadtest.report import console_table, render_markdown, write_report


def metrics(tput: float, p50: float, failures: int = 0) -> dict:
    def dist(value: float) -> dict:
        return {"unit": "ms", "avg": value, "min": value, "max": value,
                "p50": value, "p90": value * 1.2, "p99": value * 1.5}  # fmt: skip

    return {
        "request_count": 10, "failure_count": failures, "warmup_count": 1,
        "errors": {"HTTP 400: max_tokens": failures} if failures else {},
        "time_to_first_token": dist(p50 / 10), "inter_token_latency": dist(20.0),
        "request_latency": dist(p50), "output_sequence_length": dist(64.0),
        "input_sequence_length": dist(128.0),
        "output_token_throughput": {"unit": "tokens/sec", "avg": tput},
        "request_throughput": {"unit": "requests/sec", "avg": tput / 64}, "duration_s": 10.0,
    }  # fmt: skip


def step(variant: str, level: int, tput: float, p50: float, failures: int = 0) -> dict:
    return {
        "variant": variant, "level": level, "users": level, "step": f"{variant}-c{level}",
        "metrics": metrics(tput, p50, failures), "server_rss_mib": 1200.0 + level,
        "breakdown": {
            "ensemble": "ensemble", "requests": 10, "failures": 0, "total_ms": p50,
            "overlapped_ms": 3.0,
            "stages": [{"name": "engine", "ms": p50, "pct": 100.0, "detail": ""}],
        },
        "locust": {},
    }  # fmt: skip


def summary(steps: list[dict]) -> dict:
    return {
        "profile": {"name": "t", "mode": "concurrency", "input_tokens": 128,
                    "output_tokens": 64, "end_id": 49151, "stream": True, "duration_s": 10,
                    "max_requests": 100, "warmup_requests": 1},
        "model": "ensemble",
        "servers": [{"variant": v, "target": "grpc://127.0.0.1:1", "pid": 1}
                    for v in dict.fromkeys(s["variant"] for s in steps)],
        "started_at": "now", "machine": {"cpus": 2}, "steps": steps,
    }  # fmt: skip


def test_batch_size_table_has_memory_latency_throughput_and_efficiency() -> None:
    text = render_markdown(
        summary([step("on", 1, 50.0, 1000.0), step("on", 4, 150.0, 1300.0)]), plots=[]
    )
    assert "| concurrency | server RSS (MiB) | p50 latency (ms)" in text
    assert "| 4 | 1,204 | 1,300 | 130 | 150.0 | 3.00x | 75% |" in text
    assert "Highest throughput at concurrency 4" in text
    for name in ("TTFT p99 (ms)", "ITL p50 (ms)", "request latency p90 (ms)",
                 "output token throughput (tokens/s)", "request throughput (req/s)"):  # fmt: skip
        assert name in text


def test_side_by_side_ratios_and_failures_are_reported() -> None:
    steps = [step("batching", 8, 200.0, 2000.0), step("batch 1", 8, 50.0, 8000.0, failures=2)]
    text = render_markdown(summary(steps), plots=[])
    assert "## Side by side" in text
    assert "| 8 | batch 1 | 50.0 (0.25x) |" in text
    assert "2 x `HTTP 400: max_tokens`" in text


def test_report_with_only_failed_steps_renders(tmp_path: Path) -> None:
    failed = step("s", 1, 0.0, 0.0, failures=5)
    failed["metrics"].update(
        {
            k: None
            for k in (
                "time_to_first_token",
                "inter_token_latency",
                "request_latency",
                "output_token_throughput",
                "request_throughput",
            )
        }  # fmt: skip
    )
    failed["metrics"]["request_count"] = 0
    failed["breakdown"] = None
    path = write_report(summary([failed]), tmp_path)
    assert "n/a" in path.read_text()
    assert "n/a" in console_table(summary([failed]))


def test_plots_are_png_files(tmp_path: Path) -> None:
    path = write_report(summary([step("on", 1, 50.0, 900.0), step("on", 2, 90.0, 950.0)]), tmp_path)
    text = path.read_text()
    for name in ("latency_vs_load.png", "throughput_vs_load.png"):
        assert f"![{name}]({name})" in text
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
