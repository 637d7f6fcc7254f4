from __future__ import annotations

from pathlib import Path

import pytest

from edgectl.build.recipe import EMBEDDED_SOURCE, check_against_model, load_recipe
from edgectl.errors import EdgectlError
from tests.model_shapes import SMOLLM2_CONFIG
from tests.paths import REPO_ROOT

BUILD_DIR = REPO_ROOT / "build"


def write_recipe(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def recipe_error(path: Path) -> str:
    with pytest.raises(EdgectlError) as err:
        load_recipe(path)
    return str(err.value)


@pytest.mark.parametrize(("name", "weights"), [("int8", "int8_wo"), ("int4", "int4_wo")])
def test_served_recipes_load(name, weights):
    recipe = load_recipe(BUILD_DIR / f"smollm2-135m-{name}.yaml")
    assert recipe.name == f"smollm2-135m-{name}"
    assert recipe.precision.weights == weights
    assert recipe.source == EMBEDDED_SOURCE
    assert recipe.targets == ["cpu"]
    assert recipe.eos_token == "<|im_end|>"


@pytest.mark.parametrize("path", sorted(BUILD_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem


def test_minimal_recipe_gets_defaults(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, "name: tiny\n"))
    assert recipe.source == EMBEDDED_SOURCE
    assert (recipe.precision.weights, recipe.precision.group_size) == ("int8_wo", 128)
    assert (recipe.precision.kv_cache, recipe.calibration.mode) == ("fp16", "none")
    assert recipe.targets == ["cpu"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("name: tiny\nsoruce: x\n", "soruce: unknown key"),
        ("name: tiny\nprecision:\n  weight: int8_wo\n", "precision.weight: unknown key"),
        ("name: tiny\nprecision:\n  weights: int3\n", "precision.weights: "),
        ("name: tiny\nprecision:\n  kv_cache: int4\n", "precision.kv_cache: "),
        ("name: tiny\nprecision:\n  group_size: 4\n", "precision.group_size: "),
        ("name: tiny\ncpu:\n  ratio: 0\n", "cpu.ratio: "),
        ("name: tiny\ncalibration:\n  samples: 0\n", "calibration.samples: "),
        ("name: tiny\ntargets: [gpu]\n", "targets.0: "),
        ("name: tiny\ntargets: []\n", "targets: "),
        ("name: tiny\ntrtllm:\n  max_batch_size: 0\n", "trtllm.max_batch_size: "),
        ("name: tiny\ntrtllm:\n  serving:\n    kv_cache_free_gpu_mem_fraction: 1.5\n",
         "trtllm.serving.kv_cache_free_gpu_mem_fraction: "),
        ("name: tiny\nmixed_precision:\n  layers: []\n", "mixed_precision.layers: "),
        ("name: 'bad name!'\n", "name: "),
        ("description: no name\n", "name: "),
    ],
)  # fmt: skip
def test_invalid_recipe_names_the_field(tmp_path, text, key):
    path = write_recipe(tmp_path, text)
    message = recipe_error(path)
    assert f"  {key}" in message
    assert str(path) in message


TRTLLM = "name: gpu\ntargets: [trtllm]\n"
STATIC = "calibration:\n  mode: static\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Flag combinations TensorRT-LLM rejects at engine-build time.
        (TRTLLM + "trtllm:\n  use_paged_context_fmha: false\n  serving:\n"
         "    enable_kv_cache_reuse: true\n",
         "enable_kv_cache_reuse needs use_paged_context_fmha"),
        (TRTLLM + "trtllm:\n  paged_kv_cache: false\n",
         "use_paged_context_fmha needs paged_kv_cache"),
        (TRTLLM + "trtllm:\n  max_input_len: 2048\n  max_seq_len: 2048\n",
         "max_input_len (2048) must be below max_seq_len (2048)"),
        (TRTLLM + STATIC + "precision:\n  weights: int4_awq\n  group_size: 32\n",
         "precision.group_size 32: TensorRT-LLM's INT4 kernels take 64 or 128"),
        (TRTLLM + STATIC + "precision:\n  weights: int4_gptq\n  act_order: true\n",
         "does not support act-order GPTQ"),
        (TRTLLM + "precision:\n  weights: fp32\n", "TensorRT-LLM engines build fp16"),
        (TRTLLM + "trtllm:\n  speculative_decoding_mode: draft_tokens_external\n",
         "needs max_draft_len"),
        (TRTLLM + "trtllm:\n  max_draft_len: 4\n", "speculative_decoding_mode is not"),
        # Data-aware methods need calibration text; act-order is a GPTQ option.
        ("name: t\nprecision:\n  weights: int4_awq\n", "calibration.mode must be static"),
        ("name: t\nprecision:\n  weights: int8_sq\n", "calibration.mode must be static"),
        ("name: t\nprecision:\n  kv_cache: int8\n", "kv_cache int8 needs calibration"),
        ("name: t\nprecision:\n  act_order: true\n", "act_order applies to int4_gptq only"),
        ("name: t\nmixed_precision:\n  layers:\n    - {range: [0, 5], weights: fp16}\n"
         "    - {range: [5, 9], weights: int8_wo}\n", "layer ranges overlap at layer 5"),
        ("name: t\nmixed_precision:\n  layers:\n    - {range: [4, 2], weights: fp16}\n",
         "need 0 <= first <= last"),
    ],
)  # fmt: skip
def test_combinations_tensorrt_llm_rejects_fail_at_recipe_time(tmp_path, text, expected):
    assert expected in recipe_error(write_recipe(tmp_path, text))


