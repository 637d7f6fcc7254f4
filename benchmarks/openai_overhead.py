"""The OpenAI gateway's overhead: one server, one load generator, both paths side by side.

Deploys one local server with its gateway, then runs ``loadtest/profiles/openai-overhead.yaml``
with two targets, Triton's gRPC stream (``grpc://``) and the gateway (``openai://``),
interleaved per level and round so both see the same machine noise.  Same prompts, the
same fixed output length (128 tokens: an end id the model never emits on gRPC,
``ignore_eos`` on the gateway).  Reports gateway/gRPC throughput and the TTFT the gateway
adds, per concurrency, against the targets (>= 97 %; <= 5 ms at concurrency 1), and the
gateway process's own CPU time per streamed token (what it takes from the engine on a
CPU-only machine, whatever else runs there).

    .venv/bin/python benchmarks/openai_overhead.py [--duration 30] [--rounds 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import psutil

from edgectl.build.builder import build
from edgectl.build.recipe import load_recipe
from edgectl.config import EdgectlConfig
from edgectl.deploy.artifacts import served_model
from edgectl.deploy.local import deploy_local, local_gateway, stop_local
from edgectl.loadtest.profile import load_profile
from edgectl.loadtest.prompts import load_tokenizer
from edgectl.loadtest.runner import ServerHandle, Target, free_port, run_profile

ROOT = Path(__file__).resolve().parents[1]
THROUGHPUT_TARGET = 0.97
TTFT_ADDED_TARGET_MS = 5.0


def overhead_table(steps: list[dict]) -> tuple[str, bool]:
    """Markdown table of gRPC vs gateway per level, and whether every target is met."""
    by = {(s["variant"], s["level"]): s["metrics"] for s in steps}
    levels = sorted({s["level"] for s in steps})
    lines = [
        "| concurrency | gRPC tok/s | gateway tok/s | gateway/gRPC | TTFT p50 gRPC (ms) "
        "| TTFT p50 gateway (ms) | TTFT added (ms) | failures |",
        "|---|---|---|---|---|---|---|---|",
    ]
    met = True
    for level in levels:
        grpc, gateway = by[("grpc", level)], by[("openai", level)]
        ratio = gateway["output_token_throughput"]["avg"] / grpc["output_token_throughput"]["avg"]
        added = gateway["time_to_first_token"]["p50"] - grpc["time_to_first_token"]["p50"]
        met &= ratio >= THROUGHPUT_TARGET
        if level == min(levels):
            met &= added <= TTFT_ADDED_TARGET_MS
        failures = grpc["failure_count"] + gateway["failure_count"]
        lines.append(
            f"| {level:g} | {grpc['output_token_throughput']['avg']:.1f} "
            f"| {gateway['output_token_throughput']['avg']:.1f} | {ratio:.3f} "
            f"| {grpc['time_to_first_token']['p50']:.1f} "
            f"| {gateway['time_to_first_token']['p50']:.1f} | {added:+.1f} | {failures} |"
        )
    return "\n".join(lines), met


def _gateway_tokens(run_dir: Path) -> int:
    """Output tokens of every request the gateway served in the run, warm-up included."""
    total = 0
    for line in (run_dir / "records.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["step"].startswith("openai-") and record.get("ok"):
            total += int(record.get("output_tokens") or 0)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile", type=Path, default=ROOT / "loadtest/profiles/openai-overhead.yaml"
    )
    parser.add_argument(
        "--duration", type=int, help="measured seconds per step (profile's default)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (profile's default)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    profile = load_profile(args.profile)
    changes = {"duration_s": args.duration, "rounds": args.rounds}
    profile = profile.model_copy(update={k: v for k, v in changes.items() if v is not None})
    artifact = build(load_recipe(ROOT / "build" / "smollm2-135m-int8.yaml")).artifact
    http, grpc_port, metrics, openai_port = (free_port() for _ in range(4))
    config = EdgectlConfig.model_validate(
        {
            "server": {"workdir": tempfile.mkdtemp(prefix="edgectl-openai-bench-"),
                       "http_port": http, "grpc_port": grpc_port, "metrics_port": metrics},
            "engine": {"max_num_seqs": max(32, int(max(profile.concurrency)))},
            "model": {"artifact": str(artifact)},
            "openai": {"port": openai_port},
        }
    )  # fmt: skip
    run_dir = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}-openai-overhead"
    state = deploy_local(config, progress=print)
    gateway = psutil.Process(local_gateway(config).running().pid)
    try:
        handles = [
            ServerHandle("grpc", Target("grpc", "127.0.0.1", grpc_port), state.http_url, state.pid),
            ServerHandle("openai", Target("openai", "127.0.0.1", openai_port), state.http_url,
                         state.pid),
        ]  # fmt: skip
        tokenizer = load_tokenizer(served_model(config).tokenizer_dir)
        cpu_before = sum(gateway.cpu_times()[:2])
        summary = run_profile(profile, handles, config.model.name, run_dir, tokenizer, print)
        gateway_cpu_s = sum(gateway.cpu_times()[:2]) - cpu_before
    finally:
        stop_local(config)
    steps = summary.as_json()["steps"]
    table, met = overhead_table(steps)
    tokens = _gateway_tokens(run_dir)
    text = (
        f"{profile.input_tokens} tokens in, {profile.output_tokens} out, streaming, "
        f"{profile.duration_s}s x {profile.rounds} rounds per level and path\n\n{table}\n\n"
        f"targets (gateway/gRPC >= {THROUGHPUT_TARGET}, TTFT added <= "
        f"{TTFT_ADDED_TARGET_MS:g} ms at the lowest concurrency): {'met' if met else 'NOT met'}\n\n"
        f"gateway process CPU: {gateway_cpu_s:.1f} s for {tokens} streamed tokens "
        f"({1000 * gateway_cpu_s / max(tokens, 1):.2f} ms per token, warm-up included)\n"
    )
    (run_dir / "overhead.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"run: {run_dir}")


if __name__ == "__main__":
    main()
