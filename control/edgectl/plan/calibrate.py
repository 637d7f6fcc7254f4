"""``--calibrate``: measure this machine, save it as a device, predict the embedded model.

What is measured (in well under a minute):

* memory bandwidth: a multi-threaded numpy copy of arrays far larger than the caches;
* matmul throughput at the engine's precision: the real CPU engine (OpenVINO GenAI,
  f32 inference precision over the recipe's compressed weights) prefilling prompts of
  known FLOPs; numpy's f32 GEMM is recorded beside it for reference;
* cache sizes, from sysfs;
* the per-step overhead: on a CPU, single-stream decode is dominated by per-operation
  cost (graph dispatch, sampling, streaming), not by bandwidth, so the engine's decode
  step is timed at two batch sizes and what the roofline does not explain becomes
  ``overheads.step_s`` (every step) and ``overheads.per_sequence_s`` (every sequence).
  The engine is timed in this process, or, with a running server, through short real
  generations of the served ensemble (``--through-server``): on a busy machine the two
  differ (measured here: the in-process engine decoded ~2x slower than the served one,
  interleaved, at load average ~10 on 2 cores; in-process, one OpenVINO thread beat
  two, which points at thread synchronisation under contention).

The device is written to the user's cache (``<cache>/plan/devices.yaml``) as ``local``.
TDP and price cannot be measured on a VM: they are assumptions, labelled as such.
"""

from __future__ import annotations

import itertools
import os
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgectl.build.recipe import Recipe
from edgectl.errors import EdgectlError
from edgectl.loadtest.prompts import synthetic_prompt
from edgectl.plan import catalog, memory, performance
from edgectl.plan.catalog import Device, Efficiency, Overheads, Source
from edgectl.plan.shapes import ModelShape
from edgectl.plan.sizing import Plan, Workload, make_plan
from edgectl.runtime.emission import Emission

PROMPT_TOKENS = 128
NEW_TOKENS = 32
BATCHES = (1, 8)
LEVELS = (1, 4, 8, 16)
WARMUP_ROUNDS = 4
WATTS_PER_CORE = 10.0  # assumption: a share of a server CPU's TDP
USD_PER_CORE_HOUR = 0.02  # assumption: on-demand vCPU price


@dataclass
class Timings:
    """One request's clock: submitted, first token, every later token."""

    start: float
    tokens: list[float] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None

    def send(self, emission: Emission) -> None:
        now = time.monotonic()
        self.tokens.extend([now] * len(emission.ids[0]))
        if emission.final:
            self.done.set()

    def fail(self, message: str) -> None:
        self.error = message
        self.done.set()

    def cancelled(self) -> bool:
        return False

    @property
    def step_s(self) -> float:
        """Mean decode step: first to last token over the NEW_TOKENS - 1 steps between
        (counted, not the chunks, which may merge tokens)."""
        return (self.tokens[-1] - self.tokens[0]) / (NEW_TOKENS - 1)


def measure_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """GB/s of a copy (read + write) split over every core, best of ``repeats``."""
    import numpy as np

    threads = os.cpu_count() or 1
    chunk = megabytes * 2**20 // 8 // threads
    sources = [np.ones(chunk) for _ in range(threads)]
    targets = [np.empty(chunk) for _ in range(threads)]
    best = float("inf")
    for _ in range(repeats):
        workers = [
            threading.Thread(target=np.copyto, args=(t, s))
            for t, s in zip(targets, sources, strict=True)
        ]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        best = min(best, time.perf_counter() - started)
    return 2 * chunk * 8 * threads / best / 1e9


def measure_numpy_gemm(size: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of numpy's f32 GEMM (a reference; the engine's own rate is what predicts)."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def cache_sizes() -> dict[str, float]:
    """Data/unified cache sizes in MB per level, from sysfs (empty where it is hidden)."""
    found: dict[str, float] = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = (index / "level").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        scale = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}.get(size[-1], 1 / 2**20)
        found[f"L{level}"] = float(size.rstrip("KMG")) * scale
    return found


@dataclass(frozen=True)
class EngineRun:
    prefill_s: float  # median TTFT of single requests (no prefix cache)
    step_s: dict[int, float]  # batch -> median decode step


