"""Speculative decoding, prefix reuse and request coalescing, measured side by side in one run.

One server per engine variant, one after another on the same machine, the same prompts:

* speculation: ``default`` (as shipped), ``exact`` (dynamic quantization off, the
  numerics every speculative mode uses) and ``prompt_lookup`` (optionally ``draft``: the
  model as its own draft) on RAG and free-writing prompts at each concurrency: tok/s,
  TTFT, ITL, acceptance rate from /metrics, and whether greedy answers at concurrency 1
  are identical to ``exact``'s;
* prefix reuse: RAG requests sharing a system prompt and six passages, one at a time,
  with prefix caching on and off: TTFT and the engine's steps per request;
* coalescing: a burst of identical requests with coalescing off and on: time to finish,
  TTFT and engine sequences started.

    .venv/bin/python -m benchmarks.latency_techniques [--short] [--draft] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from benchmarks.workload import (
    ROOT,
    Phase,
    edgectl_stream,
    free_prompts,
    rag_prompts,
    ratio,
    run_closed_loop,
    shared_context_prompts,
)
from edgectl.build.builder import build
from edgectl.build.recipe import load_recipe
from edgectl.client import TritonClient
from edgectl.config import EdgectlConfig
from edgectl.deploy.local import deploy_local
from edgectl.deploy.server import LocalTriton
from edgectl.loadtest.runner import free_port
from edgectl.runtime.openvino_engine import load_tokenizer

METRICS = (
    "edgectl_engine_total_draft_tokens_total",
    "edgectl_engine_total_accepted_draft_tokens_total",
    "edgectl_engine_requests_added_total",
    "edgectl_engine_steps_total",
    "edgectl_engine_coalesced_requests_total",
)


class Server:
    def __init__(self, config: EdgectlConfig) -> None:
        self.config = config
        s = config.server
        self.client = TritonClient(f"http://{s.host}:{s.http_port}", f"{s.host}:{s.grpc_port}")
        self.metrics_url = f"http://{s.host}:{s.metrics_port}/metrics"

    def metrics(self) -> dict[str, float]:
        values = dict.fromkeys(METRICS, 0.0)
        for line in httpx.get(self.metrics_url, timeout=10).text.splitlines():
            name = line.split("{", 1)[0]
            if name in values and 'model="tensorrt_llm"' in line:
                values[name] = float(line.rsplit(" ", 1)[1])
        return values


@contextmanager
def serve(artifact: Path, top: int, **engine) -> Iterator[Server]:
    http, grpc, metrics = (free_port() for _ in range(3))
    config = EdgectlConfig.model_validate(
        {
            "server": {"workdir": tempfile.mkdtemp(prefix="edgectl-latency-"),
                       "http_port": http, "grpc_port": grpc, "metrics_port": metrics},
            "engine": {"max_num_seqs": max(top, 16), **engine},
            "model": {"artifact": str(artifact)},
            "openai": {"enabled": False},  # Triton alone is measured here
        }
    )  # fmt: skip
    deploy_local(config, progress=lambda message: None)
    try:
        yield Server(config)
    finally:
        LocalTriton(config.server).stop()


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in after}


def speculation(artifact: Path, args, count) -> dict:
    variants = {
        "default": {},
        "exact": {"dynamic_quantization_group_size": 0},
        "prompt_lookup": {"speculative": {"mode": "prompt_lookup", "num_assistant_tokens": args.k}},
    }
    if args.draft:
        variants["draft (itself)"] = {
            "speculative": {"mode": "draft", "draft": str(artifact), "num_assistant_tokens": 4}
        }
    workloads = {"rag": rag_prompts(args.rag_tokens), "free": free_prompts(args.free_tokens)}
    rows, answers = [], {}
    for variant, engine in variants.items():
        with serve(artifact, max(args.concurrency), **engine) as server:
            stream = edgectl_stream(server.client)
            run_closed_loop("warm-up", stream, workloads["rag"][:1], 1, count)
            for workload, prompts in workloads.items():
                for concurrency in args.concurrency:
                    before = server.metrics()
                    phase = run_closed_loop(variant, stream, prompts, concurrency, count)
                    moved = delta(server.metrics(), before)
                    drafted = moved["edgectl_engine_total_draft_tokens_total"]
                    accepted = moved["edgectl_engine_total_accepted_draft_tokens_total"]
                    rows.append(
                        {**phase.summary(), "workload": workload,
                         "acceptance_rate": round(ratio(accepted, drafted), 3) if drafted else None}
                    )  # fmt: skip
                    if concurrency == 1:
                        answers[(variant, workload)] = by_prompt(phase)
                    print(rows[-1], flush=True)
    identical = {}
    for (variant, workload), texts in answers.items():
        reference = answers[("exact", workload)]
        identical[f"{variant}/{workload}"] = sum(texts[p] == reference[p] for p in reference) / len(
            reference
        )
    return {"rows": rows, "identical_to_exact_at_c1": identical}


def by_prompt(phase: Phase) -> dict[int, str]:
    """Answers at concurrency 1 in send order (one worker sends the prompts in order)."""
    ordered = sorted(phase.records, key=lambda record: record.start)
    return {index: record.text for index, record in enumerate(ordered)}


def prefix_reuse(artifact: Path, args, count) -> dict:
    prompts = shared_context_prompts(args.prefix_tokens)
    rows = []
    for reuse in (True, False):
        with serve(artifact, 16, enable_kv_cache_reuse=reuse) as server:
            stream = edgectl_stream(server.client)
            run_closed_loop("warm-up", stream, prompts[:1], 1, count)
            before = server.metrics()
            phase = run_closed_loop(f"prefix cache {'on' if reuse else 'off'}", stream, prompts,
                                    1, count, rounds=args.rounds)  # fmt: skip
            moved = delta(server.metrics(), before)
            steps = moved["edgectl_engine_steps_total"] / max(len(phase.records), 1)
            rows.append({**phase.summary(), "engine_steps_per_request": round(steps, 1)})
            print(rows[-1], flush=True)
    on, off = rows
    return {"rows": rows, "ttft_p50_off_over_on": round(ratio(off["ttft_p50_ms"],
                                                              on["ttft_p50_ms"]), 2)}  # fmt: skip


def coalescing(artifact: Path, args, count) -> dict:
    prompt = rag_prompts(args.rag_tokens)[0]
    rows = []
    for coalesce in (False, True):
        with serve(artifact, args.burst, coalesce=coalesce) as server:
            stream = edgectl_stream(server.client)
            run_closed_loop("warm-up", stream, [prompt], 1, count)
            before = server.metrics()
            phase = run_closed_loop(f"coalesce {'on' if coalesce else 'off'}", stream,
                                    [prompt] * args.burst, args.burst, count)  # fmt: skip
            moved = delta(server.metrics(), before)
            rows.append(
                {**phase.summary(), "seconds": round(phase.seconds, 2),
                 "engine_sequences": moved["edgectl_engine_requests_added_total"],
                 "engine_steps": moved["edgectl_engine_steps_total"],
                 "distinct_answers": len({r.text for r in phase.records})}
            )  # fmt: skip
            print(rows[-1], flush=True)
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rag-tokens", type=int, default=64)
    parser.add_argument("--free-tokens", type=int, default=128)
    parser.add_argument("--prefix-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--burst", type=int, default=8)
    parser.add_argument("-k", type=int, default=5, help="num_assistant_tokens for prompt lookup")
    parser.add_argument("--draft", action="store_true", help="also the model as its own draft")
    parser.add_argument("--short", action="store_true", help="concurrency 1 and 4, fewer tokens")
    parser.add_argument("--only", choices=["speculation", "prefix", "coalescing"], nargs="+")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if args.short:
        args.concurrency, args.free_tokens, args.rounds = [1, 4], 64, 1

    artifact = build(load_recipe(ROOT / "build" / "smollm2-135m-int8.yaml")).artifact
    tokenizer = load_tokenizer(artifact)

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    sections = {"speculation": speculation, "prefix": prefix_reuse, "coalescing": coalescing}
    results = {"args": {k: v for k, v in vars(args).items() if k != "out"} | {"out": None}}
    for name, section in sections.items():
        if not args.only or name in args.only:
            results[name] = section(artifact, args, count)
    out = args.out / time.strftime("latency-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    (out / "results.md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))
    print(f"results in {out}")


def markdown(results: dict) -> str:
    lines = []
    columns = ("tok_per_s", "ttft_p50_ms", "ttft_p90_ms", "itl_p50_ms")
    if "speculation" in results:
        lines += ["| variant | workload | concurrency | tok/s | TTFT p50 | TTFT p90 | ITL p50 "
                  "| acceptance | vs exact tok/s |", "|---" * 9 + "|"]  # fmt: skip
        rows = results["speculation"]["rows"]
        exact = {(r["workload"], r["concurrency"]): r for r in rows if r["label"] == "exact"}
        for r in rows:
            base = exact.get((r["workload"], r["concurrency"]), r)
            cells = [r["label"], r["workload"], r["concurrency"], *(r[c] for c in columns),
                     r["acceptance_rate"] if r["acceptance_rate"] is not None else "–",
                     f"{ratio(r['tok_per_s'], base['tok_per_s']):.2f}x"]  # fmt: skip
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        same = results["speculation"]["identical_to_exact_at_c1"]
        lines += ["", "Greedy answers identical to `exact` at concurrency 1: "
                  + ", ".join(f"{k} {v:.0%}" for k, v in same.items()), ""]  # fmt: skip
    for name, extra in (("prefix", "engine_steps_per_request"), ("coalescing", "engine_sequences")):
        if name in results:
            lines += [f"| {name} | requests | tok/s | TTFT p50 | TTFT p90 | {extra} |",
                      "|---" * 6 + "|"]  # fmt: skip
            for r in results[name]["rows"]:
                cells = [r["label"], r["requests"], r["tok_per_s"], r["ttft_p50_ms"],
                         r["ttft_p90_ms"], r[extra]]  # fmt: skip
                lines.append("| " + " | ".join(str(c) for c in cells) + " |")
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
