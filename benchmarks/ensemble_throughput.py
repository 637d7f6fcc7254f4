"""Ensemble vs bare engine, side by side in one run.

Measures, through the full ensemble over gRPC streaming, aggregate output
tokens/s at concurrency 1, 4, 8 and 16 and TTFT p50, and the bare CPU engine
(the same ContinuousBatchingEngine, in-process, no Triton) at concurrency 1
before and after the server phases, then at the top concurrency (the engine's
own scaling ceiling on this machine).  Every request generates exactly
--max-tokens tokens (an end id the model never emits), so token counts are exact.

    .venv/bin/python benchmarks/ensemble_throughput.py [--max-tokens 128] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgectl.build.builder import build
from edgectl.build.recipe import load_recipe
from edgectl.client import GenerateRequest, TritonClient
from edgectl.config import EdgectlConfig
from edgectl.deploy.local import deploy_local
from edgectl.deploy.server import LocalTriton
from edgectl.runtime.contract import SamplingParams
from edgectl.runtime.emission import Emission
from edgectl.runtime.engine import EngineLimits, EngineRequest
from edgectl.runtime.manifest import read_manifest
from edgectl.runtime.openvino_engine import SchedulerSettings, build_engine, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
UNUSED_END_ID = 49151
PROMPT = "Write a detailed essay about the history of lighthouses and the people who kept them."


@dataclass
class Timing:
    start: float
    first: float = 0.0
    end: float = 0.0


@dataclass
class PhaseResult:
    name: str
    concurrency: int
    tokens: int
    seconds: float
    ttfts: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def ttft_p50_ms(self) -> float:
        return statistics.median(self.ttfts) * 1000


def run_phase(
    name: str, concurrency: int, per_worker: int, max_tokens: int, one: Callable[[], Timing]
) -> PhaseResult:
    """``concurrency`` closed-loop workers, each sending ``per_worker`` requests back to back."""
    timings: list[Timing] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(per_worker):
            timing = one()
            with lock:
                timings.append(timing)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    tokens = len(timings) * max_tokens
    return PhaseResult(name, concurrency, tokens, seconds, [t.first - t.start for t in timings])


def ensemble_request(client: TritonClient, max_tokens: int) -> Callable[[], Timing]:
    request = GenerateRequest(PROMPT, max_tokens=max_tokens, stream=True, end_id=UNUSED_END_ID)

    def one() -> Timing:
        timing = Timing(time.monotonic())
        for _ in client.generate("ensemble", request, "grpc"):
            if not timing.first:
                timing.first = time.monotonic()
        timing.end = time.monotonic()
        return timing

    return one


class _Sink:
    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self.done = threading.Event()
        self.error: str | None = None

    def send(self, emission: Emission) -> None:
        if emission.ids[0] and not self.timing.first:
            self.timing.first = time.monotonic()
        if emission.final:
            self.timing.end = time.monotonic()
            self.done.set()

    def fail(self, message: str) -> None:
        self.error = message
        self.done.set()

    def cancelled(self) -> bool:
        return False


def bare_engine_phase(
    artifact: Path, config: EdgectlConfig, max_tokens: int, concurrency: int, per_worker: int
) -> PhaseResult:
    manifest = read_manifest(artifact)
    engine_cfg = config.engine
    engine = build_engine(
        artifact,
        EngineLimits(engine_cfg.max_input_len, engine_cfg.max_output_len),
        default_end_id=manifest.serving.end_id,
        settings=SchedulerSettings(
            max_num_seqs=engine_cfg.max_num_seqs,
            max_num_batched_tokens=engine_cfg.max_num_tokens,
            kv_cache_gb=engine_cfg.kv_cache_gb,
            enable_prefix_caching=engine_cfg.enable_kv_cache_reuse,
        ),
    )
    engine.start()
    ids = load_tokenizer(artifact).encode(PROMPT, add_special_tokens=False).ids

    def one() -> Timing:
        sink = _Sink(Timing(time.monotonic()))
        params = SamplingParams(max_new_tokens=max_tokens, end_id=UNUSED_END_ID, streaming=True)
        engine.submit(EngineRequest(list(ids), params, sink))
        sink.done.wait(600)
        if sink.error:
            raise RuntimeError(sink.error)
        return sink.timing

    try:
        one()  # warm-up
        return run_phase("bare engine", concurrency, per_worker, max_tokens, one)
    finally:
        engine.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    artifact = build(load_recipe(ROOT / "build" / "smollm2-135m-int8.yaml")).artifact
    workdir = Path(tempfile.mkdtemp(prefix="edgectl-bench-"))
    config = EdgectlConfig.model_validate(
        {
            "server": {"workdir": str(workdir), "http_port": 18000, "grpc_port": 18001,
                       "metrics_port": 18002},
            "engine": {"max_num_seqs": max(args.concurrency)},
            "model": {"artifact": str(artifact)},
        }
    )  # fmt: skip
    results = [bare_engine_phase(artifact, config, args.max_tokens, 1, 3)]
    deploy_local(config, progress=print)
    try:
        client = TritonClient(
            f"http://127.0.0.1:{config.server.http_port}", f"127.0.0.1:{config.server.grpc_port}"
        )
        one = ensemble_request(client, args.max_tokens)
        one()  # warm-up
        for concurrency in args.concurrency:
            per_worker = 3 if concurrency == 1 else 2
            results.append(run_phase("ensemble", concurrency, per_worker, args.max_tokens, one))
            print(f"ensemble c={concurrency}: {results[-1].tokens_per_s:.1f} tok/s")
    finally:
        LocalTriton(config.server).stop()
    results.append(bare_engine_phase(artifact, config, args.max_tokens, 1, 3))
    # The engine's own ceiling at the top concurrency, for the scaling comparison.
    top = max(args.concurrency)
    results.append(bare_engine_phase(artifact, config, args.max_tokens, top, 2))
    report(results, args)


def report(results: list[PhaseResult], args: argparse.Namespace) -> None:
    bare = [r for r in results if r.name == "bare engine" and r.concurrency == 1]
    ensemble = {r.concurrency: r for r in results if r.name == "ensemble"}
    bare_tps = statistics.mean(r.tokens_per_s for r in bare)
    lines = [
        f"max_tokens={args.max_tokens}, gRPC streaming, embedded SmolLM2-135M INT8",
        "",
        "| path | concurrency | output tok/s | TTFT p50 (ms) | vs concurrency 1 |",
        "|---|---|---|---|---|",
    ]
    base = {"ensemble": ensemble[min(ensemble)].tokens_per_s, "bare engine": bare_tps}
    for r in results:
        scale = f"{r.tokens_per_s / base[r.name]:.2f}x"
        lines.append(
            f"| {r.name} | {r.concurrency} | {r.tokens_per_s:.1f} | {r.ttft_p50_ms:.0f} | {scale} |"
        )
    checks = {}
    if 1 in ensemble and 16 in ensemble:
        checks["tok/s at 16 vs 1 >= 5x"] = ensemble[16].tokens_per_s / ensemble[1].tokens_per_s
    if 1 in ensemble:
        checks["ensemble/bare at 1 >= 0.90"] = ensemble[1].tokens_per_s / bare_tps
        checks["TTFT p50 at 1 <= 100 ms"] = ensemble[1].ttft_p50_ms
    limits = {"tok/s at 16 vs 1 >= 5x": (5.0, True), "ensemble/bare at 1 >= 0.90": (0.9, True),
              "TTFT p50 at 1 <= 100 ms": (100.0, False)}  # fmt: skip
    lines.append("")
    for name, value in checks.items():
        limit, at_least = limits[name]
        ok = value >= limit if at_least else value <= limit
        lines.append(f"- {name}: {value:.2f} -> {'PASS' if ok else 'FAIL'}")
    text = "\n".join(lines)
    print(text)
    out = args.out / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(text + "\n", encoding="utf-8")
    (out / "results.json").write_text(
        json.dumps([r.__dict__ | {"tokens_per_s": r.tokens_per_s} for r in results], indent=2),
        encoding="utf-8",
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
