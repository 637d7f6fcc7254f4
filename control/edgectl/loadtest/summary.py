"""The load-test summary (``summary.json``): one typed record, one writer, one reader.

The report renders from the JSON form (``RunSummary.as_json()``), so a run directory can
be re-reported later from its file alone; everything else reads the typed record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgectl.config import StrictModel

SUMMARY_FILE = "summary.json"
OPTIONAL_STEP_KEYS = ("retokenized_output_tokens_avg", "note")


class Distribution(StrictModel):
    unit: str
    avg: float
    min: float
    max: float
    p50: float
    p90: float
    p99: float


class Rate(StrictModel):
    unit: str
    avg: float


class StepMetrics(StrictModel):
    """genai-perf's metrics for one step's measured requests."""

    request_count: int
    failure_count: int
    warmup_count: int
    errors: dict[str, int]
    time_to_first_token: Distribution | None
    inter_token_latency: Distribution | None
    request_latency: Distribution | None
    output_sequence_length: Distribution | None
    input_sequence_length: Distribution | None
    output_token_throughput: Rate | None
    request_throughput: Rate | None
    duration_s: float


class StepSummary(StrictModel):
    """One (server variant, load level): every round's requests pooled."""

    variant: str
    level: float
    users: int
    step: str
    rounds: list[str]
    metrics: StepMetrics
    server_rss_mib: float | None
    breakdown: dict[str, Any] | None
    locust: dict[str, dict[str, int]]
    retokenized_output_tokens_avg: float | None = None
    note: str | None = None


class ServerRef(StrictModel):
    variant: str
    target: str
    pid: int | None


class RunSummary(StrictModel):
    profile: dict[str, Any]
    model: str
    servers: list[ServerRef]
    started_at: str
    machine: dict[str, Any]
    steps: list[StepSummary] = []

    @property
    def failures(self) -> int:
        return sum(step.metrics.failure_count for step in self.steps)

    def as_json(self) -> dict[str, Any]:
        """The JSON form; a step's optional note and re-tokenized count appear only when set."""
        data = self.model_dump(mode="json")
        for step in data["steps"]:
            for key in OPTIONAL_STEP_KEYS:
                if step[key] is None:
                    del step[key]
        return data


def write_summary(run_dir: Path, summary: RunSummary) -> Path:
    path = run_dir / SUMMARY_FILE
    path.write_text(json.dumps(summary.as_json(), indent=2), encoding="utf-8")
    return path


def read_summary(run_dir: Path) -> RunSummary:
    return RunSummary.model_validate_json((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
