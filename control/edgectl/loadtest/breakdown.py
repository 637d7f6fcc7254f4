"""Per-stage latency breakdown from Triton's per-model statistics.

Triton keeps cumulative durations per model (queue, compute_input, compute_infer,
compute_output).  The ensemble's composing models are the stages: its first step
tokenizes, its last detokenizes, the ones between run the engine.  The ensemble's own
success time is the server-side request time.  The engine step is decoupled: its
``execute`` only enqueues, so Triton's compute time for it is the enqueue alone; the
engine's share (prefill, decode, waiting for a batch slot) is therefore the request
time minus the measured stages.  When streaming, detokenization runs once per response
in its own process while the engine generates the next tokens: only its last call is
on the request's critical path, the rest is reported as overlapped.

Dividing by the number of ensemble requests gives milliseconds per request; the
difference of two snapshots gives the breakdown of the load in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from edgectl.errors import EdgectlError

_COMPUTE = ("compute_input", "compute_infer", "compute_output")
_FIELDS = ("success", "fail", "queue", *_COMPUTE)


@dataclass(frozen=True)
class ModelTimes:
    """One model's counters: executions, inferences and per-phase (count, ns)."""

    executions: int = 0
    inferences: int = 0
    phases: dict[str, tuple[int, int]] = field(default_factory=dict)

    def ns(self, phase: str) -> int:
        return self.phases.get(phase, (0, 0))[1]

    def count(self, phase: str) -> int:
        return self.phases.get(phase, (0, 0))[0]

    @property
    def compute_ns(self) -> int:
        return sum(self.ns(phase) for phase in _COMPUTE)

    def minus(self, before: ModelTimes) -> ModelTimes:
        return ModelTimes(
            self.executions - before.executions,
            self.inferences - before.inferences,
            {
                phase: (self.count(phase) - before.count(phase), self.ns(phase) - before.ns(phase))
                for phase in _FIELDS
            },
        )


def parse_model_stats(payload: dict[str, Any]) -> dict[str, ModelTimes]:
    """``GET /v2/models/stats`` JSON -> times per model name (all versions summed)."""
    result: dict[str, ModelTimes] = {}
    for entry in payload.get("model_stats", []):
        stats = entry.get("inference_stats", {})
        times = ModelTimes(
            int(entry.get("execution_count", 0)),
            int(entry.get("inference_count", 0)),
            {
                phase: (
                    int(stats.get(phase, {}).get("count", 0)),
                    int(stats.get(phase, {}).get("ns", 0)),
                )
                for phase in _FIELDS
            },
        )
        previous = result.get(entry["name"])
        result[entry["name"]] = times if previous is None else _add(previous, times)
    return result


def _add(a: ModelTimes, b: ModelTimes) -> ModelTimes:
    return ModelTimes(
        a.executions + b.executions,
        a.inferences + b.inferences,
        {p: (a.count(p) + b.count(p), a.ns(p) + b.ns(p)) for p in _FIELDS},
    )


def add_stats(a: dict[str, ModelTimes], b: dict[str, ModelTimes]) -> dict[str, ModelTimes]:
    """Pool two windows (e.g. the same step measured in several rounds)."""
    return {name: _add(a.get(name, ModelTimes()), b.get(name, ModelTimes())) for name in a | b}


def diff_stats(
    after: dict[str, ModelTimes], before: dict[str, ModelTimes]
) -> dict[str, ModelTimes]:
    return {name: times.minus(before.get(name, ModelTimes())) for name, times in after.items()}


@dataclass(frozen=True)
class Stage:
    name: str
    ms: float  # per ensemble request
    pct: float  # of the ensemble's server-side request time
    detail: str = ""


@dataclass(frozen=True)
class Breakdown:
    ensemble: str
    requests: int
    failures: int
    total_ms: float  # ensemble server-side time per request
    stages: list[Stage]  # add up to total_ms
    overlapped_ms: float  # detokenization that ran while the engine generated

    def to_json(self) -> dict[str, Any]:
        return {
            "ensemble": self.ensemble,
            "requests": self.requests,
            "failures": self.failures,
            "total_ms": self.total_ms,
            "overlapped_ms": self.overlapped_ms,
            "stages": [stage.__dict__ for stage in self.stages],
        }