Submit = Callable[[str, Timings], None]  # start one request streaming into its Timings


def time_requests(submit: Submit, encode, decode, progress: Callable[[str], None]) -> EngineRun:
    """Warm up, then time fresh 128-token prompts: prefill alone, decode steps per batch."""
    rng = random.Random(7)

    def run(batch: int) -> list[Timings]:
        prompts = [synthetic_prompt(encode, decode, PROMPT_TOKENS, rng) for _ in range(batch)]
        timings = [Timings(time.monotonic()) for _ in range(batch)]
        for prompt, timing in zip(prompts, timings, strict=True):
            timing.start = time.monotonic()
            submit(prompt, timing)
        for timing in timings:
            if not timing.done.wait(300) or timing.error or not timing.tokens:
                raise EdgectlError(f"calibration request failed: {timing.error or 'no answer'}")
        return timings

    # A fresh pipeline runs its first few dozen requests several times slower (its kernels
    # meet each new shape once), so warm it over the batches measured below.
    progress(f"warming the engine up ({WARMUP_ROUNDS} rounds of {max(BATCHES)} requests)")
    for _ in range(WARMUP_ROUNDS):
        run(max(BATCHES))
    singles = [t for _ in range(4) for t in run(1)]
    steps = {1: statistics.median(t.step_s for t in singles)}
    for batch in BATCHES[1:]:
        progress(f"timing decode steps at batch {batch}")
        steps[batch] = statistics.median(t.step_s for t in run(batch))
    prefill = statistics.median(t.tokens[0] - t.start for t in singles)
    return EngineRun(prefill_s=prefill, step_s=steps)


def measure_engine(artifact: Path, progress: Callable[[str], None]) -> EngineRun:
    """Time the real CPU engine in this process (OpenVINO GenAI, prefix cache off)."""
    from edgectl.config import EngineConfig
    from edgectl.runtime.contract import SamplingParams
    from edgectl.runtime.engine import EngineLimits, EngineRequest
    from edgectl.runtime.manifest import read_manifest
    from edgectl.runtime.openvino_engine import SchedulerSettings, build_engine, load_tokenizer

    if not (artifact / "openvino_model.xml").is_file():
        raise EdgectlError(
            f"--calibrate times the real engine: {artifact} is not built "
            "(run `edgectl build RECIPE` first)"
        )
    tokenizer = load_tokenizer(artifact)
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False).ids  # noqa: E731
    unused = tokenizer.get_vocab_size() - 1
    defaults = EngineConfig()
    progress("loading the CPU engine")
    engine = build_engine(
        artifact,
        EngineLimits(defaults.max_input_len, defaults.max_output_len),
        default_end_id=read_manifest(artifact).serving.end_id,
        settings=SchedulerSettings(
            max_num_seqs=defaults.max_num_seqs,
            max_num_batched_tokens=defaults.max_num_tokens,
            kv_cache_gb=defaults.kv_cache_gb,
            enable_prefix_caching=False,
        ),
    )
    engine.start()

    def submit(text: str, timing: Timings) -> None:
        params = SamplingParams(max_new_tokens=NEW_TOKENS, end_id=unused, streaming=True)
        engine.submit(EngineRequest(encode(text), params, timing))

    try:
        return time_requests(submit, encode, tokenizer.decode, progress)
    finally:
        engine.shutdown()


class _Stream:
    """One gRPC stream to the served ensemble, opened once and reused, so a request's TTFT
    holds no connection setup (as a load test's long-lived users see it)."""

    def __init__(self, url: str, model: str) -> None:
        import tritonclient.grpc as grpcclient

        self.model = model
        self.timing = Timings(0.0)
        self.client = grpcclient.InferenceServerClient(url)
        self.client.start_stream(callback=self._on_response)

    def _on_response(self, result, error) -> None:
        if error is not None:
            self.timing.fail(error.message())
            return
        message = result.get_response()
        if message.outputs:
            self.timing.tokens.append(time.monotonic())
        final = message.parameters.get("triton_final_response")
        if final is not None and final.bool_param:
            self.timing.done.set()

    def send(self, inputs: dict, timing: Timings) -> None:
        from edgectl.client import grpc_inputs

        self.timing = timing
        timing.start = time.monotonic()
        self.client.async_stream_infer(
            self.model, grpc_inputs(inputs), enable_empty_final_response=True
        )

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


