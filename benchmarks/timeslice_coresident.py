"""Co-resident time-slicing, measured side by side in one run on one server.

Applies a two-model policy (default ``timeslice/pair-30-70.yaml``: SmolLM2 INT8 as
model_a with share 30 / 100 ms slots, INT4 as model_b with share 70 / 300 ms slots)
to a fresh local server, then:

1. both models saturated (``--concurrency`` closed-loop streaming clients each) for
   ``--seconds``: achieved device shares from the slot board and, independently, from
   the CPU time the OS charged to each engine stub; tokens/s per model;
2. model_a idle, model_b saturated for ``--idle-seconds``: model_b's part of the device;
3. ``timeslice off``, model_b alone (the whole device, no policy): the baseline for 2;
4. no policy, both saturated: what the OS alone makes of the same load.

    .venv/bin/python benchmarks/timeslice_coresident.py [--policy P] [--seconds 30]

Prints a table and writes JSON to ``--out`` (default benchmarks/results/<time>-timeslice/).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from edgectl.client import GenerateRequest, TritonClient
from edgectl.config import EdgectlConfig
from edgectl.deploy.server import LocalTriton, ServerState
from edgectl.timeslice import service
from edgectl.timeslice.measure import LoadLoop, board_busy_seconds, cpu_seconds, engine_counter
from edgectl.timeslice.policy import load_policy

ROOT = Path(__file__).resolve().parents[1]
UNUSED_END_ID = 49151  # never emitted: every request runs to max_tokens


def snapshot(state: ServerState, board: Path, names: list[str]):
    """(time, board device s, stub CPU s, engine tokens) with the time taken at the board."""
    tokens = engine_counter(state, "edgectl_engine_scheduled_sequences_total")
    cpu = cpu_seconds(state.pid, names)
    return time.monotonic(), board_busy_seconds(board), cpu, tokens


def measure(
    state: ServerState, board: Path, engines: dict[str, str], seconds: float
) -> dict[str, dict[str, float]]:
    """Per model over ``seconds``: board device s, stub CPU s, tokens/s, tokens per CPU s."""
    names = list(engines.values())
    start, *before = snapshot(state, board, names)
    time.sleep(seconds)
    end, *after = snapshot(state, board, names)
    elapsed = end - start
    result = {}
    for model, engine in engines.items():
        busy, cpu, tokens = (
            a.get(engine, 0.0) - b.get(engine, 0.0) for a, b in zip(after, before, strict=True)
        )
        result[model] = {
            "device_s": busy,
            "cpu_s": cpu,
            "tokens_per_s": tokens / elapsed,
            "tokens_per_cpu_s": tokens / cpu if cpu else 0.0,
        }
    result["_window_s"] = {"seconds": elapsed}
    return result


def shares(window: dict, key: str) -> dict[str, float]:
    models = [m for m in window if not m.startswith("_")]
    total = sum(window[m][key] for m in models)
    return {m: (window[m][key] / total if total else float("nan")) for m in models}


def run_phase(client, models, request, concurrency, warmup, seconds, state, board, engines):
    loops = [LoadLoop(client, model, request, concurrency).start() for model in models]
    try:
        time.sleep(warmup)
        window = measure(state, board, engines, seconds)
    finally:
        for loop in loops:
            loop.stop()
    window["_load"] = {
        loop.model: {"completed": loop.completed, "failed": len(loop.failures)} for loop in loops
    }
    return window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, default=ROOT / "timeslice" / "pair-30-70.yaml")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--idle-seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    policy = load_policy(args.policy)
    if len(policy.models) != 2:
        raise SystemExit("this benchmark compares exactly two models")
    a, b = (m.name for m in policy.models)
    workdir = Path(tempfile.mkdtemp(prefix="edgectl-timeslice-"))
    config = EdgectlConfig.model_validate(
        {
            "server": {"workdir": str(workdir), "http_port": 18400, "grpc_port": 18401,
                       "metrics_port": 18402, "ready_timeout_s": 300},
            "engine": {"max_input_len": 256, "max_output_len": 256},
            "model": {"name": a, "artifact": str(workdir)},  # unused: the policy says what
        }
    )  # fmt: skip
    record = service.apply(policy, config, print)
    engines = {name: record["models"][name]["engine_step"] for name in (a, b)}
    server = LocalTriton(config.server)
    state = server.running()
    board = service.board_dir(server.workdir)
    client = TritonClient(state.http_url, state.grpc_url, timeout_s=300)
    request = GenerateRequest(
        "Tell me a long story about a lighthouse keeper.", max_tokens=args.max_tokens,
        stream=True, end_id=UNUSED_END_ID, apply_chat_template=True,
    )  # fmt: skip
    phase = dict(
        client=client, request=request, concurrency=args.concurrency, warmup=args.warmup,
        state=state, board=board, engines=engines,
    )  # fmt: skip
    results: dict = {"policy": record["policy"], "args": {k: str(v) for k, v in vars(args).items()}}
    try:
        print(f"phase 1: {a} and {b} saturated for {args.seconds:g}s under the policy")
        results["both_policy"] = run_phase(models=[a, b], seconds=args.seconds, **phase)
        print(f"phase 2: {a} idle, {b} saturated for {args.idle_seconds:g}s")
        results["idle_a_policy"] = run_phase(models=[b], seconds=args.idle_seconds, **phase)
        results["status"] = service.status(config)
        service.off(config, print)
        print(f"phase 3: no policy, {b} alone for {args.idle_seconds:g}s")
        results["alone_b_free"] = run_phase(models=[b], seconds=args.idle_seconds, **phase)
        print(f"phase 4: no policy, both saturated for {args.seconds:g}s")
        results["both_free"] = run_phase(models=[a, b], seconds=args.seconds, **phase)
    finally:
        server.stop()

    configured = policy.configured_shares()
    both, idle = results["both_policy"], results["idle_a_policy"]
    alone, free = results["alone_b_free"], results["both_free"]
    summary = {
        "configured_share_a": configured[a],
        "achieved_share_a_board": shares(both, "device_s")[a],
        "achieved_share_a_cpu": shares(both, "cpu_s")[a],
        "free_share_a_cpu": shares(free, "cpu_s")[a],
        "idle_a_b_device_fraction_board": idle[b]["device_s"] / idle["_window_s"]["seconds"],
        "idle_a_b_share_cpu": shares(idle, "cpu_s")[b],
        "idle_a_b_tokens_vs_alone": idle[b]["tokens_per_s"] / alone[b]["tokens_per_s"],
        "tokens_per_cpu_s": {
            key: {
                m: results[key][m]["tokens_per_cpu_s"]
                for m in (a, b)
                if results[key][m]["cpu_s"] > 1
            }
            for key in ("both_policy", "idle_a_policy", "alone_b_free", "both_free")
        },
        "engine_cpu_cores": {
            key: sum(results[key][m]["cpu_s"] for m in (a, b))
            / results[key]["_window_s"]["seconds"]
            for key in ("both_policy", "idle_a_policy", "alone_b_free", "both_free")
        },
        "tokens_per_s_policy": {m: both[m]["tokens_per_s"] for m in (a, b)},
        "tokens_per_s_free": {m: free[m]["tokens_per_s"] for m in (a, b)},
        "total_tokens_per_s_policy_vs_free": sum(both[m]["tokens_per_s"] for m in (a, b))
        / sum(free[m]["tokens_per_s"] for m in (a, b)),
        "failed_requests": sum(
            load["failed"]
            for key in ("both_policy", "idle_a_policy", "alone_b_free", "both_free")
            for load in results[key]["_load"].values()
        ),  # fmt: skip
    }
    results["summary"] = summary
    out = (
        args.out or ROOT / "benchmarks" / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-timeslice"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "timeslice_coresident.json").write_text(json.dumps(results, indent=2))
    print(f"\nshares with {a}={configured[a]:.0%} configured, both saturated {args.seconds:g}s:")
    print(f"  {a} achieved: {summary['achieved_share_a_board']:.1%} (slot board), "
          f"{summary['achieved_share_a_cpu']:.1%} (stub CPU time); "
          f"without a policy: {summary['free_share_a_cpu']:.1%} (CPU time)")  # fmt: skip
    print(f"{a} idle: {b} held the device {summary['idle_a_b_device_fraction_board']:.1%} of the "
          f"time, {summary['idle_a_b_share_cpu']:.1%} of engine CPU; its tokens/s = "
          f"{summary['idle_a_b_tokens_vs_alone']:.2f} x alone without a policy")  # fmt: skip
    print(f"tokens/s under the policy {summary['tokens_per_s_policy']}, without "
          f"{summary['tokens_per_s_free']} (total ratio "
          f"{summary['total_tokens_per_s_policy_vs_free']:.2f})")  # fmt: skip
    print(f"engine CPU cores used per phase {summary['engine_cpu_cores']} (other processes on")
    print(
        f"  this machine take the rest); tokens per engine CPU second {summary['tokens_per_cpu_s']}"
    )
    print(f"failed requests: {summary['failed_requests']}; results in {out}")


if __name__ == "__main__":
    main()
