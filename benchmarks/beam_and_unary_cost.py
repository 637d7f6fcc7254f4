"""What beam search, n > 1 and unary mode cost, side by side in one run.

Through the ensemble over gRPC, every request generating exactly --max-tokens tokens
per sequence (ignore_eos): output tokens/s (all sequences counted) and TTFT p50 at
beam_width 1/2/4 and num_return_sequences 1/2/4, concurrency 1 and 8 (decoupled
server, streaming); then a unary server against the decoupled one at concurrency 1
and 16 (tok/s and whole-request latency p50; unary has no first token to time).

    .venv/bin/python benchmarks/beam_and_unary_cost.py [--max-tokens 32] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from benchmarks.ensemble_throughput import PROMPT, Timing, run_phase
from edgectl.build.builder import build
from edgectl.build.recipe import load_recipe
from edgectl.config import EdgectlConfig
from edgectl.deploy.local import deploy_local
from edgectl.deploy.server import LocalTriton
from edgectl.loadtest.runner import free_port

ROOT = Path(__file__).resolve().parents[1]


def inputs(max_tokens: int, stream: bool, **fields: int) -> list[grpcclient.InferInput]:
    arrays = {
        "text_input": np.asarray([[PROMPT.encode()]], dtype=object),
        "max_tokens": np.asarray([[max_tokens]], dtype=np.int32),
        "ignore_eos": np.asarray([[True]]),
        "stream": np.asarray([[stream]]),
        **{name: np.asarray([[value]], dtype=np.int32) for name, value in fields.items()},
    }
    if fields.get("num_return_sequences", 1) > 1:
        arrays["top_p"] = np.asarray([[1.0]], dtype=np.float32)
    tensors = []
    for name, array in arrays.items():
        kind = {np.dtype(object): "BYTES", np.dtype(bool): "BOOL"}.get(array.dtype, "INT32")
        kind = "FP32" if array.dtype == np.float32 else kind
        tensor = grpcclient.InferInput(name, list(array.shape), kind)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def timed_stream(
    url: str, model: str, tensors: list, outputs: list | None = None, first_output: str = ""
) -> Timing:
    """One streamed request, timed until its final response; the first response that
    carries ``first_output`` (any response when empty) counts as the first token."""
    received: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    timing = Timing(time.monotonic())
    client.async_stream_infer(model, tensors, outputs=outputs, enable_empty_final_response=True)
    while True:
        result, error = received.get(timeout=600)
        if error is not None:
            raise RuntimeError(error)
        if not timing.first and (not first_output or result.as_numpy(first_output) is not None):
            timing.first = time.monotonic()
        final = result.get_response().parameters.get("triton_final_response")
        if final is not None and final.bool_param:
            break
    timing.end = time.monotonic()
    client.stop_stream()
    client.close()
    return timing


def streaming_request(url: str, max_tokens: int, **fields: int) -> Callable[[], Timing]:
    def one() -> Timing:
        tensors = inputs(max_tokens, True, **fields)
        return timed_stream(url, "ensemble", tensors, first_output="text_output")

    return one


def unary_request(url: str, max_tokens: int) -> Callable[[], Timing]:
    def one() -> Timing:
        client = grpcclient.InferenceServerClient(url)
        timing = Timing(time.monotonic())
        client.infer("ensemble", inputs(max_tokens, False))
        timing.end = timing.first = time.monotonic()
        client.close()
        return timing

    return one


def serve(artifact: Path, decoupled: bool, max_num_seqs: int) -> tuple[EdgectlConfig, str]:
    http, grpc, metrics = (free_port() for _ in range(3))
    config = EdgectlConfig.model_validate(
        {
            "server": {"workdir": tempfile.mkdtemp(prefix="edgectl-bench-"), "http_port": http,
                       "grpc_port": grpc, "metrics_port": metrics},
            "engine": {"max_num_seqs": max_num_seqs, "decoupled": decoupled,
                       "front_instances": 4},
            "model": {"artifact": str(artifact)},
            "openai": {"enabled": False},  # Triton alone is measured here
        }
    )  # fmt: skip
    deploy_local(config, progress=lambda message: None)
    return config, f"127.0.0.1:{grpc}"


def row(label: str, concurrency: int, sequences: int, result) -> dict:
    return {
        "phase": label,
        "concurrency": concurrency,
        "tok_s": round(result.tokens * sequences / result.seconds, 1),
        "ttft_p50_ms": round(statistics.median(result.ttfts) * 1000, 1),
        "requests": len(result.ttfts),
    }


def measure(
    rows: list[dict], label: str, one: Callable[[], Timing], concurrencies, sequences: int, args
) -> None:
    """Closed-loop phases of ``one`` at each concurrency, appended to ``rows``."""
    for concurrency in concurrencies:
        result = run_phase(label, concurrency, args.per_worker, args.max_tokens, one)
        rows.append(row(label, concurrency, sequences, result))
        print(rows[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--per-worker", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    artifact = build(load_recipe(ROOT / "build" / "smollm2-135m-int8.yaml")).artifact
    rows: list[dict] = []
    config, url = serve(artifact, decoupled=True, max_num_seqs=32)
    try:
        streaming_request(url, args.max_tokens)()  # warm-up
        for name, values in (("beam_width", (1, 2, 4)), ("num_return_sequences", (2, 4))):
            for value in values:
                one = streaming_request(url, args.max_tokens, **{name: value})
                measure(rows, f"{name}={value}", one, (1, 8), value, args)
        measure(
            rows, "decoupled (stream)", streaming_request(url, args.max_tokens), (1, 16), 1, args
        )
    finally:
        LocalTriton(config.server).stop()
    config, url = serve(artifact, decoupled=False, max_num_seqs=32)
    try:
        unary_request(url, args.max_tokens)()  # warm-up
        measure(rows, "unary (whole result)", unary_request(url, args.max_tokens), (1, 16), 1, args)
    finally:
        LocalTriton(config.server).stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "beam_and_unary_cost.json").write_text(json.dumps(rows, indent=1))
    print("| phase | concurrency | tok/s | TTFT p50 ms (unary: latency) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['phase']} | {r['concurrency']} | {r['tok_s']} | {r['ttft_p50_ms']} |")


if __name__ == "__main__":
    main()
