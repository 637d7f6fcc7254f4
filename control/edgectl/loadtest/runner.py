"""``edgectl loadtest``: run a load profile with locust and write a run directory.

Each step (one concurrency or request rate, on one server) is a headless locust
process (an argument list, never a shell) bounded by users, spawn rate, duration and
a hard request cap.  Around it edgectl snapshots Triton's per-model statistics (for
the per-stage breakdown) and samples the server's RSS.  Profiles with ``variants``
deploy one local server per variant and interleave their steps, so the comparison
is side by side on the same (noisy) machine.

Run directory: ``records.jsonl`` (one line per request), ``summary.json``,
``report.md``, PNG plots, and ``steps/<step>/`` (spec, locust JSON and log).
"""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from edgectl.config import EdgectlConfig, format_validation_error
from edgectl.errors import EdgectlError
from edgectl.loadtest.breakdown import (
    ModelTimes,
    TritonStats,
    add_stats,
    compute_breakdown,
    diff_stats,
)
from edgectl.loadtest.metrics import RequestRecord, count_output_tokens, summarize
from edgectl.loadtest.profile import LoadProfile, StepSpec
from edgectl.loadtest.prompts import Encode, PromptTokenizer, prompt_pool
from edgectl.loadtest.summary import RunSummary, ServerRef, StepSummary, write_summary
from edgectl.progress import Progress
from edgectl.resources import loadtest_dir
from edgectl.runtime.processes import RssSampler

LOADTEST_DIR = loadtest_dir()
# Runs land under the working directory (the shipped folder may be read-only).
RESULTS_DIR = Path("loadtest") / "results"
LOCUSTFILES = {
    "grpc": "locustfile_grpc.py",
    "http": "locustfile_http.py",
    "openai": "locustfile_openai.py",  # the OpenAI-compatible gateway
}
LOCUST_STARTUP_S = 60  # allowance on top of duration + stop timeout before the step is killed


