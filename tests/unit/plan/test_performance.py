"""The roofline: bandwidth-bound below the knee, compute-bound past it, overheads on top."""

from __future__ import annotations

import pytest

from edgectl.plan import cost, performance

# 1 GB streamed a step, 1e9 fp16 params (2 GFLOP a token), no KV growth.
WORK = performance.Workload(1e9, {"fp16": 10**9}, 0.0, 0, ("fp16", 0))
HW = performance.Hardware(1e12, {"fp16": 1e14}, 0.0, 0.0, 0.0)


def test_the_knee_is_where_math_catches_up_with_the_reads() -> None:
    # read 1 ms a step; math 2e9 / 1e14 = 0.02 ms a sequence -> 50 sequences
    assert performance.knee_batch(WORK, HW, 0) == pytest.approx(50)
    below = performance.decode_step(WORK, HW, 10, 0)
    above = performance.decode_step(WORK, HW, 100, 0)
    assert below.bound == "bandwidth" and below.seconds == pytest.approx(1e-3)
    assert above.bound == "compute" and above.seconds == pytest.approx(2e-3)


def test_kv_reads_that_outgrow_the_math_never_turn_compute_bound() -> None:
    heavy_kv = performance.Workload(1e9, {"fp16": 10**9}, 0.0, 10**6, ("fp16", 0))
    assert performance.knee_batch(heavy_kv, HW, 1000) == float("inf")


def test_batching_raises_the_aggregate_and_lowers_the_per_sequence_rate() -> None:
    steps = [performance.decode_step(WORK, HW, b, 0) for b in (1, 2, 8, 32, 64, 128)]
    aggregate = [s.aggregate_tok_s for s in steps]
    per_sequence = [s.per_sequence_tok_s for s in steps]
    assert aggregate == sorted(aggregate)
    assert per_sequence == sorted(per_sequence, reverse=True)
    # past the knee the aggregate is flat at rate / FLOPs per token
    assert aggregate[-1] == pytest.approx(1e14 / 2e9)


def test_overheads_add_per_step_and_per_sequence() -> None:
    hw = performance.Hardware(1e12, {"fp16": 1e14}, 0.010, 0.001, 0.0)
    assert performance.decode_step(WORK, hw, 4, 0).seconds == pytest.approx(1e-3 + 0.010 + 0.004)


def test_prefill_scores_the_head_once() -> None:
    work = performance.Workload(1e9, {"fp16": 10**9 + 10**8}, 0.0, 0, ("fp16", 10**8))
    # 100 prompt tokens: 2 x 1e9 x 100 + 2 x 1e8 x 1 FLOPs at 1e14
    expected = (2e9 * 100 + 2e8) / 1e14
    assert performance.prefill_seconds(work, HW, 100) == pytest.approx(expected)


def test_more_concurrency_waits_longer_for_the_first_token() -> None:
    ttfts = [performance.ttft_seconds(WORK, HW, 128, c) for c in (1, 2, 16, 64)]
    assert ttfts == sorted(ttfts)


def test_a_query_pays_its_prefill_alone_and_shares_its_decode_steps() -> None:
    step = performance.decode_step(WORK, HW, 10, 0)  # 1 ms
    # 0.1 s prefill + 100 tokens x 1 ms / 10 = 0.11 s a query
    assert cost.queries_per_hour(0.1, step, 100) == pytest.approx(3600 / 0.11)


def test_money_and_energy_by_hand() -> None:
    econ = cost.Economics(
        price_per_hour=2.0,
        power_w=500.0,
        queries_per_hour=36_000,
        aggregate_tok_s=1000.0,
        output_tokens=100,
    )
    assert econ.output_tok_s == 1000.0
    assert econ.usd_per_1k_queries == pytest.approx(2.0 / 36)
    assert econ.usd_per_million_tokens == pytest.approx(2.0 / 3.6)
    assert econ.wh_per_query == pytest.approx(500 / 36_000)
    assert econ.wh_per_1k_tokens == pytest.approx(500 / 3600)
    # $48/day vs $0.001 a query (1k tokens at $0.001/1k) -> 48,000 queries/day
    assert econ.break_even_queries_per_day(0.001, 1000) == pytest.approx(48_000)


def test_ttft_at_concurrency_queues_behind_half_the_other_prefills() -> None:
    prefill = performance.prefill_seconds(WORK, HW, 128)
    step = performance.decode_step(WORK, HW, 15, 128).seconds
    assert performance.ttft_seconds(WORK, HW, 128, 16) == pytest.approx(
        prefill * (1 + 15 / 2) + step / 2
    )
