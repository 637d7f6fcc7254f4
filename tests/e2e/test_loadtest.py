"""`edgectl loadtest` against the real server on loopback: short, bounded runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgectl.cli import cli
from edgectl.client import GenerateRequest
from edgectl.loadtest.profile import parse_profile
from edgectl.loadtest.prompts import load_tokenizer
from edgectl.loadtest.runner import ServerHandle, Target, run_profile

from .conftest import BOTH_MODES, MAX_OUTPUT_LEN, UNUSED_END_ID, LiveServer

pytestmark = pytest.mark.e2e

SHORT = {
    "input_tokens": 32,
    "output_tokens": 16,
    "end_id": UNUSED_END_ID,
    "duration_s": 3,
    "max_requests": 10,
    "warmup_requests": 1,
    "request_timeout_s": 30,
}


def handle(server: LiveServer, protocol: str) -> ServerHandle:
    state = server.state
    port = state.grpc_port if protocol == "grpc" else state.http_port
    return ServerHandle("server", Target(protocol, state.host, port), state.http_url, state.pid)


def run(server: LiveServer, tmp_path: Path, protocol: str, model: str = "ensemble", **profile):
    data = {"name": "e2e", **SHORT, **profile}
    summary = run_profile(
        parse_profile(data, "e2e"),
        [handle(server, protocol)],
        model,
        tmp_path / "run",
        load_tokenizer(Path(server.config.model.artifact)),
    )
    return summary.as_json()


def records(tmp_path: Path) -> list[dict]:
    lines = (tmp_path / "run" / "records.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_grpc_sweep_measures_every_metric(live_server: LiveServer, tmp_path: Path) -> None:
    summary = run(live_server, tmp_path, "grpc", concurrency=[1, 2])
    assert [step["level"] for step in summary["steps"]] == [1, 2]
    for step in summary["steps"]:
        metrics = step["metrics"]
        assert metrics["failure_count"] == 0
        assert 1 <= metrics["request_count"] <= SHORT["max_requests"] - SHORT["warmup_requests"]
        # locust's own JSON counted the same requests.
        assert step["locust"]["ensemble"] == {"requests": metrics["request_count"], "failures": 0}
        assert step["locust"]["ensemble (warm-up)"]["requests"] == 1
        for name in ("time_to_first_token", "inter_token_latency", "request_latency"):
            dist = metrics[name]
            assert 0 < dist["min"] <= dist["p50"] <= dist["p90"] <= dist["p99"] <= dist["max"]
        assert metrics["time_to_first_token"]["max"] <= metrics["request_latency"]["max"]
        assert metrics["output_sequence_length"]["min"] == SHORT["output_tokens"]
        assert metrics["output_sequence_length"]["max"] == SHORT["output_tokens"]
        assert metrics["input_sequence_length"]["avg"] == pytest.approx(32, abs=1)
        assert metrics["output_token_throughput"]["avg"] > 0
        assert metrics["request_throughput"]["avg"] > 0
        # The text really holds about max_tokens tokens (re-tokenizing can merge a few).
        assert step["retokenized_output_tokens_avg"] == pytest.approx(16, rel=0.25)
        assert step["server_rss_mib"] > 100  # server + stubs with the model loaded
        stages = {s["name"]: s["ms"] for s in step["breakdown"]["stages"]}
        assert stages["engine"] > stages["tokenization"] > 0
        assert step["breakdown"]["requests"] >= metrics["request_count"]
    for record in records(tmp_path):
        assert record["ok"] and record["error"] is None
        assert 0 < record["ttft_s"] <= record["latency_s"]
        assert record["output_tokens"] == SHORT["output_tokens"]
        assert len(record["itl_s"]) == record["responses"] - 1
    report = (tmp_path / "run" / "report.md").read_text()
    for section in ("## Latency", "## Throughput", "### Optimal batch size", "## Per-stage"):
        assert section in report
    for plot in ("latency_vs_load.png", "throughput_vs_load.png"):
        assert (tmp_path / "run" / plot).stat().st_size > 10_000


def test_non_streaming_grpc_run_in_unary_mode(unary_server: LiveServer, tmp_path: Path) -> None:
    """A non-streaming profile: whole results, so no time to first token is claimed."""
    summary = run(unary_server, tmp_path, "grpc", concurrency=[2], stream=False)
    [step] = summary["steps"]
    metrics = step["metrics"]
    assert metrics["failure_count"] == 0
    assert 1 <= metrics["request_count"] <= SHORT["max_requests"] - SHORT["warmup_requests"]
    assert metrics["output_sequence_length"]["min"] == SHORT["output_tokens"]
    assert metrics["output_sequence_length"]["max"] == SHORT["output_tokens"]
    assert metrics["output_token_throughput"]["avg"] > 0
    for record in records(tmp_path):
        assert record["ok"] and record["error"] is None
        assert record["responses"] == 1 and record["itl_s"] == []
        assert record["ttft_s"] is None and record["latency_s"] > 0
        assert record["output_tokens"] == SHORT["output_tokens"]


def server_overrides(live_server: LiveServer) -> list[str]:
    """CLI options that point edgectl at the session's server."""
    state = live_server.state
    return [
        "--set", f"server.workdir={live_server.config.server.workdir}",
        "--set", f"server.http_port={state.http_port}",
        "--set", f"server.grpc_port={state.grpc_port}",
        "--set", f"server.metrics_port={state.metrics_port}",
    ]  # fmt: skip