@dataclass(frozen=True)
class Target:
    """Where requests go: ``grpc://host:port``, ``http://host:port`` or ``openai://host:port``."""

    protocol: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in LOCUSTFILES or not parts.hostname or parts.port is None:
            raise EdgectlError(
                "--target must look like grpc://127.0.0.1:8001, http://127.0.0.1:8000 or "
                f"openai://127.0.0.1:9000, got {url!r}"
            )
        return cls(parts.scheme, parts.hostname, parts.port)

    @property
    def user_url(self) -> str:
        """What the locust user connects to."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.protocol == "grpc" else f"http://{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}://{self.user_url.removeprefix('http://')}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_target(target: Target, allow_remote: bool) -> None:
    """Load tests stay on this machine unless the operator says otherwise."""
    if not allow_remote and not is_loopback(target.host):
        raise EdgectlError(
            f"refusing to load-test {target.host}: only loopback targets (127.0.0.0/8, "
            "localhost, ::1) unless --allow-remote is given"
        )


@dataclass(frozen=True)
class ServerHandle:
    """A server under test: where to send load, where its statistics are, its pid."""

    label: str
    target: Target
    stats_url: str | None  # Triton HTTP base URL for /v2/models/stats
    pid: int | None  # for the RSS of server + stubs; None when not ours to see


def local_handle(config: EdgectlConfig, target_url: str | None, allow_remote: bool) -> ServerHandle:
    """The server behind ``target_url`` (default: the configured local server)."""
    from edgectl.deploy.server import LocalTriton

    server = config.server
    if target_url is None:
        port = server.grpc_port if config.client.protocol == "grpc" else server.http_port
        target_url = f"{config.client.protocol}://{server.host}:{port}"
    target = Target.parse(target_url)
    check_target(target, allow_remote)
    state = LocalTriton(server).running()
    mine = state is not None and target.port in (state.http_port, state.grpc_port)
    if target.protocol == "http":
        stats_url = f"http://{target.user_url.removeprefix('http://')}"
    elif target.protocol == "openai":  # the gateway in front of the local (or configured) server
        stats_url = state.http_url if state else f"http://{target.host}:{server.http_port}"
        mine = state is not None
    else:  # Triton does not tell its HTTP port over gRPC: the local server's, or the config's
        stats_url = state.http_url if mine and state else f"http://{target.host}:{server.http_port}"
    return ServerHandle("server", target, stats_url, state.pid if mine and state else None)


# -- one step ----------------------------------------------------------------------------
@dataclass
class RunContext:
    profile: LoadProfile
    model: str
    run_dir: Path
    prompts: list[dict[str, object]]
    encode: Encode
    progress: Progress


def step_label(handle: ServerHandle, profile: LoadProfile, level: float, round_no: int) -> str:
    unit = "c" if profile.mode == "concurrency" else "r"
    rounds = f"-round{round_no}" if profile.rounds > 1 else ""
    return f"{step_safe(handle.label)}-{unit}{level:g}{rounds}"


@dataclass
class StepRun:
    """What one locust process measured on one server at one level, in one round."""

    label: str
    records: list[RequestRecord]
    rss_peak_mib: float | None
    stats_delta: dict[str, ModelTimes] | None  # Triton statistics of the step's window
    ensemble_steps: list[str] | None
    locust: dict[str, dict[str, int]]
    note: str | None = None


def run_step(ctx: RunContext, handle: ServerHandle, level: float, round_no: int) -> StepRun:
    """One headless locust process at one load level against one server."""
    profile = ctx.profile
    label = step_label(handle, profile, level, round_no)
    step_dir = ctx.run_dir / "steps" / label
    step_dir.mkdir(parents=True, exist_ok=True)
    raw_records = step_dir / "records.raw.jsonl"
    spec = StepSpec(
        step=label, model=ctx.model, url=handle.target.user_url, prompts=ctx.prompts,
        max_tokens=profile.output_tokens, end_id=profile.end_id, stream=profile.stream,
        apply_chat_template=profile.apply_chat_template,
        warmup_requests=profile.warmup_requests, max_requests=profile.max_requests,
        request_rate=None if profile.mode == "concurrency" else level,
        duration_s=profile.duration_s, request_timeout_s=profile.request_timeout_s,
        records_path=str(raw_records),
    )  # fmt: skip
    spec.save(step_dir / "spec.json")
    users = profile.users_at(level)
    ctx.progress(
        f"{label}: {users} users, {profile.duration_s}s measured or {profile.max_requests} "
        "requests, whichever comes first"
    )
    stats, before, note = _stats_before(handle, ctx.model)
    with RssSampler(handle.pid) as rss:
        locust = run_locust(
            LOADTEST_DIR / LOCUSTFILES[handle.target.protocol], step_dir, users,
            profile.spawn_rate or users, profile.duration_s, profile.request_timeout_s,
        )  # fmt: skip
    delta, steps = None, None
    if stats is not None and before is not None:
        try:
            delta = diff_stats(stats.snapshot(), before)
            steps = stats.ensemble_steps(ctx.model)
        except EdgectlError as err:
            delta, note = None, f"no breakdown: {err}"
    records = _finish_records(ctx, raw_records)
    return StepRun(label, records, rss.peak_mib, delta, steps, locust, note)


def combine(
    ctx: RunContext, handle: ServerHandle, level: float, runs: list[StepRun]
) -> StepSummary:
    """One summary step from every round of (server, level): pooled records and statistics."""
    records = [record for run in runs for record in run.records]
    peaks = [run.rss_peak_mib for run in runs if run.rss_peak_mib is not None]
    result: dict[str, Any] = {
        "variant": handle.label,
        "level": level,
        "users": ctx.profile.users_at(level),
        "step": runs[0].label if len(runs) == 1 else runs[0].label.rsplit("-round", 1)[0],
        "rounds": [run.label for run in runs],
        "metrics": summarize(records),
        "server_rss_mib": max(peaks) if peaks else None,
        "breakdown": _pooled_breakdown(ctx.model, runs),
        "locust": _pooled_counts([run.locust for run in runs]),
    }
    if ctx.profile.end_id is not None:  # fixed lengths: does the text really hold that many?
        texts = [r for r in records if r.ok and not r.warmup]
        result["retokenized_output_tokens_avg"] = (
            sum(len(ctx.encode(r.output_text)) for r in texts) / len(texts) if texts else None
        )
    notes = sorted({run.note for run in runs if run.note})
    if notes:
        result["note"] = " ".join(notes)
    return StepSummary.model_validate(result)


def _pooled_breakdown(model: str, runs: list[StepRun]) -> dict[str, Any] | None:
    deltas = [run.stats_delta for run in runs if run.stats_delta is not None]
    steps = next((run.ensemble_steps for run in runs if run.ensemble_steps), None)
    if not deltas or steps is None:
        return None
    pooled = deltas[0]
    for delta in deltas[1:]:
        pooled = add_stats(pooled, delta)
    breakdown = compute_breakdown(pooled, model, steps)
    return breakdown.to_json() if breakdown else None


def _pooled_counts(counts: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    pooled: dict[str, dict[str, int]] = {}
    for step in counts:
        for name, values in step.items():
            total = pooled.setdefault(name, {"requests": 0, "failures": 0})
            for key in total:
                total[key] += values[key]
    return pooled


def _stats_before(handle: ServerHandle, model: str):
    """A statistics snapshot before the step, or a note saying why there is none."""
    if handle.stats_url is None:
        return None, None, "no breakdown: server statistics URL unknown"
    stats = TritonStats(handle.stats_url)
    try:
        return stats, stats.snapshot(), None
    except EdgectlError as err:
        return None, None, f"no breakdown: {err}"


def _finish_records(ctx: RunContext, raw: Path) -> list[RequestRecord]:
    """Raw step records -> with output token counts, appended to the run's records.jsonl."""
    records = []
    if raw.is_file():
        for line in raw.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(RequestRecord.from_json(json.loads(line)))
    count_output_tokens(records, ctx.profile.end_id is not None, ctx.encode)
    with (ctx.run_dir / "records.jsonl").open("a", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record.to_json()) + "\n")
    raw.unlink(missing_ok=True)
    return records


