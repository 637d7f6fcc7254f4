"""Throughput ceiling through the full ensemble: scheduler settings and precision, swept.

Each variant is one server (one after another, same prompts: free writing to a fixed
length); for each it reports aggregate output tok/s and TTFT p50/p90 at each
concurrency.  Variants are ``key=value`` sets of ``engine`` settings:

    .venv/bin/python -m benchmarks.throughput_sweep --concurrency 16 64 \\
        --variant max_num_seqs=16 --variant max_num_seqs=64,max_num_tokens=1024 \\
        --variant max_num_seqs=64,max_num_tokens=1024,inference_precision=bf16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from benchmarks.latency_techniques import serve
from benchmarks.workload import ROOT, edgectl_stream, free_prompts, run_closed_loop
from edgectl.build.builder import build
from edgectl.build.recipe import load_recipe
from edgectl.runtime.openvino_engine import load_tokenizer

DEFAULT_VARIANTS = [
    "max_num_seqs=16",
    "max_num_seqs=64,max_queue_size=128",
    "max_num_seqs=64,max_queue_size=128,max_num_tokens=1024",
    "max_num_seqs=64,max_queue_size=128,max_num_tokens=1024,kv_cache_gb=2",
    "max_num_seqs=64,max_queue_size=128,max_num_tokens=1024,inference_precision=bf16",
]


def parse_variant(text: str) -> dict:
    pairs = (item.split("=", 1) for item in text.split(",") if item)
    return {key: yaml.safe_load(value) for key, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--variant", action="append", help="engine settings, k=v,k=v")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    artifact = build(load_recipe(ROOT / "build" / "smollm2-135m-int8.yaml")).artifact
    tokenizer = load_tokenizer(artifact)

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    prompts = free_prompts(args.tokens)
    rows = []
    for variant in args.variant or DEFAULT_VARIANTS:
        settings = parse_variant(variant)  # overrides serve()'s max_num_seqs default
        with serve(artifact, max(args.concurrency), **settings) as server:
            stream = edgectl_stream(server.client)
            run_closed_loop("warm-up", stream, prompts[:1], 1, count)
            for concurrency in args.concurrency:
                phase = run_closed_loop(variant, stream, prompts, concurrency, count)
                rows.append(phase.summary())
                print(rows[-1], flush=True)
    out = args.out / time.strftime("sweep-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    lines = ["| variant | concurrency | tok/s | TTFT p50 ms | TTFT p90 ms | ITL p50 ms |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['label']} | {r['concurrency']} | {r['tok_per_s']} | "
                     f"{r['ttft_p50_ms']} | {r['ttft_p90_ms']} | {r['itl_p50_ms']} |")  # fmt: skip
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
