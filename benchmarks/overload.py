"""Overload: twice the saturating load for a minute, with the engine's queue limits on.

The CPU engine runs at most ``--slots`` sequences and queues at most ``--queue`` more;
past that it refuses at once (UNAVAILABLE), and a request that waits longer than
``--queue-timeout`` for a slot is refused too.  This drives ``2 x slots`` closed-loop
gRPC streaming clients for ``--seconds`` and checks that every request sent either
completed or was refused with a reason (none hung, none vanished), that completed
requests kept a bounded p99 latency, the server's memory (tritonserver + stubs), and
that a normal request is served right after.

    .venv/bin/python benchmarks/overload.py [--seconds 60] [--slots 16] [--queue 16]
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
from edgectl.deploy.local import deploy_local
from edgectl.deploy.server import LocalTriton
from edgectl.errors import EdgectlError
from edgectl.runtime.processes import RssSampler

ROOT = Path(__file__).resolve().parents[1]
UNUSED_END_ID = 49151


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--queue", type=int, default=16)
    parser.add_argument("--queue-timeout", type=float, default=10)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    artifact = build(load_recipe(ROOT / "build" / "smollm2-135m-int8.yaml")).artifact
    config = EdgectlConfig.model_validate(
        {
            "server": {"workdir": tempfile.mkdtemp(prefix="edgectl-overload-"),
                       "http_port": 18300, "grpc_port": 18301, "metrics_port": 18302},
            "engine": {"max_num_seqs": args.slots, "max_queue_size": args.queue,
                       "queue_timeout_s": args.queue_timeout},
            "model": {"artifact": str(artifact)},
            "openai": {"enabled": False},  # Triton alone is measured here
        }
    )  # fmt: skip
    state = deploy_local(config, progress=print)
    client = TritonClient(state.http_url, state.grpc_url, timeout_s=120)
    request = GenerateRequest(
        "Write a story about a lighthouse.", args.max_tokens, stream=True, end_id=UNUSED_END_ID
    )
    records: list[dict] = []
    lock = threading.Lock()
    sent = [0]
    deadline = time.monotonic() + args.seconds

    def worker() -> None:
        while time.monotonic() < deadline:
            with lock:
                sent[0] += 1
            started = time.monotonic()
            try:
                for _ in client.generate("ensemble", request, "grpc"):
                    pass
                outcome, reason = "completed", ""
            except EdgectlError as err:
                text = str(err)
                outcome = "rejected" if "retry later" in text else "failed"
                reason = text[:120]
            with lock:
                records.append({"outcome": outcome, "seconds": time.monotonic() - started,
                                "reason": reason})  # fmt: skip

    try:
        with RssSampler(state.pid) as rss:
            threads = [threading.Thread(target=worker) for _ in range(2 * args.slots)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=args.seconds + 300)
        hung = sum(thread.is_alive() for thread in threads)
        after_started = time.monotonic()
        answer = "".join(
            client.generate("ensemble", GenerateRequest("What is the capital of France?", 16,
                                                        apply_chat_template=True), "grpc")
        )  # fmt: skip
        after_s = time.monotonic() - after_started
    finally:
        LocalTriton(config.server).stop()

    completed = [r["seconds"] for r in records if r["outcome"] == "completed"]
    rejected = [r["seconds"] for r in records if r["outcome"] == "rejected"]
    failed = [r for r in records if r["outcome"] == "failed"]
    report = {
        "clients": 2 * args.slots,
        "seconds": args.seconds,
        "sent": sent[0],
        "completed": len(completed),
        "rejected": len(rejected),
        "failed_other": len(failed),
        "hung_clients": hung,
        "sent_equals_completed_plus_rejected": sent[0] == len(completed) + len(rejected),
        "completed_latency_s": {
            "p50": round(statistics.median(completed), 2) if completed else None,
            "p99": round(percentile(completed, 0.99), 2),
            "max": round(max(completed), 2) if completed else None,
        },
        "rejection_latency_s": {
            "p50": round(statistics.median(rejected), 3) if rejected else None,
            "p99": round(percentile(rejected, 0.99), 3),
        },
        "server_rss_mb": {
            "peak": round(max(rss.samples) / 2**20),
            "first": round(rss.samples[0] / 2**20),
        }
        if rss.samples
        else None,  # fmt: skip
        "after": {"answer_mentions_paris": "Paris" in answer, "seconds": round(after_s, 2)},
        "failure_reasons": sorted({r["reason"] for r in failed})[:5],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