def run_locust(
    locustfile: Path, step_dir: Path, users: int, spawn_rate: float, duration_s: int,
    stop_timeout_s: float,
) -> dict[str, Any]:  # fmt: skip
    """Headless locust as a subprocess; returns its own request/failure counts (JSON file)."""
    json_base = step_dir / "locust"  # locust appends ".json"
    command = [
        sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
        # -t is only a backstop: the measured phase (duration_s) starts after the warm-up.
        "-u", str(users), "-r", f"{spawn_rate:g}", "-t", f"{duration_s + int(stop_timeout_s)}s",
        "--stop-timeout", f"{stop_timeout_s:g}", "--json-file", str(json_base),
        "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "1",
        "--edgectl-spec", str(step_dir / "spec.json"),
    ]  # fmt: skip
    limit = duration_s + 2 * stop_timeout_s + LOCUST_STARTUP_S
    log_path = step_dir / "locust.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - an argument list, never a shell
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=step_dir, start_new_session=True,
        )  # fmt: skip
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise EdgectlError(
                f"locust ran past {limit:g}s and was killed; see {log_path}"
            ) from None
    json_path = json_base.with_suffix(".json")
    if code not in (0, 1) or not json_path.is_file():
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise EdgectlError(f"locust exited with code {code}:\n" + "\n".join(tail))
    entries = json.loads(json_path.read_text(encoding="utf-8"))
    return {
        entry["name"]: {"requests": entry["num_requests"], "failures": entry["num_failures"]}
        for entry in entries
    }


# -- variants: one local server each -----------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def variant_config(base: EdgectlConfig, settings: dict[str, Any], workdir: Path) -> EdgectlConfig:
    """``base`` with the variant's dotted keys, on free loopback ports in its own work dir."""
    data = base.model_dump(mode="json")
    settings = {
        **settings,
        "server.host": "127.0.0.1",
        "server.workdir": str(workdir),
        "server.http_port": free_port(),
        "server.grpc_port": free_port(),
        "server.metrics_port": free_port(),
        "openai.enabled": False,  # variants are measured on Triton's own endpoints
    }
    for key, value in settings.items():
        section, _, name = key.partition(".")
        data.setdefault(section, {})[name] = value
    try:
        return EdgectlConfig.model_validate(data)
    except ValidationError as err:
        raise EdgectlError(format_validation_error(err, "variant configuration")) from None


