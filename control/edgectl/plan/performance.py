"""Speed: a roofline per engine step, plus the per-step overheads calibration measures.

A decode step reads every weight once and each sequence's KV cache, and does
2 x parameters FLOPs per sequence. At small batches the reads dominate (bandwidth-bound:
adding sequences is nearly free); past the knee the math does (compute-bound: the
aggregate stops growing). The knee is the optimal batch size. INT4/INT8 weight-only
formats run their math in FP16 (W4A16, W8A16); SmoothQuant runs INT8 math.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgectl.plan.catalog import Device, MathFormat
from edgectl.plan.memory import Weights
from edgectl.plan.shapes import ModelShape

TERA = 1e12
MATH_OF_WEIGHTS: dict[str, MathFormat] = {
    "fp32": "fp32",
    "fp16": "fp16",
    "int8_wo": "fp16",
    "int8_sq": "int8",
    "int4_wo": "fp16",
    "int4_awq": "fp16",
    "int4_gptq": "fp16",
    "gguf-native": "fp16",  # de-quantized per block into the matmul, like W4A16
    "gguf-q8_0": "fp16",
}


@dataclass(frozen=True)
class Hardware:
    """What the formulas take from a device: reached bandwidth and math rates, overheads."""

    bandwidth: float  # bytes/s reached
    flops: dict[str, float]  # weight format -> FLOP/s its math format reaches
    step_s: float
    per_sequence_s: float
    prefill_s: float

    @classmethod
    def of(cls, device: Device, formats: set[str], devices: int = 1) -> Hardware:
        eff = device.efficiency
        return cls(
            bandwidth=device.bandwidth_gbs * 1e9 * eff.bandwidth * devices,
            flops={
                fmt: device.tflops_for(MATH_OF_WEIGHTS[fmt])[1] * TERA * eff.compute * devices
                for fmt in formats | {"fp16"}
            },
            step_s=device.overheads.step_s,
            per_sequence_s=device.overheads.per_sequence_s,
            prefill_s=device.overheads.prefill_s,
        )


@dataclass(frozen=True)
class Workload:
    """What the formulas take from a model: bytes streamed, FLOPs per token, KV growth."""

    streamed_bytes: float  # weights read once per step
    matmul_params: dict[str, int]  # weight format -> parameters multiplied per token
    attention_flops_per_position: float  # per token, per token of context before it
    kv_bytes_per_token: int
    head: tuple[str, int]  # the output head's format and parameters: once per prompt

    @classmethod
    def of(cls, shape: ModelShape, weights: Weights, kv_bytes_per_token: int) -> Workload:
        attention = 4.0 * shape.num_hidden_layers * shape.num_attention_heads * shape.head_dim
        return cls(
            weights.streamed_per_step,
            weights.matmul,
            attention,
            kv_bytes_per_token,
            (weights.head_format, weights.head_params),
        )


@dataclass(frozen=True)
class Step:
    """One decode step of ``batch`` sequences at context position ``position``."""

    batch: int
    memory_s: float
    compute_s: float
    overhead_s: float

    @property
    def seconds(self) -> float:
        return max(self.memory_s, self.compute_s) + self.overhead_s

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s > self.memory_s else "bandwidth"

    @property
    def per_sequence_tok_s(self) -> float:
        return 1.0 / self.seconds

    @property
    def aggregate_tok_s(self) -> float:
        return self.batch / self.seconds


def _matmul_seconds(work: Workload, hw: Hardware, tokens: float) -> float:
    return sum(2.0 * params * tokens / hw.flops[fmt] for fmt, params in work.matmul_params.items())


def decode_step(work: Workload, hw: Hardware, batch: int, position: float) -> Step:
    """max(bytes / bandwidth, FLOPs / rate) + overheads, for ``batch`` sequences."""
    read = work.streamed_bytes + batch * work.kv_bytes_per_token * position
    attention = batch * work.attention_flops_per_position * position / hw.flops["fp16"]
    return Step(
        batch=batch,
        memory_s=read / hw.bandwidth,
        compute_s=_matmul_seconds(work, hw, batch) + attention,
        overhead_s=hw.step_s + batch * hw.per_sequence_s,
    )


def knee_batch(work: Workload, hw: Hardware, position: float) -> float:
    """The batch where the step turns compute-bound: weights/BW = B x (FLOPs/rate - KV/BW).

    Infinite when reading a sequence's KV costs more than its math (never compute-bound).
    """
    per_sequence_math = decode_step(work, hw, 1, position).compute_s
    per_sequence_read = work.kv_bytes_per_token * position / hw.bandwidth
    if per_sequence_math <= per_sequence_read:
        return float("inf")
    return (work.streamed_bytes / hw.bandwidth) / (per_sequence_math - per_sequence_read)


def prefill_seconds(work: Workload, hw: Hardware, prompt: int) -> float:
    """One prompt in one step: max(weights / BW, prompt FLOPs / rate) + its overhead.

    Every prompt token goes through every layer; the head only scores the last one.
    """
    attention = work.attention_flops_per_position * prompt * prompt / 2 / hw.flops["fp16"]
    head_fmt, head_params = work.head
    head_skipped = 2.0 * head_params * (prompt - 1) / hw.flops[head_fmt]
    compute = _matmul_seconds(work, hw, prompt) - head_skipped + attention
    return max(work.streamed_bytes / hw.bandwidth, compute) + hw.prefill_s


def prefill_flops(work: Workload, prompt: int) -> float:
    """A prompt's FLOPs: every layer for every token, attention, the head once."""
    matmul = 2.0 * sum(work.matmul_params.values()) * prompt - 2.0 * work.head[1] * (prompt - 1)
    return matmul + work.attention_flops_per_position * prompt * prompt / 2


def ttft_seconds(work: Workload, hw: Hardware, prompt: int, concurrency: int) -> float:
    """A prompt's prefill, behind half the other clients' prefills and half a running step.

    At saturation closed-loop clients send their next prompt as soon as an answer ends,
    and prefills (compute-bound) run one after another while the batch waits, so a new
    prompt finds on average half of the other clients' prompts ahead of it.
    """
    prefill = prefill_seconds(work, hw, prompt)
    if concurrency <= 1:
        return prefill
    running = decode_step(work, hw, concurrency - 1, prompt).seconds
    return prefill * (1 + (concurrency - 1) / 2) + running / 2
