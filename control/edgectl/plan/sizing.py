"""One plan: a recipe on a device at a context length and concurrency, every figure with
the formula that produced it (``--explain`` prints them)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgectl.build.recipe import Recipe
from edgectl.errors import EdgectlError
from edgectl.plan import cost, memory, performance
from edgectl.plan.catalog import Device
from edgectl.plan.shapes import ModelShape

GiB = 2**30
MAX_BATCH = 2048  # trtllm.max_batch_size's upper bound in the recipe schema


@dataclass(frozen=True)
class Workload:
    """What the user plans for: tokens per sequence and per query, parallel requests."""

    context: int  # tokens a sequence holds in the KV cache (prompt + output)
    input_tokens: int
    output_tokens: int
    concurrency: int
    price_per_hour: float | None = None  # overrides the device's
    api_usd_per_1k_tokens: float | None = None
    kv_fraction: float | None = None  # overrides the recipe's kv_cache_free_gpu_mem_fraction


def default_workload(
    recipe: Recipe,
    context: int | None,
    input_tokens: int | None,
    output_tokens: int | None,
    concurrency: int | None,
    **money: float | None,
) -> Workload:
    """Fill what the user left out from the recipe: its max_seq_len and max_batch_size."""
    context = context or recipe.trtllm.max_seq_len
    output = output_tokens or min(256, max(1, context // 4))
    prompt = input_tokens or max(1, context - output)
    return Workload(context, prompt, output, concurrency or recipe.trtllm.max_batch_size, **money)


@dataclass(frozen=True)
class Quantity:
    key: str
    label: str
    value: float
    unit: str
    formula: str
    estimate: bool = False  # an assumption-based figure (energy), labelled as such


@dataclass
class Plan:
    recipe: str
    device: str
    device_title: str
    engine: str
    devices: int
    shape: ModelShape
    workload: Workload
    fits: bool
    sequences: int
    optimal_batch: int
    quantities: list[Quantity] = field(default_factory=list)
    trtllm: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def value(self, key: str) -> float:
        return next(q.value for q in self.quantities if q.key == key)

    def as_json(self) -> dict:
        return {
            "recipe": self.recipe,
            "device": self.device,
            "engine": self.engine,
            "devices": self.devices,
            "model": {"name": self.shape.name, "from": self.shape.origin},
            "workload": vars(self.workload),
            "fits": self.fits,
            "sequences_fit": self.sequences,
            "optimal_batch": self.optimal_batch,
            "quantities": {
                q.key: {
                    "value": q.value,
                    "unit": q.unit,
                    "formula": q.formula,
                    "estimate": q.estimate,
                }
                for q in self.quantities
            },
            "trtllm": self.trtllm,
            "notes": self.notes,
        }


def check_workload(shape: ModelShape, work: Workload) -> None:
    """Bad input is refused naming the option and the limit."""
    if work.context > shape.max_position_embeddings:
        raise EdgectlError(
            f"--context {work.context} is over {shape.name}'s maximum of "
            f"{shape.max_position_embeddings} tokens (max_position_embeddings)"
        )
    if work.context < 2:
        raise EdgectlError(f"--context {work.context}: need at least 2 tokens")
    if work.input_tokens + work.output_tokens > work.context:
        raise EdgectlError(
            f"--input-tokens {work.input_tokens} + --output-tokens {work.output_tokens} is over "
            f"--context {work.context}"
        )
    if work.concurrency < 1:
        raise EdgectlError(f"--concurrency {work.concurrency}: need at least 1")


def make_plan(
    recipe: Recipe, device_name: str, device: Device, shape: ModelShape, work: Workload
) -> Plan:
    check_workload(shape, work)
    engine = "cpu" if device.kind == "cpu" else "trtllm"
    devices = recipe.trtllm.tp_size * recipe.trtllm.pp_size if engine == "trtllm" else 1
    weights = memory.weight_bytes(shape, recipe, engine)
    kv_cache = recipe.precision.kv_cache
    kv_token = memory.kv_bytes_per_token(shape, kv_cache)
    kv_seq = memory.kv_bytes_per_sequence(shape, kv_cache, work.context)
    fraction = work.kv_fraction or recipe.trtllm.serving.kv_cache_free_gpu_mem_fraction
    capacity = device.memory_gb * memory.GB * devices

    def fit_with(batch: int, num_tokens: int) -> memory.Fit:
        space = memory.workspace_bytes(shape, device.runtime_gb * devices, num_tokens, batch)
        return memory.fit_sequences(capacity, weights.total, space, fraction, kv_seq)

    max_input = max(work.input_tokens, min(recipe.trtllm.max_input_len, work.context - 1))
    first = fit_with(recipe.trtllm.max_batch_size, recipe.trtllm.max_num_tokens)
    batch = max(1, min(first.sequences, MAX_BATCH))
    num_tokens = _round_up(max_input + batch, 64)
    fit = fit_with(batch, num_tokens)
    batch = max(1, min(fit.sequences, batch))

    hw = performance.Hardware.of(device, set(weights.matmul), devices)
    work_model = performance.Workload.of(shape, weights, kv_token)
    position = work.input_tokens + work.output_tokens / 2
    running = max(1, min(work.concurrency, fit.sequences or 1))
    single = performance.decode_step(work_model, hw, 1, position)
    step = performance.decode_step(work_model, hw, running, position)
    knee = performance.knee_batch(work_model, hw, position)
    optimal = max(
        1, min(fit.sequences or 1, math.floor(knee) if math.isfinite(knee) else MAX_BATCH)
    )
    prefill = performance.prefill_seconds(work_model, hw, work.input_tokens)
    ttft_1 = performance.ttft_seconds(work_model, hw, work.input_tokens, 1)
    ttft_c = performance.ttft_seconds(work_model, hw, work.input_tokens, running)
    price = work.price_per_hour if work.price_per_hour is not None else device.price_per_hour
    econ = cost.Economics(
        price_per_hour=price * devices,
        power_w=cost.power_w(device.tdp_w, device.idle_power_fraction, step) * devices,
        queries_per_hour=cost.queries_per_hour(prefill, step, work.output_tokens),
        aggregate_tok_s=step.aggregate_tok_s,
        output_tokens=work.output_tokens,
    )
    plan = Plan(
        recipe=recipe.name,
        device=device_name,
        device_title=device.title,
        engine=engine,
        devices=devices,
        shape=shape,
        workload=work,
        fits=fit.sequences >= 1,
        sequences=fit.sequences,
        optimal_batch=optimal,
    )
    q = plan.quantities.append
    fmt_list = ", ".join(f"{f} {p / 1e6:,.0f}M" for f, p in weights.formats.items())
    q(
        Quantity(
            "weights_gb",
            "weight bytes",
            weights.total / memory.GB,
            "GB",
            f"sum over matrices of params x bits/8 + fp16 scales ({fmt_list} params; "
            f"INT8: 2 B per output channel, INT4: 2 B per {recipe.precision.group_size} "
            f"weights) + norms = {weights.total / memory.GB:.3f} GB",
        )
    )
    q(
        Quantity(
            "kv_per_token_kib",
            "KV bytes per token",
            kv_token / 1024,
            "KiB",
            f"2 x layers {shape.num_hidden_layers} x kv_heads {shape.num_key_value_heads} x "
            f"head_dim {shape.head_dim} x {memory.KV_BYTES[kv_cache]} B ({kv_cache}) "
            f"= {kv_token:,} B",
        )
    )
    q(
        Quantity(
            "kv_per_sequence_mib",
            "KV bytes per sequence",
            kv_seq / 2**20,
            "MiB",
            f"KV per token x context {work.context} rounded up to {memory.TOKENS_PER_BLOCK}-token "
            f"blocks = {kv_seq:,} B",
        )
    )
    q(
        Quantity(
            "workspace_gb",
            "activation/workspace allowance",
            fit.workspace / memory.GB,
            "GB",
            f"runtime {device.runtime_gb} GB x {devices} + max_num_tokens {num_tokens} x "
            f"{memory.activation_bytes_per_token(shape):,} B (one layer's widest fp16 tensors) "
            f"+ max_batch_size {batch} x vocab {shape.vocab_size} x 4 B logits",
        )
    )
    q(
        Quantity(
            "kv_pool_gb",
            "KV-cache pool",
            fit.kv_pool / memory.GB,
            "GB",
            f"kv_cache_free_gpu_mem_fraction {fraction} x (memory {capacity / memory.GB:.0f} GB "
            f"- weights - workspace = {fit.free / memory.GB:.2f} GB)",
        )
    )
    q(
        Quantity(
            "sequences_fit",
            f"sequences of {work.context} tokens that fit",
            fit.sequences,
            "",
            "floor(KV pool / KV per sequence)",
        )
    )
    q(
        Quantity(
            "decode_tok_s_1",
            "decode tok/s, one sequence",
            single.per_sequence_tok_s,
            "tok/s",
            _step_formula(single, hw),
        )
    )
    q(
        Quantity(
            "decode_tok_s_per_seq",
            f"decode tok/s per sequence at batch {running}",
            step.per_sequence_tok_s,
            "tok/s",
            _step_formula(step, hw),
        )
    )
    q(
        Quantity(
            "decode_tok_s",
            f"decode tok/s aggregate at batch {running}",
            step.aggregate_tok_s,
            "tok/s",
            f"batch {running} / step {step.seconds * 1e3:.2f} ms ({step.bound}-bound)",
        )
    )
    turn = f"{knee:.1f}" if math.isfinite(knee) else "never (KV reads grow faster than math)"
    q(
        Quantity(
            "optimal_batch",
            "optimal batch (knee)",
            optimal,
            "",
            f"weights read time / (one sequence's math time - its KV read time) = {turn}; "
            "capped by the sequences that fit",
        )
    )
    q(
        Quantity(
            "prefill_ms",
            f"prefill of {work.input_tokens} tokens",
            prefill * 1e3,
            "ms",
            "max(weights / bandwidth, 2 x params x prompt / math rate + attention) "
            "+ prefill overhead",
        )
    )
    q(Quantity("ttft_ms_1", "TTFT at concurrency 1", ttft_1 * 1e3, "ms", "the prefill"))
    q(
        Quantity(
            "ttft_ms",
            f"TTFT at concurrency {running}",
            ttft_c * 1e3,
            "ms",
            f"prefill x (1 + ({running} - 1) / 2) + half a decode step: a new prompt waits for "
            "half the other clients' prefills (they run one at a time) and the running step",
        )
    )
    q(
        Quantity(
            "queries_per_hour",
            "queries per hour",
            econ.queries_per_hour,
            "",
            f"3600 / (prefill + {work.output_tokens} output tokens x step / batch {running}): "
            "a prefill stalls the batch, decode steps are shared",
        )
    )
    q(
        Quantity(
            "output_tok_s",
            "output tok/s with prefills",
            econ.output_tok_s,
            "tok/s",
            f"queries per hour / 3600 x {work.output_tokens} output tokens "
            "(what a load test's output throughput measures)",
        )
    )
    q(
        Quantity(
            "usd_per_1k_queries",
            "cost per 1,000 queries",
            econ.usd_per_1k_queries,
            "USD",
            f"${econ.price_per_hour:.3f}/h / queries per hour x 1000",
        )
    )
    q(
        Quantity(
            "usd_per_million_tokens",
            "cost per million generated tokens",
            econ.usd_per_million_tokens,
            "USD",
            "$/h / (output tok/s with prefills x 3600) x 1e6",
        )
    )
    q(
        Quantity(
            "power_w",
            "power (estimate)",
            econ.power_w,
            "W",
            f"TDP {device.tdp_w:g} W x {devices} x (idle {device.idle_power_fraction} + "
            f"{1 - device.idle_power_fraction:.1f} x utilisation {cost.utilisation(step):.2f})",
            estimate=True,
        )
    )
    q(
        Quantity(
            "wh_per_query",
            "energy per query (estimate)",
            econ.wh_per_query,
            "Wh",
            "power / queries per hour",
            estimate=True,
        )
    )
    q(
        Quantity(
            "wh_per_1k_tokens",
            "energy per 1,000 tokens (estimate)",
            econ.wh_per_1k_tokens,
            "Wh",
            "power / (output tok/s with prefills x 3600) x 1000",
            estimate=True,
        )
    )
    if work.api_usd_per_1k_tokens:
        tokens = work.input_tokens + work.output_tokens
        even = econ.break_even_queries_per_day(work.api_usd_per_1k_tokens, tokens)
        q(
            Quantity(
                "break_even_queries_per_day",
                "break-even vs the API, queries/day",
                even,
                "",
                f"${econ.price_per_hour:.3f}/h x 24 / (${work.api_usd_per_1k_tokens}/1k tokens "
                f"x {tokens} tokens per query); capacity {econ.capacity_per_day:,.0f}/day",
            )
        )
        if even > econ.capacity_per_day:
            plan.notes.append(
                f"the API is cheaper at any load this device can serve: break-even "
                f"{even:,.0f} queries/day is over its capacity of {econ.capacity_per_day:,.0f}"
            )
    if engine == "trtllm":
        plan.trtllm = {
            "max_batch_size": batch,
            "max_input_len": min(max_input, work.context - 1),
            "max_seq_len": work.context,
            "max_num_tokens": num_tokens,
            "kv_cache_free_gpu_mem_fraction": fraction,
        }
    if not plan.fits:
        plan.notes.append(
            f"does not fit: weights {weights.total / memory.GB:.1f} GB + workspace "
            f"{fit.workspace / memory.GB:.1f} GB leave {fit.free / memory.GB:.1f} GB of "
            f"{capacity / memory.GB:.0f} GB for the KV cache, one sequence needs "
            f"{kv_seq / memory.GB:.2f} GB"
        )
    if work.concurrency > fit.sequences >= 1:
        plan.notes.append(
            f"--concurrency {work.concurrency} is over the {fit.sequences} sequences that fit; "
            f"speeds are for batch {running}, the rest queue"
        )
    return plan


def _step_formula(step: performance.Step, hw: performance.Hardware) -> str:
    return (
        f"1 / (max(read {step.memory_s * 1e3:.3f} ms, math {step.compute_s * 1e3:.3f} ms) "
        f"+ overhead {step.overhead_s * 1e3:.3f} ms); read = (weights + batch x KV so far) / "
        f"{hw.bandwidth / 1e9:.0f} GB/s reached"
    )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