@contextmanager
def deployed_variants(
    base: EdgectlConfig, profile: LoadProfile, run_dir: Path, progress: Progress
) -> Iterator[list[ServerHandle]]:
    """Start one local server per variant (all up at once), stop them all afterwards."""
    from edgectl.deploy.local import deploy_local
    from edgectl.deploy.server import LocalTriton

    handles = []
    with ExitStack() as stack:
        for variant in profile.variants:
            config = variant_config(
                base, variant.set, run_dir / "servers" / step_safe(variant.name)
            )
            settings = ", ".join(variant.overrides()) or "defaults"
            progress(f"deploying variant {variant.name!r} ({settings})")
            stack.callback(LocalTriton(config.server).stop)
            state = deploy_local(config, progress)
            target = Target(base.client.protocol, state.host, state.grpc_port)
            if target.protocol == "http":
                target = Target("http", state.host, state.http_port)
            handles.append(ServerHandle(variant.name, target, state.http_url, state.pid))
        yield handles


def step_safe(name: str) -> str:
    """A variant name as a folder name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)


# -- the run -------------------------------------------------------------------------------
def default_run_dir(profile: LoadProfile) -> Path:
    return RESULTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{profile.name}"


def prepare_run_dir(run_dir: Path) -> Path:
    """An absolute, new or empty run directory (checked before any server is deployed)."""
    run_dir = run_dir.resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise EdgectlError(f"run directory {run_dir} is not empty; pick another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def run_profile(
    profile: LoadProfile,
    handles: list[ServerHandle],
    model: str,
    run_dir: Path,
    tokenizer: PromptTokenizer,
    progress: Progress = lambda message: None,
) -> RunSummary:
    """Every level on every server (variants interleaved per level); writes the run dir."""
    from edgectl.loadtest.report import write_report

    run_dir = run_dir.resolve()  # locust runs in each step's folder
    if any((run_dir / name).exists() for name in ("records.jsonl", "summary.json")):
        raise EdgectlError(f"run directory {run_dir} already holds a run; pick another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    if profile.end_id == "unused":  # fixed lengths with an id this model never emits
        profile = profile.model_copy(update={"end_id": tokenizer.unused_id})
    encode, decode = tokenizer.encode, tokenizer.decode
    prompts = prompt_pool(encode, decode, profile.prompt_pool, profile.input_tokens, profile.seed)
    ctx = RunContext(profile, model, run_dir, prompts, encode, progress)
    summary = RunSummary(
        profile=profile.model_dump(mode="json"),
        model=model,
        servers=[ServerRef(variant=h.label, target=str(h.target), pid=h.pid) for h in handles],
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        machine={"cpus": os.cpu_count(), "platform": platform.platform()},
    )
    runs: dict[tuple[str, float], list[StepRun]] = {}
    for round_no in range(1, profile.rounds + 1):  # rounds x levels x servers, interleaved
        for level in profile.levels:
            for handle in handles:
                runs.setdefault((handle.label, level), []).append(
                    run_step(ctx, handle, level, round_no)
                )
    for level in profile.levels:
        for handle in handles:
            summary.steps.append(combine(ctx, handle, level, runs[(handle.label, level)]))
    write_summary(run_dir, summary)
    write_report(summary.as_json(), run_dir)
    return summary


def run(
    config: EdgectlConfig,
    profile_path: Path,
    target_url: str | None,
    model: str | None,
    out: Path | None,
    tokenizer_path: Path | None,
    allow_remote: bool,
    progress: Progress,
) -> tuple[Path, RunSummary]:
    """What ``edgectl loadtest`` does: against a target, or against deployed variants."""
    from edgectl.loadtest.profile import load_profile
    from edgectl.loadtest.prompts import load_tokenizer

    profile = load_profile(profile_path)
    if tokenizer_path is None:
        from edgectl.deploy.artifacts import served_model

        tokenizer_path = served_model(config).tokenizer_dir
    tokenizer = load_tokenizer(tokenizer_path)
    run_dir = prepare_run_dir(out or default_run_dir(profile))
    model = model or config.model.name
    if profile.variants:
        if target_url is not None:
            raise EdgectlError(
                f"profile {profile.name} has variants: edgectl deploys one local server per "
                "variant, so --target does not apply"
            )
        with deployed_variants(config, profile, run_dir, progress) as handles:
            return run_dir, run_profile(profile, handles, model, run_dir, tokenizer, progress)
    handle = local_handle(config, target_url, allow_remote)
    return run_dir, run_profile(profile, [handle], model, run_dir, tokenizer, progress)
