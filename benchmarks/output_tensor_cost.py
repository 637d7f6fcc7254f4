"""What NVIDIA's full output list costs per streamed token, side by side in one run.

The ensemble asks its engine step for every output it maps (text plus ~20 side
outputs).  Side outputs are built only when NVIDIA's ``return_*`` flags ask for
them.  This calls the engine step directly over gRPC streaming, alternating three
request kinds on one server: only ``output_ids``/``sequence_length``; every output
asked, no flags (what an ensemble request costs by default); every output with every
flag.  It reports tokens/s and TTFT p50 at concurrency 1 and 8.

    .venv/bin/python -m benchmarks.output_tensor_cost [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import numpy as np
import tritonclient.grpc as grpcclient
from tokenizers import Tokenizer

from benchmarks.beam_and_unary_cost import ROOT, serve, timed_stream
from benchmarks.ensemble_throughput import PROMPT, Timing, run_phase
from edgectl.build.builder import build
from edgectl.build.recipe import load_recipe
from edgectl.deploy.server import LocalTriton

FLAGS = (
    "return_log_probs",
    "return_perf_metrics",
    "return_num_input_tokens",
    "return_num_output_tokens",
)


def engine_request(
    url: str, ids: list[int], max_tokens: int, outputs: list[str] | None, flags: bool = False
):
    arrays = {
        "input_ids": np.asarray([ids], dtype=np.int32),
        "input_lengths": np.asarray([[len(ids)]], dtype=np.int32),
        "request_output_len": np.asarray([[max_tokens]], dtype=np.int32),
        "ignore_eos": np.asarray([[True]]),
        "streaming": np.asarray([[True]]),
        **{flag: np.asarray([[True]]) for flag in FLAGS if flags},
    }

    def one() -> Timing:
        tensors = []
        for name, array in arrays.items():
            kind = "BOOL" if array.dtype == np.bool_ else "INT32"
            tensor = grpcclient.InferInput(name, list(array.shape), kind)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        requested = (
            None if outputs is None else [grpcclient.InferRequestedOutput(n) for n in outputs]
        )
        return timed_stream(url, "tensorrt_llm", tensors, requested)

    return one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    artifact = build(load_recipe(ROOT / "build" / "smollm2-135m-int8.yaml")).artifact
    ids = Tokenizer.from_file(str(artifact / "tokenizer.json")).encode(PROMPT).ids
    config, url = serve(artifact, decoupled=True, max_num_seqs=32)
    kinds: dict[str, Callable[[], Timing]] = {
        "ids only": engine_request(url, ids, args.max_tokens, ["output_ids", "sequence_length"]),
        "every output, no flags": engine_request(url, ids, args.max_tokens, None),
        "every output, every flag": engine_request(url, ids, args.max_tokens, None, True),
    }
    results: dict[tuple[str, int], list[float]] = {}
    ttfts: dict[tuple[str, int], list[float]] = {}
    try:
        kinds["ids only"]()  # warm-up
        for _ in range(args.rounds):  # alternate, so drifting load hits both alike
            for concurrency in (1, 8):
                for name, one in kinds.items():
                    phase = run_phase(name, concurrency, 2, args.max_tokens, one)
                    results.setdefault((name, concurrency), []).append(phase.tokens_per_s)
                    ttfts.setdefault((name, concurrency), []).extend(phase.ttfts)
    finally:
        LocalTriton(config.server).stop()
    print("| outputs asked | concurrency | tok/s (mean) | TTFT p50 ms | vs ids only |")
    print("|---|---|---|---|---|")
    for (name, concurrency), rates in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        base = statistics.mean(results[("ids only", concurrency)])
        rate = statistics.mean(rates)
        ttft = statistics.median(ttfts[(name, concurrency)]) * 1000
        print(f"| {name} | {concurrency} | {rate:.1f} | {ttft:.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
