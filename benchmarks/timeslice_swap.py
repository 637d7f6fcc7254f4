"""Swap mode under alternating demand: two real models, a budget that fits one.

SmolLM2-135M INT8 and INT4 are served as ``swap_a`` and ``swap_b`` through
``edgectl.timeslice.swap`` with a memory budget of 1.2x the larger memory estimate, so
only one is ever loaded.  Demand alternates: for ``--phase-s`` seconds ``--clients``
closed-loop gRPC streaming clients call one model, then the other, ``--rounds`` times,
the next round starting the moment the previous one stops sending (its last requests
still finishing), so every round forces a swap while requests queue.  Every request
sent must come back completed: the run counts failed and lost (no answer within the
client timeout) requests, the swap times (load, unload, and the swap time clients saw:
the oldest queued request's wait when the model became ready) and the server's RSS
(tritonserver + stubs) right before and after each unload.

    .venv/bin/python benchmarks/timeslice_swap.py [--rounds 12] [--phase-s 5] [--clients 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from edgectl.build.builder import build
from edgectl.build.recipe import load_recipe
from edgectl.client import GenerateRequest, TritonClient
from edgectl.config import EdgectlConfig
from edgectl.deploy.server import LocalTriton
from edgectl.errors import EdgectlError
from edgectl.runtime.processes import RssSampler
from edgectl.runtime.swap import Board
from edgectl.timeslice.policy import TimeslicePolicy, plan_models
from edgectl.timeslice.swap import board_dir, start_swap, stop_swap, swap_status

ROOT = Path(__file__).resolve().parents[1]
UNUSED_END_ID = 49151
MODELS = {"swap_a": "smollm2-135m-int8.yaml", "swap_b": "smollm2-135m-int4.yaml"}
MB = 2**20


def summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50": None, "max": None}
    return {
        "count": len(values),
        "p50": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--phase-s", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--min-resident-s", type=float, default=2.0)
    parser.add_argument("--wait-timeout-s", type=float, default=120.0)
    parser.add_argument("--port-base", type=int, default=18410, help="HTTP; +1 gRPC, +2 metrics")
    args = parser.parse_args()

    artifacts = {
        name: build(load_recipe(ROOT / "build" / recipe)).artifact
        for name, recipe in MODELS.items()
    }
    http, grpc, metrics = args.port_base, args.port_base + 1, args.port_base + 2
    workdir = Path(tempfile.mkdtemp(prefix="edgectl-swap-bench-"))
    config = EdgectlConfig.model_validate(
        {
            "server": {"workdir": str(workdir), "http_port": http, "grpc_port": grpc,
                       "metrics_port": metrics, "ready_timeout_s": 120},
            "engine": {"max_input_len": 256, "max_output_len": 256},
        }
    )  # fmt: skip
    draft = {
        "name": "swap-bench",
        "mode": "swap",
        "memory_budget_gb": 1.0,  # replaced below, once the estimates are known
        "swap": {"wait_timeout_s": args.wait_timeout_s, "min_resident_s": args.min_resident_s},
        "models": [
            {"name": name, "artifact": str(path), "share": share}
            for (name, path), share in zip(artifacts.items(), (30, 70), strict=True)
        ],
    }
    estimates = [p.memory_gb for p in plan_models(TimeslicePolicy.model_validate(draft), config)]
    draft["memory_budget_gb"] = round(1.2 * max(estimates), 3)
    assert sum(estimates) > draft["memory_budget_gb"], "the budget must fit only one model"
    policy = TimeslicePolicy.model_validate(draft)
    print(f"memory estimates {estimates} GB, budget {policy.memory_budget_gb} GB (fits one)")

    repository = workdir / "model_repository"
    repository.mkdir()
    server = LocalTriton(config.server)
    state = server.start(repository, [], progress=print)
    records: list[dict] = []
    lock = threading.Lock()
    try:
        start_swap(policy, state, server.workdir, print, config=config)
        client = TritonClient(state.http_url, state.grpc_url, timeout_s=args.wait_timeout_s + 60)
        request = GenerateRequest(
            "Write a short story about a lighthouse.", args.max_tokens, stream=True,
            end_id=UNUSED_END_ID,
        )  # fmt: skip

        def worker(model: str, round_no: int, until: list[float]) -> None:
            while time.monotonic() < until[0]:
                started = time.monotonic()
                try:
                    pieces = list(client.generate(model, request, "grpc"))
                    outcome, reason = ("completed", "") if "".join(pieces) else ("failed", "empty")
                except EdgectlError as err:
                    reason = str(err)
                    outcome = "lost" if "no response from" in reason else "failed"
                with lock:
                    records.append(
                        {"model": model, "round": round_no, "outcome": outcome,
                         "reason": reason[:300], "seconds": time.monotonic() - started}
                    )  # fmt: skip

        names = list(MODELS)
        threads: list[threading.Thread] = []
        began = time.monotonic()
        with RssSampler(state.pid, interval_s=0.5) as sampler:
            for round_no in range(args.rounds):
                model = names[round_no % 2]
                until = [float("inf")]  # set once the model serves
                batch = [
                    threading.Thread(target=worker, args=(model, round_no, until))
                    for _ in range(args.clients)
                ]
                for thread in batch:
                    thread.start()
                threads += batch
                # The round lasts phase_s of sending, but only counts from when the model
                # is actually serving, so every round really uses it.
                deadline = time.monotonic() + args.wait_timeout_s
                while model not in swap_status(server.workdir)["serving"]:
                    if time.monotonic() > deadline:
                        break  # its clients' requests will fail: counted below
                    time.sleep(0.05)
                until[0] = time.monotonic() + args.phase_s
                time.sleep(args.phase_s)
                print(f"round {round_no}: {model}, {len(records)} requests done so far")
            for thread in threads:
                thread.join()
        elapsed = time.monotonic() - began
        status = swap_status(server.workdir)
        events = Board(board_dir(server.workdir)).schedule()["events"]
    finally:
        stop_swap(server.workdir)
        server.stop()

    ins = [e for e in events if e["kind"] == "in" and not e.get("error")]
    outs = [e for e in events if e["kind"] == "out" and not e.get("error")]
    outcomes = {
        k: sum(1 for r in records if r["outcome"] == k) for k in ("completed", "failed", "lost")
    }
    unloads = [
        {
            "model": e["model"],
            "rss_before_mb": round(e["rss_before"] / MB, 1),
            "rss_after_mb": round(e["rss_after"] / MB, 1),
            "freed_mb": round((e["rss_before"] - e["rss_after"]) / MB, 1),
            "stubs_rss_mb": round(e["stubs_rss"] / MB, 1),
        }
        for e in outs
    ]
    result = {
        "command": "benchmarks/timeslice_swap.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "budget_gb": policy.memory_budget_gb,
        "estimates_gb": estimates,
        "seconds": round(elapsed, 1),
        "requests": len(records),
        **outcomes,
        "swap_ins": len(ins),
        "swap_outs": len(outs),
        "failed_swaps": sum(1 for e in events if e.get("error")),
        "load_s": summary([e["seconds"] for e in ins]),
        "unload_s": summary([e["seconds"] for e in outs]),
        "drain_s": summary([e["drain_s"] for e in outs]),
        "swap_s_seen_by_clients": summary([e["swap_s"] for e in ins[1:]]),  # first: cold load
        "request_s": {
            model: summary(
                [
                    r["seconds"]
                    for r in records
                    if r["model"] == model and r["outcome"] == "completed"
                ]
            )
            for model in MODELS
        },  # fmt: skip
        "rss_peak_mb": round(sampler.peak_mib or 0, 1),
        "unloads": unloads,
        "freed_mb": summary([u["freed_mb"] for u in unloads]),
        "freed_vs_stubs_min": round(
            min((u["freed_mb"] / u["stubs_rss_mb"] for u in unloads), default=0), 3
        ),
        "per_model": {row["name"]: row for row in status["models"]},
        "failures": [r for r in records if r["outcome"] != "completed"][:10],
    }
    out_dir = ROOT / "benchmarks" / "results" / time.strftime("%Y%m%dT%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "timeslice_swap.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_model", "unloads")},
                     indent=2))  # fmt: skip
    print("unloads (RSS of tritonserver + stubs, MB):")
    for unload in unloads:
        print(f"  {unload}")
    print(f"results in {out_dir}")
    ok = outcomes["failed"] == 0 and outcomes["lost"] == 0 and len(ins) >= 10
    print("PASS" if ok else "FAIL", "(0 failed, 0 lost, >= 10 swaps)")


if __name__ == "__main__":
    main()
