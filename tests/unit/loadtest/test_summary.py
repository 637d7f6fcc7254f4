"""The typed load-test summary: written once, read back equal; bad files are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from edgectl.loadtest.metrics import RequestRecord, summarize
from edgectl.loadtest.summary import (
    RunSummary,
    ServerRef,
    StepSummary,
    read_summary,
    write_summary,
)


def step(failures: int) -> StepSummary:
    records = [
        RequestRecord(step="s", start=0.0, ok=True, ttft_s=0.1, latency_s=1.0,
                      input_tokens=8, output_tokens=4),
        *[RequestRecord(step="s", start=0.0, ok=False, error="HTTP 400: bad",
                        latency_s=0.1, input_tokens=8) for _ in range(failures)],
    ]  # fmt: skip
    return StepSummary(
        variant="server", level=1, users=1, step="c1", rounds=["c1"],
        metrics=summarize(records), server_rss_mib=None, breakdown=None, locust={},
    )  # fmt: skip


def test_round_trip_and_failure_count(tmp_path: Path) -> None:
    summary = RunSummary(
        profile={"name": "p"}, model="ensemble",
        servers=[ServerRef(variant="server", target="grpc://127.0.0.1:8001", pid=1)],
        started_at="now", machine={"cpus": 2}, steps=[step(0), step(2)],
    )  # fmt: skip
    write_summary(tmp_path, summary)
    again = read_summary(tmp_path)
    assert again == summary
    assert again.failures == 2
    assert again.steps[1].metrics.errors == {"HTTP 400: bad": 2}


def test_an_unknown_field_is_refused(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(
        '{"profile": {}, "model": "m", "servers": [], "started_at": "", "machine": {}, "x": 1}'
    )
    with pytest.raises(ValidationError, match="x"):
        read_summary(tmp_path)


def test_optional_step_keys_appear_only_when_set() -> None:
    bare = step(0).model_dump(mode="json")
    summary = RunSummary(
        profile={}, model="m", servers=[], started_at="", machine={},
        steps=[step(0), step(0).model_copy(update={"note": "no breakdown: x"})],
    )  # fmt: skip
    steps = summary.as_json()["steps"]
    assert "note" not in steps[0] and "retokenized_output_tokens_avg" not in steps[0]
    assert steps[1]["note"] == "no breakdown: x"
    assert bare["server_rss_mib"] is None and "server_rss_mib" in steps[0]
