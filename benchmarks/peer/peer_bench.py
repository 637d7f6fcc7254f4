"""Our ensemble vs llama.cpp's llama-server, the same model and prompts, in one run.

Sides: our Triton ensemble (OpenVINO INT8, as deployed by default) and llama-server on
the shipped Q4_1 GGUF and on a Q8_0 made from it with llama-quantize (``-np`` = the top
concurrency, prompt cache on, greedy).  Both get the same final prompt text: the RAG
template and the model's chat template are rendered here for llama-server, and sent
as ``rag_passages`` / ``rag_question`` to ours (which renders the same).  Free writing
runs to a fixed length on both (``ignore_eos`` / an end id the model never emits).

    .venv/bin/python -m benchmarks.peer.peer_bench [--concurrency 1 4 8 16] [--short]

Output: ``benchmarks/results/peer-<time>/`` with ``results.md`` (table), ``.json``, ``.png``.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from benchmarks.latency_techniques import free_ports, serve
from benchmarks.peer.llama_build import binary, build, cache_dir
from benchmarks.workload import (
    ROOT,
    Phase,
    Prompt,
    Stream,
    edgectl_stream,
    free_prompts,
    rag_prompts,
    ratio,
    run_closed_loop,
)
from edgectl.build.builder import build as build_model
from edgectl.build.recipe import load_recipe
from edgectl.build.sources import embedded_gguf_path
from edgectl.resources import model_templates
from edgectl.runtime.chat_tokenizer import ChatTokenizer
from edgectl.runtime.openvino_engine import load_tokenizer
from edgectl.runtime.rag import load_template


def q8_gguf(q4: Path) -> Path:
    """Q8_0 from the shipped file (our INT8 IR comes from the same de-quantized weights)."""
    out = cache_dir() / "SmolLM2-135M-Instruct.Q8_0.gguf"
    if not out.is_file():
        subprocess.run(  # noqa: S603 - an argument list, never a shell
            [str(binary("llama-quantize")), "--allow-requantize", str(q4), str(out), "Q8_0"],
            check=True,
            capture_output=True,
        )
    return out


class PromptText:
    """The exact text our preprocessing builds, for a server that takes plain text."""

    def __init__(self, artifact: Path, variant: str = "zero_shot") -> None:
        self._chat = ChatTokenizer.from_dir(artifact)
        self._rag = load_template(model_templates() / "preprocessing", variant)

    def __call__(self, prompt: Prompt) -> str:
        content = prompt.text
        if prompt.passages:
            content = self._rag.render(passages=list(prompt.passages), question=prompt.text)
        return self._chat.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True
        )


@contextmanager
def llama_server(
    gguf: Path, slots: int, threads: int = 2, extra: tuple[str, ...] = (), ctx_per_slot: int = 1024
) -> Iterator[str]:
    (port,) = free_ports(1)
    log = (cache_dir() / f"llama-server-{gguf.stem}.log").open("w")
    process = subprocess.Popen(  # noqa: S603 - an argument list, never a shell
        [str(binary("llama-server")), "-m", str(gguf), "--host", "127.0.0.1",
         "--port", str(port), "-np", str(slots), "-c", str(ctx_per_slot * slots),
         "-t", str(threads), "--no-webui", *extra],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llama-server did not start; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def llama_stream(url: str, text_of: PromptText) -> Stream:
    def stream(prompt: Prompt) -> Iterator[str]:
        body = {
            "prompt": text_of(prompt),
            "n_predict": prompt.max_tokens,
            "temperature": 0.0,
            "stream": True,
            "cache_prompt": True,
            "ignore_eos": prompt.fixed_length,
        }
        with httpx.stream("POST", f"{url}/completion", json=body, timeout=600) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    yield event.get("content", "")
                    if event.get("stop"):
                        return

    return stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--rag-tokens", type=int, default=64)
    parser.add_argument("--free-tokens", type=int, default=128)
    parser.add_argument("--short", action="store_true", help="concurrency 1 and 4, 64 tokens")
    parser.add_argument(
        "--llama-threads",
        type=int,
        default=2,
        help="llama-server -t; on a busy machine 1 is far faster (its threads spin at barriers)",
    )
    parser.add_argument(
        "--llama-args",
        default="",
        help="more llama-server options, e.g. '--spec-type ngram-simple'",
    )
    parser.add_argument("--llama-only", action="store_true", help="skip our ensemble")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if args.short:
        args.concurrency, args.free_tokens = [1, 4], 64
    top = max(args.concurrency)

    build(cache_dir(), jobs=2)
    artifact = build_model(load_recipe(ROOT / "build" / "smollm2-135m-int8.yaml")).artifact
    tokenizer = load_tokenizer(artifact)

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    workloads = {"rag": rag_prompts(args.rag_tokens), "free": free_prompts(args.free_tokens)}
    phases: list[tuple[str, str, Phase]] = []

    def measure(side: str, stream: Stream) -> None:
        run_closed_loop("warm-up", stream, workloads["rag"][:1], 1, count)
        for workload, prompts in workloads.items():
            for concurrency in args.concurrency:
                phase = run_closed_loop(side, stream, prompts, concurrency, count)
                phases.append((side, workload, phase))
                print(side, workload, phase.summary(), flush=True)

    if not args.llama_only:
        with serve(artifact, top) as server:
            measure("edgectl ensemble (OpenVINO INT8)", edgectl_stream(server.client))
    q4 = embedded_gguf_path()
    text_of = PromptText(artifact)
    extra = tuple(args.llama_args.split())
    for label, gguf in (("llama.cpp Q4_1", q4), ("llama.cpp Q8_0", q8_gguf(q4))):
        with llama_server(gguf, top, args.llama_threads, extra) as url:
            measure(f"{label} {args.llama_args}".strip(), llama_stream(url, text_of))
    out = args.out / time.strftime("peer-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"side": s, "workload": w, **p.summary()} for s, w, p in phases]
    (out / "results.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    (out / "results.md").write_text(table(rows), encoding="utf-8")
    plot(rows, out / "results.png")
    print(table(rows))
    print(f"results in {out}")


def table(rows: list[dict]) -> str:
    ours = {(r["workload"], r["concurrency"]): r for r in rows if r["side"].startswith("edgectl")}
    ours = ours or {(r["workload"], r["concurrency"]): r for r in rows}  # --llama-only
    lines = [
        "| workload | concurrency | side | tok/s | TTFT p50 ms | TTFT p90 ms | ITL p50 ms "
        "| ours / this tok/s | this / ours TTFT p50 |",
        "|---" * 9 + "|",
    ]
    for r in rows:
        mine = ours[(r["workload"], r["concurrency"])]
        cells = [r["workload"], r["concurrency"], r["side"], r["tok_per_s"], r["ttft_p50_ms"],
                 r["ttft_p90_ms"], r["itl_p50_ms"],
                 f"{ratio(mine['tok_per_s'], r['tok_per_s']):.2f}x",
                 f"{ratio(r['ttft_p50_ms'], mine['ttft_p50_ms']):.2f}x"]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = sorted({r["workload"] for r in rows})
    figure, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4))
    panels = list(axes) if len(workloads) > 1 else [axes]
    for axis, workload in zip(panels, workloads, strict=True):
        for side in dict.fromkeys(r["side"] for r in rows):
            mine = [r for r in rows if r["side"] == side and r["workload"] == workload]
            axis.plot([r["concurrency"] for r in mine], [r["tok_per_s"] for r in mine], "o-",
                      label=side)  # fmt: skip
        axis.set(title=workload, xlabel="concurrent streams", ylabel="output tok/s")
        axis.set_xscale("log", base=2)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