def test_act_order_gptq_is_fine_for_the_cpu_target(tmp_path):
    text = "name: t\n" + STATIC + "precision:\n  weights: int4_gptq\n  act_order: true\n"
    assert load_recipe(write_recipe(tmp_path, text)).precision.act_order


SMOLLM2 = SMOLLM2_CONFIG


def recipe_from(tmp_path, text):
    return load_recipe(write_recipe(tmp_path, text))


def model_error(recipe, config=SMOLLM2) -> str:
    with pytest.raises(EdgectlError) as err:
        check_against_model(recipe, config)
    return str(err.value)


def test_group_128_does_not_divide_smollm2(tmp_path):
    recipe = recipe_from(tmp_path, TRTLLM + STATIC + "precision:\n  weights: int4_awq\n")
    message = model_error(recipe)
    assert "precision.group_size 128 does not divide hidden_size 576" in message
    assert "e.g. 64" in message


def test_tensor_parallel_must_divide_the_heads(tmp_path):
    recipe = recipe_from(tmp_path, TRTLLM + "trtllm:\n  tp_size: 2\n")
    assert "trtllm.tp_size 2 must divide num_attention_heads 9" in model_error(recipe)


def test_layer_ranges_must_exist(tmp_path):
    text = "name: t\nmixed_precision:\n  layers:\n    - {range: [24, 31], weights: fp16}\n"
    assert "the model has layers 0..29" in model_error(recipe_from(tmp_path, text))


def test_shipped_smollm2_recipes_fit_the_model():
    for path in BUILD_DIR.glob("smollm2-*.yaml"):
        check_against_model(load_recipe(path), SMOLLM2)


def test_calibration_dataset_path_is_resolved_and_checked(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "text.txt").write_text("hello", encoding="utf-8")
    recipe = recipe_from(tmp_path / "r", "name: t\ncalibration:\n  dataset: text.txt\n")
    assert recipe.calibration.dataset == str(tmp_path / "r" / "text.txt")
    bad = write_recipe(tmp_path / "s", "name: t\ncalibration:\n  dataset: missing.txt\n")
    assert "calibration.dataset" in recipe_error(bad)


def test_recipe_that_is_not_a_mapping_is_rejected(tmp_path):
    assert "must hold a mapping" in recipe_error(write_recipe(tmp_path, "[1, 2]\n"))


def test_missing_recipe_is_reported(tmp_path):
    assert "does not exist" in recipe_error(tmp_path / "nope.yaml")


def test_relative_source_is_resolved_against_the_recipe_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path / "recipes", "name: local\nsource: ../checkpoints/llama\n")
    recipe = load_recipe(Path("recipes/recipe.yaml"))
    assert path.exists()
    assert recipe.source == str((tmp_path / "checkpoints" / "llama").resolve())


def test_absolute_source_is_kept(tmp_path):
    source = tmp_path / "ckpt"
    recipe = load_recipe(write_recipe(tmp_path / "r", f"name: local\nsource: {source}\n"))
    assert recipe.source == str(source)