def test_cli_http_sse_run(live_server: LiveServer, tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(json.dumps({"name": "cli", **SHORT, "concurrency": [2]}))
    state = live_server.state
    result = CliRunner().invoke(
        cli,
        [
            *server_overrides(live_server),
            "--set", f"model.artifact={live_server.config.model.artifact}",
            "loadtest", "--profile", str(profile), "--out", str(tmp_path / "out"),
            "--target", f"http://127.0.0.1:{state.http_port}",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "server-c2" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    metrics = summary["steps"][0]["metrics"]
    assert metrics["failure_count"] == 0 and metrics["request_count"] >= 1
    assert metrics["time_to_first_token"]["p50"] < metrics["request_latency"]["p50"]
    assert summary["steps"][0]["server_rss_mib"] > 100  # the local server was recognised


@BOTH_MODES
@pytest.mark.parametrize(
    ("protocol", "model", "profile", "error"),
    [
        ("grpc", "no_such_model", {}, "unknown model"),
        ("http", "ensemble", {"output_tokens": MAX_OUTPUT_LEN + 1}, "max_tokens"),
    ],
    ids=["unknown-model", "max-tokens-over-limit"],
)
def test_rejected_requests_are_failures_not_crashes(
    server: LiveServer, tmp_path: Path, protocol: str, model: str, profile: dict, error: str
) -> None:
    stream = {} if server.decoupled else {"stream": False}
    summary = run(server, tmp_path, protocol, model=model, concurrency=[2], **profile, **stream)
    metrics = summary["steps"][0]["metrics"]
    assert metrics["request_count"] == 0
    assert metrics["failure_count"] == SHORT["max_requests"] - SHORT["warmup_requests"]
    assert metrics["time_to_first_token"] is None and metrics["output_token_throughput"] is None
    assert summary["steps"][0]["locust"][model]["failures"] == metrics["failure_count"]
    assert all(error in message for message in metrics["errors"])
    assert "## Failures" in (tmp_path / "run" / "report.md").read_text()


@BOTH_MODES
def test_status_breakdown(server: LiveServer) -> None:
    request = GenerateRequest("Hello", max_tokens=4, stream=server.decoupled, end_id=UNUSED_END_ID)
    assert list(server.client.generate("ensemble", request, "grpc"))
    result = CliRunner().invoke(
        cli,
        [
            *server_overrides(server),
            "status", "--breakdown",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for stage in ("queueing", "tokenization", "engine", "detokenization"):
        assert f"| {stage} |" in result.output
