"""Where time to first token goes at concurrency 1, from timestamps, for 32- and 128-token prompts.

Two measurements of the same prompts, one after another in one run:

1. the raw OpenVINO pipeline: ``add_request`` + the ``step()`` that produces the first
   token (prefill plus one token: the floor);
2. the full ensemble over gRPC, one token per request: client time, and Triton's own
   per-model statistics (preprocessing queue + compute, engine step, postprocessing),
   the rest being gRPC and the client.

    .venv/bin/python -m benchmarks.ttft_breakdown [--requests 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import httpx

from benchmarks.latency_techniques import serve
from benchmarks.workload import CORPUS, ROOT, UNUSED_END_ID
from edgectl.build.builder import build
from edgectl.build.recipe import load_recipe
from edgectl.client import GenerateRequest
from edgectl.loadtest.breakdown import diff_stats, parse_model_stats
from edgectl.runtime.openvino_engine import SchedulerSettings, create_pipeline, load_tokenizer


def prompt_of(tokenizer, length: int, salt: int) -> str:
    """Text of about ``length`` tokens, distinct per request (no prefix-cache hits)."""
    words = " ".join(CORPUS["passages"].values()).split()
    text = f"{salt}: " + " ".join(words[salt % 50 :])
    ids = tokenizer.encode(text, add_special_tokens=False).ids[:length]
    return tokenizer.decode(ids)


def raw_pipeline_ms(pipe, texts: list[str], tokenizer) -> list[float]:
    import numpy as np
    import openvino as ov
    import openvino_genai as og

    times = []
    for index, text in enumerate(texts, start=pipe.requests_sent):
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        config = og.GenerationConfig()
        config.max_new_tokens, config.eos_token_id = 1, UNUSED_END_ID
        config.stop_token_ids = {UNUSED_END_ID}
        start = time.perf_counter()
        handle = pipe.add_request(index, ov.Tensor(np.asarray([ids], dtype=np.int64)), config)
        while not handle.can_read():
            pipe.step()
        times.append((time.perf_counter() - start) * 1000)
        while pipe.has_non_finished_requests():
            pipe.step()
    pipe.requests_sent += len(texts)
    return times


class _Counted:
    """The pipeline plus how many request ids it has used (ids must not repeat)."""

    def __init__(self, pipe) -> None:
        self.pipe, self.requests_sent = pipe, 0

    def __getattr__(self, name: str):
        return getattr(self.pipe, name)


def server_ms(server, texts: list[str]) -> tuple[list[float], dict[str, float]]:
    stats_url = server.client.http_url + "/v2/models/stats"
    before = parse_model_stats(httpx.get(stats_url, timeout=10).json())
    client_ms = []
    for text in texts:
        request = GenerateRequest(text, max_tokens=1, end_id=UNUSED_END_ID)
        start = time.perf_counter()
        for _ in server.client.generate("ensemble", request, "grpc"):
            pass
        client_ms.append((time.perf_counter() - start) * 1000)
    times = diff_stats(parse_model_stats(httpx.get(stats_url, timeout=10).json()), before)
    n = len(texts)

    def per_request(name: str, *phases: str) -> float:
        return sum(times[name].ns(p) for p in phases) / n / 1e6

    compute = ("compute_input", "compute_infer", "compute_output")
    stages = {
        "ensemble (server side)": per_request("ensemble", "success"),
        "preprocessing queue": per_request("preprocessing", "queue"),
        "preprocessing compute": per_request("preprocessing", *compute),
        "engine step execute (enqueue)": per_request("tensorrt_llm", *compute),
        "postprocessing queue + compute": per_request("postprocessing", "queue", *compute),
    }
    return client_ms, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    artifact = build(load_recipe(ROOT / "build" / "smollm2-135m-int8.yaml")).artifact
    tokenizer = load_tokenizer(artifact)
    prompts = {n: [prompt_of(tokenizer, n, i) for i in range(args.requests)] for n in args.lengths}
    results: dict[str, dict] = {}
    pipe = _Counted(create_pipeline(artifact, SchedulerSettings()))
    raw_pipeline_ms(pipe, prompts[args.lengths[0]][:2], tokenizer)  # warm-up
    for length, texts in prompts.items():
        raw = raw_pipeline_ms(pipe, texts, tokenizer)
        results[str(length)] = {"raw pipeline (prefill step)": statistics.median(raw)}
    with serve(artifact, 16) as server:
        server_ms(server, prompts[args.lengths[0]][:2])  # warm-up
        for length, texts in prompts.items():
            client, stages = server_ms(server, texts)
            median = statistics.median(client)
            row = results[str(length)]
            row["client (gRPC, 1 token) p50"] = median
            row.update(stages)
            row["gRPC + client (client mean - ensemble)"] = (
                statistics.mean(client) - stages["ensemble (server side)"]
            )
            row["engine: remainder of ensemble"] = stages["ensemble (server side)"] - sum(
                v for k, v in stages.items() if k != "ensemble (server side)"
            )
    out = args.out / time.strftime("ttft-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    keys = list(next(iter(results.values())))
    lines = ["| ms | " + " | ".join(f"{n} tokens" for n in results) + " |",
             "|---" * (len(results) + 1) + "|"]  # fmt: skip
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(f"{r[key]:.1f}" for r in results.values()) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"results in {out}")


if __name__ == "__main__":
    main()
