"""A whole plan: defaults from the recipe, errors naming the option, --write-recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgectl.build.recipe import check_against_model, load_recipe
from edgectl.errors import EdgectlError
from edgectl.plan import catalog, sizing
from edgectl.plan.shapes import recipe_shape
from edgectl.plan.writeback import write_recipe
from tests.paths import REPO_ROOT

LLAMA = REPO_ROOT / "build" / "llama-3.1-8b-int4-awq.yaml"


def plan_for(path: Path, device: str, **work) -> sizing.Plan:
    recipe = load_recipe(path)
    workload = sizing.default_workload(
        recipe,
        work.pop("context", None),
        work.pop("input_tokens", None),
        work.pop("output_tokens", None),
        work.pop("concurrency", None),
        **work,
    )
    return sizing.make_plan(
        recipe, device, catalog.get_device(device), recipe_shape(recipe), workload
    )


def test_defaults_come_from_the_recipe(isolated_cache) -> None:
    plan = plan_for(LLAMA, "h100-sxm")
    work = plan.workload
    assert (work.context, work.output_tokens, work.input_tokens, work.concurrency) == (
        8192,
        256,
        8192 - 256,
        64,
    )


def test_llama_on_h100_by_hand(isolated_cache) -> None:
    plan = plan_for(LLAMA, "h100-sxm", context=4096, concurrency=32)
    assert plan.value("weights_gb") == pytest.approx(5.700591616)
    assert plan.value("kv_per_token_kib") == 64  # fp8 KV cache
    assert plan.value("kv_per_sequence_mib") == 256
    assert plan.fits and plan.sequences == plan.value("sequences_fit")
    free = 80e9 - 5.700591616e9 - plan.value("workspace_gb") * 1e9
    assert plan.sequences == int(0.9 * free // (65_536 * 4096))
    # bandwidth-bound at batch 1: the weights but the embedding table (a lookup), plus the
    # KV cache at the mean position (3840 + 256 / 2), at 80 % of 3,350 GB/s
    streamed = 5.700591616e9 - 2 * 525_336_576
    one = plan.value("decode_tok_s_1")
    assert one == pytest.approx(1 / ((streamed + 65_536 * (3840 + 128)) / 2680e9))
    assert plan.trtllm["max_batch_size"] == plan.sequences
    assert plan.trtllm["max_seq_len"] == 4096 and plan.trtllm["max_input_len"] == 4095


def test_more_concurrency_more_aggregate_until_the_batch_is_full(isolated_cache) -> None:
    rates = [
        plan_for(LLAMA, "l4", context=2048, concurrency=c).value("decode_tok_s")
        for c in (1, 4, 16, 64)
    ]
    assert rates == sorted(rates)


def test_context_over_the_model_maximum_is_refused(isolated_cache) -> None:
    with pytest.raises(
        EdgectlError,
        match=r"--context 200000 is over llama-3.1-8b's maximum "
        r"of 131072 tokens \(max_position_embeddings\)",
    ):
        plan_for(LLAMA, "h100-sxm", context=200_000)


def test_prompt_and_output_must_fit_the_context(isolated_cache) -> None:
    with pytest.raises(EdgectlError, match=r"--input-tokens 4000 \+ --output-tokens 200"):
        plan_for(LLAMA, "h100-sxm", context=4096, input_tokens=4000, output_tokens=200)


def test_a_model_too_big_for_the_device_says_why(isolated_cache) -> None:
    plan = plan_for(LLAMA, "jetson-orin-nano", context=131_072)  # one sequence's KV: 8.6 GB
    assert not plan.fits and plan.sequences == 0
    assert any(note.startswith("does not fit") for note in plan.notes)


def test_an_api_price_gives_a_break_even(isolated_cache) -> None:
    plan = plan_for(
        LLAMA, "l4", context=2048, concurrency=8, price_per_hour=0.8, api_usd_per_1k_tokens=0.0006
    )
    # $0.80 x 24 a day / ($0.0006 x 2048 tokens / 1000) a query
    assert plan.value("break_even_queries_per_day") == pytest.approx(0.8 * 24 / (0.0006 * 2.048))
    assert plan.value("usd_per_1k_queries") == pytest.approx(
        0.8 / plan.value("queries_per_hour") * 1000
    )


@pytest.mark.parametrize("device", ["h100-sxm", "l4", "jetson-agx-orin-64gb"])
def test_write_recipe_loads_and_passes_the_trtllm_checks(device, tmp_path, isolated_cache):
    recipe = load_recipe(LLAMA)
    plan = plan_for(LLAMA, device, context=4096, concurrency=16)
    out = tmp_path / "sub" / "sized.yaml"
    written = write_recipe(LLAMA, recipe, plan, out)
    again = load_recipe(out)  # the schema's TensorRT-LLM checks run on load
    check_against_model(again, plan.shape.as_config())
    assert again == written
    assert again.trtllm.max_batch_size == plan.trtllm["max_batch_size"]
    assert again.trtllm.max_seq_len == 4096 and again.trtllm.max_input_len < 4096
    assert again.trtllm.max_num_tokens == plan.trtllm["max_num_tokens"]
    assert again.trtllm.serving.kv_cache_free_gpu_mem_fraction == 0.9
    assert again.source == recipe.source  # the checkpoint path survives the move
    assert again.precision == recipe.precision and again.calibration == recipe.calibration


def test_write_recipe_needs_a_gpu_device(tmp_path, isolated_cache) -> None:
    recipe = load_recipe(LLAMA)
    plan = plan_for(LLAMA, "cpu", context=1024, concurrency=1)
    with pytest.raises(EdgectlError, match="--write-recipe: device cpu runs the CPU engine"):
        write_recipe(LLAMA, recipe, plan, tmp_path / "x.yaml")
