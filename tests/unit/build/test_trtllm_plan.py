"""The trtllm-build command each shipped recipe generates, and the plan files around it."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from edgectl.build.recipe import load_recipe
from edgectl.build.trtllm.plan import (
    JOB_MANIFEST,
    SCRIPT,
    job_name,
    plan_engine_build,
    tensorrt_llm_available,
    trtllm_build_command,
)
from tests.paths import REPO_ROOT

BUILD_DIR = REPO_ROOT / "build"
GPU_RECIPES = [p for p in sorted(BUILD_DIR.glob("*.yaml")) if "trtllm" in load_recipe(p).targets]


def flags(command: list[str]) -> dict[str, str]:
    """``--flag value`` pairs of an argv (every trtllm-build flag we emit takes a value)."""
    assert command[0] == "trtllm-build"
    pairs = command[1:]
    assert len(pairs) % 2 == 0, pairs
    keys = pairs[0::2]
    assert all(key.startswith("--") for key in keys), keys
    assert len(set(keys)) == len(keys), "a flag given twice"
    return dict(zip(keys, pairs[1::2], strict=True))


def test_there_are_gpu_recipes_to_check():
    names = {p.stem for p in GPU_RECIPES}
    assert {"llama-3.1-8b-int4-awq", "llama-2-7b-int4-gptq", "smollm2-135m-int4-awq"} <= names


@pytest.mark.parametrize("path", GPU_RECIPES, ids=lambda p: p.stem)
def test_each_recipe_command_carries_its_limits(path):
    recipe = load_recipe(path)
    target = recipe.trtllm
    given = flags(trtllm_build_command(recipe, "ckpt", "eng"))
    assert given["--checkpoint_dir"] == "ckpt"
    assert given["--output_dir"] == "eng"
    assert given["--max_batch_size"] == str(target.max_batch_size)
    assert given["--max_input_len"] == str(target.max_input_len)
    assert given["--max_seq_len"] == str(target.max_seq_len)
    assert given["--max_num_tokens"] == str(target.max_num_tokens)
    assert given["--max_beam_width"] == str(target.max_beam_width)
    assert given["--kv_cache_type"] == "paged"
    assert given["--use_paged_context_fmha"] == "enable"
    assert given["--remove_input_padding"] == "enable"
    assert given["--gemm_plugin"] == "auto"
    assert given["--workers"] == str(target.tp_size * target.pp_size)
    assert ("--use_fp8_context_fmha" in given) == (recipe.precision.kv_cache == "fp8")
    assert "--speculative_decoding_mode" not in given


def test_fp8_kv_recipe_enables_fp8_context_fmha():
    recipe = load_recipe(BUILD_DIR / "llama-3.1-8b-int4-awq.yaml")
    assert flags(trtllm_build_command(recipe, "c", "e"))["--use_fp8_context_fmha"] == "enable"


def test_tensor_parallel_recipe_asks_for_two_gpus(tmp_path):
    recipe = load_recipe(BUILD_DIR / "llama-2-7b-int4-gptq.yaml")
    plan = plan_engine_build(recipe, tmp_path)
    assert plan.gpus == 2
    job = yaml.safe_load((tmp_path / JOB_MANIFEST).read_text())
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "nvidia.com/gpu": 2
    }


def test_speculative_decoding_flags(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: spec\ntargets: [trtllm]\ntrtllm:\n"
        "  speculative_decoding_mode: draft_tokens_external\n  max_draft_len: 4\n"
    )
    given = flags(trtllm_build_command(load_recipe(path), "c", "e"))
    assert given["--speculative_decoding_mode"] == "draft_tokens_external"
    assert given["--max_draft_len"] == "4"


@pytest.mark.skipif(tensorrt_llm_available(), reason="TensorRT-LLM is installed: the plan runs")
def test_plan_script_runs_and_says_what_is_missing(tmp_path):
    recipe = load_recipe(BUILD_DIR / "smollm2-135m-int4-awq.yaml")
    plan = plan_engine_build(recipe, tmp_path)
    assert not plan.ran
    script = tmp_path / SCRIPT
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert "trtllm-build --checkpoint_dir checkpoint --output_dir engine" in text
    # Executed for real: without TensorRT-LLM it stops with a clear message, exit 2.
    result = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "trtllm-build not found" in result.stderr
    plan_json = (tmp_path / "plan.json").read_text()
    assert "pending: needs a GPU node with TensorRT-LLM" in plan_json


def test_job_names_are_dns_labels():
    assert job_name("Llama_3.1-8B") == "edgectl-engine-build-llama-3-1-8b"
    assert len(job_name("x" * 80)) <= 63