def compute_breakdown(
    times: dict[str, ModelTimes], ensemble: str, steps: list[str]
) -> Breakdown | None:
    """Stages per ensemble request from (delta) statistics; None when nothing completed.

    ``steps`` are the ensemble's composing models in order (first tokenizes, last
    detokenizes, the rest are the engine).
    """
    if len(steps) < 2:
        raise EdgectlError(f"ensemble {ensemble} has {len(steps)} steps; need at least 2")
    total = times.get(ensemble, ModelTimes())
    requests = total.count("success")
    if requests <= 0:
        return None
    first = times.get(steps[0], ModelTimes())
    last = times.get(steps[-1], ModelTimes())
    queues = {name: times.get(name, ModelTimes()).ns("queue") for name in [ensemble, *steps]}
    queued = sum(queues.values())
    ms = 1e-6 / requests  # ns summed over requests -> ms per request
    total_ms = total.ns("success") * ms
    detok_ms = last.compute_ns * ms
    calls = last.executions / requests
    critical_detok = detok_ms / calls if calls > 1 else detok_ms  # streaming: the last call
    measured = {
        "queueing": (
            queued * ms,
            "Triton queues: " + ", ".join(f"{n} {ns * ms:.1f}" for n, ns in queues.items() if ns),
        ),
        "tokenization": (first.compute_ns * ms, _batching(first)),
        "detokenization": (
            critical_detok,
            f"{detok_ms:.1f} ms in {calls:.1f} calls per request; only the last is not "
            "overlapped with the engine"
            if calls > 1
            else "one call after the engine",
        ),
    }
    engine_ms = max(0.0, total_ms - sum(value for value, _ in measured.values()))
    rows = [
        ("queueing", *measured["queueing"]),
        ("tokenization", *measured["tokenization"]),
        ("engine", engine_ms, "prefill + decode + wait for a batch slot (the remainder)"),
        ("detokenization", *measured["detokenization"]),
    ]
    return Breakdown(
        ensemble=ensemble,
        requests=requests,
        failures=total.count("fail"),
        total_ms=total_ms,
        stages=[Stage(n, v, 100 * v / total_ms if total_ms else 0.0, d) for n, v, d in rows],
        overlapped_ms=detok_ms - critical_detok,
    )


def _batching(times: ModelTimes) -> str:
    if times.executions <= 0:
        return ""
    return f"avg batch {times.inferences / times.executions:.2f} over {times.executions} executions"


def format_breakdown(breakdown: Breakdown | None) -> str:
    """A Markdown table (it reads fine in a terminal too)."""
    if breakdown is None:
        return "no completed ensemble requests in this window: nothing to break down"
    lines = [
        f"per-stage latency of {breakdown.requests} `{breakdown.ensemble}` requests "
        f"({breakdown.failures} failed), server side, per request:",
        "",
        "| stage | ms | % of total | note |",
        "|---|---:|---:|---|",
    ]
    for stage in breakdown.stages:
        lines.append(f"| {stage.name} | {stage.ms:.1f} | {stage.pct:.1f}% | {stage.detail} |")
    lines.append(f"| **total** | **{breakdown.total_ms:.1f}** | 100% | ensemble request time |")
    return "\n".join(lines)


class TritonStats:
    """Reads statistics and the ensemble's step list over Triton's HTTP API."""

    def __init__(self, http_url: str, timeout_s: float = 10.0) -> None:
        self.http_url = http_url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str) -> dict[str, Any]:
        try:
            response = httpx.get(f"{self.http_url}{path}", timeout=self.timeout_s)
        except httpx.HTTPError as err:
            raise EdgectlError(f"cannot reach {self.http_url}: {err}") from None
        if response.status_code != 200:
            raise EdgectlError(f"GET {path}: HTTP {response.status_code}: {response.text[:200]}")
        return response.json()

    def snapshot(self) -> dict[str, ModelTimes]:
        return parse_model_stats(self._get("/v2/models/stats"))

    def ensemble_steps(self, ensemble: str) -> list[str]:
        config = self._get(f"/v2/models/{ensemble}/config")
        steps = config.get("ensemble_scheduling", {}).get("step", [])
        if not steps:
            raise EdgectlError(f"model {ensemble} is not an ensemble; no stages to break down")
        return [step["model_name"] for step in steps]

    def breakdown(
        self, ensemble: str, before: dict[str, ModelTimes] | None = None
    ) -> Breakdown | None:
        """Since ``before`` (a snapshot), or since the server started."""
        now = self.snapshot()
        times = diff_stats(now, before) if before is not None else now
        return compute_breakdown(times, ensemble, self.ensemble_steps(ensemble))