def measure_server(grpc_url: str, model: str, artifact: Path, progress) -> EngineRun:
    """Time short real generations through a running server (gRPC streaming, the ensemble):
    the engine as it is served, with the server's own process and scheduling."""
    from edgectl.client import GenerateRequest
    from edgectl.runtime.openvino_engine import load_tokenizer

    tokenizer = load_tokenizer(artifact)
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False).ids  # noqa: E731
    unused = tokenizer.get_vocab_size() - 1
    progress(f"timing the served engine through {model} at {grpc_url}")
    streams = [_Stream(grpc_url, model) for _ in range(max(BATCHES))]
    turn = itertools.cycle(streams)  # a run of at most max(BATCHES) requests: one each

    def submit(text: str, timing: Timings) -> None:
        request = GenerateRequest(text, max_tokens=NEW_TOKENS, stream=True, end_id=unused)
        next(turn).send(request.inputs(), timing)

    try:
        return time_requests(submit, encode, tokenizer.decode, progress)
    finally:
        for stream in streams:
            stream.close()


def fit_device(
    shape: ModelShape,
    recipe: Recipe,
    bandwidth_gbs: float,
    run: EngineRun,
    extra: dict,
) -> Device:
    """A device whose roofline + overheads reproduce the engine's timings."""
    weights = memory.weight_bytes(shape, recipe, "cpu")
    work = performance.Workload.of(
        shape, weights, memory.kv_bytes_per_token(shape, recipe.precision.kv_cache)
    )
    rate = performance.prefill_flops(work, PROMPT_TOKENS) / run.prefill_s  # on a full prompt
    hw = performance.Hardware(
        bandwidth_gbs * 1e9, dict.fromkeys(weights.matmul, rate) | {"fp16": rate}, 0.0, 0.0, 0.0
    )
    position = PROMPT_TOKENS + NEW_TOKENS / 2
    leftover = {
        batch: max(0.0, measured - performance.decode_step(work, hw, batch, position).seconds)
        for batch, measured in run.step_s.items()
    }
    low, high = min(leftover), max(leftover)
    per_sequence = max(0.0, (leftover[high] - leftover[low]) / (high - low))
    step = max(0.0, leftover[low] - low * per_sequence)
    import psutil

    cores = os.cpu_count() or 1
    return Device(
        title=f"this machine: {cores} cores, calibrated {time.strftime('%Y-%m-%d %H:%M')}",
        kind="cpu",
        memory_gb=round(psutil.virtual_memory().total / 1e9, 1),
        bandwidth_gbs=round(bandwidth_gbs, 2),
        tflops={"fp32": round(rate / 1e12, 5)},
        math_format="fp32",
        tdp_w=WATTS_PER_CORE * cores,
        price_per_hour=USD_PER_CORE_HOUR * cores,
        efficiency=Efficiency(bandwidth=1.0, compute=1.0),
        overheads=Overheads(step_s=round(step, 6), per_sequence_s=round(per_sequence, 6)),
        runtime_gb=0.9,  # tritonserver + its Python stubs, idle (measured RSS)
        cache_mb=cache_sizes(),
        source=Source(
            document=(
                "measured by edgectl plan --calibrate: copy bandwidth, the CPU engine's prefill "
                f"rate and decode steps at batch {', '.join(map(str, BATCHES))} "
                f"(numpy f32 GEMM {extra['numpy_gemm_gflops']:.0f} GFLOP/s for reference); "
                f"TDP ({WATTS_PER_CORE:g} W/core) and price (${USD_PER_CORE_HOUR}/core-hour) "
                "are assumptions"
            ),
            version=time.strftime("%Y-%m-%d"),
            figures="measured",
        ),
    )


