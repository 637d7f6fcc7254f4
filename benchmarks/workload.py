"""Workloads and a closed-loop client shared by the latency benchmarks.

Two prompt sets from ``benchmarks/data/rag_corpus.json`` (an invented corpus that ships
with the project): RAG (a system prompt, retrieved passages, a question whose answer
quotes them; greedy, natural end) and free writing (fixed output length).  Each request
records its start, every streamed piece and its end; token counts come from the
model's tokenizer applied to the text, identically for every server measured.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = json.loads((ROOT / "benchmarks/data/rag_corpus.json").read_text(encoding="utf-8"))
UNUSED_END_ID = 49151  # the model never emits it: free writing runs to max_tokens


@dataclass(frozen=True)
class Prompt:
    """One request of a workload: a question with passages (RAG) or a free-writing task."""

    text: str
    passages: tuple[str, ...] = ()
    max_tokens: int = 64
    fixed_length: bool = False  # run to max_tokens (free writing)


def rag_prompts(max_tokens: int = 64) -> list[Prompt]:
    return [
        Prompt(item["q"], tuple(CORPUS["passages"][key] for key in item["passages"]), max_tokens)
        for item in CORPUS["questions"]
    ]


def free_prompts(max_tokens: int = 128) -> list[Prompt]:
    return [Prompt(text, (), max_tokens, True) for text in CORPUS["free_writing"]]


def shared_context_prompts(max_tokens: int = 32) -> list[Prompt]:
    """RAG traffic with a prefix every request shares: all passages, then each question."""
    passages = tuple(CORPUS["passages"].values())[:6]
    return [Prompt(item["q"], passages, max_tokens) for item in CORPUS["questions"]]


@dataclass
class Record:
    start: float
    pieces: list[tuple[float, str]] = field(default_factory=list)
    end: float = 0.0
    tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(piece for _, piece in self.pieces)

    @property
    def ttft(self) -> float:
        return self.pieces[0][0] - self.start if self.pieces else float("nan")

    @property
    def itl(self) -> float | None:
        """Mean time between tokens after the first (None for one-token answers)."""
        if self.tokens < 2 or not self.pieces:
            return None
        return (self.end - self.pieces[0][0]) / (self.tokens - 1)


def percentile(values: list[float], q: float) -> float:
    values = sorted(v for v in values if v == v)
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[index]


@dataclass
class Phase:
    """One closed-loop run: ``concurrency`` workers going through ``prompts`` in turn."""

    label: str
    concurrency: int
    records: list[Record]
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return sum(r.tokens for r in self.records) / self.seconds

    def ttft_ms(self, q: float) -> float:
        return percentile([r.ttft for r in self.records], q) * 1000

    @property
    def itl_p50_ms(self) -> float:
        return percentile([r.itl for r in self.records if r.itl is not None], 50) * 1000

    def summary(self) -> dict[str, float | int | str]:
        return {
            "label": self.label,
            "concurrency": self.concurrency,
            "requests": len(self.records),
            "tokens": sum(r.tokens for r in self.records),
            "tok_per_s": round(self.tokens_per_s, 2),
            "ttft_p50_ms": round(self.ttft_ms(50), 1),
            "ttft_p90_ms": round(self.ttft_ms(90), 1),
            "itl_p50_ms": round(self.itl_p50_ms, 2),
        }


Stream = Callable[[Prompt], Iterator[str]]  # yields text pieces as they arrive


def run_closed_loop(
    label: str,
    stream: Stream,
    prompts: list[Prompt],
    concurrency: int,
    count_tokens: Callable[[str], int],
    rounds: int = 1,
) -> Phase:
    """Each worker sends its share of ``prompts * rounds`` back to back."""
    work = [p for _ in range(rounds) for p in prompts]
    while len(work) < concurrency:
        work += prompts
    records: list[Record] = []
    lock = threading.Lock()

    def worker(mine: list[Prompt]) -> None:
        for prompt in mine:
            record = Record(time.monotonic())
            for piece in stream(prompt):
                if piece:
                    record.pieces.append((time.monotonic(), piece))
            record.end = time.monotonic()
            record.tokens = count_tokens(record.text)
            with lock:
                records.append(record)

    threads = [
        threading.Thread(target=worker, args=(work[i::concurrency],)) for i in range(concurrency)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Phase(label, concurrency, records, time.monotonic() - started)


def edgectl_stream(client, model: str = "ensemble") -> Stream:
    """Our ensemble over gRPC streaming; RAG prompts go through the rag_* inputs."""
    from edgectl.client import GenerateRequest

    def stream(prompt: Prompt) -> Iterator[str]:
        request = GenerateRequest(
            prompt.text,
            max_tokens=prompt.max_tokens,
            stream=True,
            apply_chat_template=True,
            end_id=UNUSED_END_ID if prompt.fixed_length else None,
            rag_passages=list(prompt.passages),
        )
        yield from client.generate(model, request, "grpc")

    return stream


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def mean(values: list[float]) -> float:
    return statistics.mean(values) if values else float("nan")