def calibrate_here(
    recipe: Recipe,
    shape: ModelShape,
    name: str,
    progress: Callable[[str], None],
    grpc_url: str | None = None,
    model: str = "ensemble",
) -> tuple[str, Device]:
    """Measure, fit, save. With ``grpc_url`` the engine timings come from that server."""
    from edgectl.build.builder import artifact_dir

    started = time.monotonic()
    # The engine first: numpy's BLAS threads keep spinning for a while after a GEMM and
    # would steal the cores the engine's threads need.
    artifact = artifact_dir(recipe)
    run = (
        measure_server(grpc_url, model, artifact, progress)
        if grpc_url
        else measure_engine(artifact, progress)
    )
    progress("measuring memory bandwidth")
    bandwidth = measure_bandwidth()
    progress("measuring numpy's f32 GEMM")
    gemm = measure_numpy_gemm()
    device = fit_device(shape, recipe, bandwidth, run, {"numpy_gemm_gflops": gemm})
    path = catalog.save_calibrated(name, device)
    progress(
        f"calibrated in {time.monotonic() - started:.0f} s: bandwidth {bandwidth:.1f} GB/s, "
        f"engine prefill {run.prefill_s * 1e3:.1f} ms for {PROMPT_TOKENS} tokens "
        f"({device.tflops['fp32'] * 1e3:.0f} GFLOP/s), decode step "
        + ", ".join(f"{s * 1e3:.1f} ms at batch {b}" for b, s in run.step_s.items())
        + f"; overheads {device.overheads.step_s * 1e3:.2f} ms/step + "
        f"{device.overheads.per_sequence_s * 1e3:.2f} ms/sequence; saved as '{name}' in {path}"
    )
    return name, device


def _plan_at(
    recipe: Recipe,
    shape: ModelShape,
    name: str,
    device: Device,
    prompt: int,
    output: int,
    concurrency: int,
) -> Plan:
    work = Workload(prompt + output, prompt, output, concurrency)
    return make_plan(recipe, name, device, shape, work)


def predictions(
    recipe: Recipe,
    shape: ModelShape,
    name: str,
    device: Device,
    prompt: int = PROMPT_TOKENS,
    output: int = 64,
    levels: tuple[int, ...] = LEVELS,
) -> list[dict]:
    """Output tok/s (prefills included) and TTFT at each concurrency."""
    rows = []
    for level in levels:
        plan = _plan_at(recipe, shape, name, device, prompt, output, level)
        rows.append(
            {
                "concurrency": level,
                "predicted tok/s": round(plan.value("output_tok_s"), 1),
                "predicted TTFT ms": round(plan.value("ttft_ms"), 1),
            }
        )
    return rows


def compare_with_run(
    recipe: Recipe, shape: ModelShape, name: str, device: Device, run_dir: Path
) -> list[dict]:
    """Predicted vs measured per load level of an ``edgectl loadtest`` run, with the error."""
    from edgectl.loadtest.summary import SUMMARY_FILE, read_summary

    if not (run_dir / SUMMARY_FILE).is_file():
        raise EdgectlError(f"--against {run_dir}: no {SUMMARY_FILE} (an edgectl loadtest run?)")
    summary = read_summary(run_dir)
    rows = []
    for step in summary.steps:
        m = step.metrics
        if not (m.output_token_throughput and m.time_to_first_token and m.input_sequence_length):
            continue
        prompt = round(m.input_sequence_length.avg)
        output = round(m.output_sequence_length.avg) if m.output_sequence_length else 64
        plan = _plan_at(recipe, shape, name, device, prompt, output, step.users)
        predicted_tps = plan.value("output_tok_s")
        predicted_ttft = plan.value("ttft_ms")
        measured_tps = m.output_token_throughput.avg
        measured_ttft = m.time_to_first_token.p50
        rows.append(
            {
                "step": step.step,
                "concurrency": step.users,
                "predicted tok/s": round(predicted_tps, 1),
                "measured tok/s": round(measured_tps, 1),
                "tok/s error %": round(error_pct(predicted_tps, measured_tps), 1),
                "predicted TTFT ms": round(predicted_ttft, 1),
                "measured TTFT p50 ms": round(measured_ttft, 1),
                "TTFT error %": round(error_pct(predicted_ttft, measured_ttft), 1),
            }
        )
    if not rows:
        raise EdgectlError(f"--against {run_dir}: no step with throughput and TTFT to compare")
    return rows


def error_pct(predicted: float, measured: float) -> float:
    """(predicted - measured) / measured, in percent."""
    return (predicted - measured) / measured * 100
