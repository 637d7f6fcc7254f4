"""Real TensorRT-LLM checkpoints (modelopt on CPU) for a tiny Llama: dtypes, shapes, values."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml

from edgectl.build.builder import build_trtllm, read_manifest
from edgectl.build.recipe import load_recipe
from edgectl.deploy.repository import parse_model_config
from tests.unit.build.conftest import HIDDEN, INTERMEDIATE

pytest.importorskip("modelopt", reason="the trtllm target needs the build extra (nvidia-modelopt)")

DOWN_PROJ = "transformer.layers.0.mlp.proj"


def tiny_recipe(tmp_path: Path, source: Path, precision: str, extra: str = "") -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "name: tiny\n"
        f"source: {source}\n"
        "targets: [trtllm]\n"
        f"precision:\n  {precision}\n"
        "calibration: {mode: static, samples: 4, seq_len: 32}\n"
        "trtllm:\n  max_batch_size: 4\n  max_input_len: 128\n  max_seq_len: 256\n"
        f"  max_num_tokens: 512\n{extra}",
        encoding="utf-8",
    )
    return path


def original_down_proj(source: Path):
    from safetensors.torch import load_file

    weights = load_file(source / "model.safetensors")
    return weights["model.layers.0.mlp.down_proj.weight"].float()  # (HIDDEN, INTERMEDIATE)


def checkpoint_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "checkpoint" / "rank0.safetensors")


def unpack_int4(packed):
    """modelopt packs two signed 4-bit values per int8 along the output dimension."""
    import torch

    raw = packed.view(torch.uint8).to(torch.int16)
    low, high = raw & 0xF, (raw >> 4) & 0xF
    low = torch.where(low > 7, low - 16, low)
    high = torch.where(high > 7, high - 16, high)
    return torch.stack([low, high], 1).reshape(-1, packed.shape[1]).float()


def relative_error(approx, exact) -> float:
    return float((approx - exact).norm() / exact.norm())


@pytest.fixture(scope="module")
def int8_build(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8")
    recipe = load_recipe(tiny_recipe(folder, tiny_llama, "weights: int8_wo"))
    return build_trtllm(recipe, out=folder / "out")


def test_int8_weight_only_checkpoint(int8_build, tiny_llama):
    folder = int8_build.artifact
    config = json.loads((folder / "checkpoint" / "config.json").read_text())
    assert config["architecture"] == "LlamaForCausalLM"
    assert config["quantization"]["quant_algo"] == "W8A16"
    tensors = checkpoint_tensors(folder)
    weight = tensors[f"{DOWN_PROJ}.weight"]
    scales = tensors[f"{DOWN_PROJ}.weights_scaling_factor"]
    assert str(weight.dtype) == "torch.int8"
    assert tuple(weight.shape) == (HIDDEN, INTERMEDIATE)
    assert tuple(scales.shape) == (HIDDEN,)
    original = original_down_proj(tiny_llama)
    dequantized = weight.float() * scales.float()[:, None]
    assert relative_error(dequantized, original) < 0.01
    # A wrong layout would not come close: the check can fail.
    assert relative_error(dequantized.flip(0), original) > 0.5
    # The output head stays full precision (TensorRT-LLM's exclude_modules).
    assert "lm_head" in config["quantization"]["exclude_modules"]
    assert str(tensors["lm_head.weight"].dtype) == "torch.float16"


def test_int8_build_writes_plan_manifest_and_repository(int8_build):
    folder = int8_build.artifact
    manifest = read_manifest(folder)
    assert manifest["engine"] == "tensorrt_llm"
    assert manifest["engine_build"]["status"].startswith("pending")
    assert manifest["quantization"]["quant_algo"] == "W8A16"
    assert manifest["build_tools"]["nvidia-modelopt"] != "not installed"
    shipped = manifest["artifacts"]
    assert "checkpoint/rank0.safetensors" in shipped
    assert shipped["checkpoint/rank0.safetensors"]["bytes"] > 0
    script = folder / "build_engine.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    assert "trtllm-build --checkpoint_dir checkpoint --output_dir engine" in script.read_text()
    job = yaml.safe_load((folder / "engine-build-job.yaml").read_text())
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["securityContext"]["runAsNonRoot"] is True
    engine_config = parse_model_config(
        (folder / "model_repository" / "tensorrt_llm" / "config.pbtxt").read_text(), "engine"
    )
    assert engine_config.backend == "tensorrtllm"
    assert engine_config.max_batch_size == 4
    assert engine_config.parameters["gpt_model_path"].string_value == str(folder / "engine")
    pre = (folder / "model_repository" / "preprocessing" / "config.pbtxt").read_text()
    assert str(folder / "tokenizer") in pre
    assert (folder / "tokenizer" / "tokenizer.json").is_file()
    assert not folder.with_name(folder.name + ".partial").exists()


def test_int4_weight_only_checkpoint_dequantizes_close(tiny_llama, tmp_path):
    recipe = load_recipe(tiny_recipe(tmp_path, tiny_llama, "weights: int4_wo\n  group_size: 64"))
    folder = build_trtllm(recipe, out=tmp_path / "out").artifact
    quantization = json.loads((folder / "checkpoint" / "config.json").read_text())["quantization"]
    assert quantization["quant_algo"] == "W4A16_AWQ"  # TensorRT-LLM's grouped INT4 format
    assert quantization["group_size"] == 64
    tensors = checkpoint_tensors(folder)
    packed = tensors[f"{DOWN_PROJ}.weight"]
    scales = tensors[f"{DOWN_PROJ}.weights_scaling_factor"]
    assert str(packed.dtype) == "torch.int8"
    assert tuple(packed.shape) == (HIDDEN // 2, INTERMEDIATE)  # two 4-bit values a byte
    assert tuple(scales.shape) == (HIDDEN, INTERMEDIATE // 64)
    values = unpack_int4(packed)
    assert values.min() >= -8 and values.max() <= 7
    dequantized = values * scales.float().repeat_interleave(64, dim=1)
    original = original_down_proj(tiny_llama)
    # 4-bit round-to-nearest of Gaussian weights: ~10% relative error is the expected level.
    assert relative_error(dequantized, original) < 0.15
    assert relative_error(dequantized.flip(0), original) > 0.5
    size = (folder / "checkpoint" / "rank0.safetensors").stat().st_size
    int8_like = HIDDEN * INTERMEDIATE  # one byte a weight for this one layer
    assert packed.numel() == int8_like // 2 and size > 0


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["int4_awq", "int4_gptq"])
def test_data_aware_int4_checkpoints(tiny_llama, tmp_path, weights):
    recipe = load_recipe(tiny_recipe(tmp_path, tiny_llama, f"weights: {weights}\n  group_size: 64"))
    folder = build_trtllm(recipe, out=tmp_path / "out").artifact
    tensors = checkpoint_tensors(folder)
    values = unpack_int4(tensors[f"{DOWN_PROJ}.weight"])
    scales = tensors[f"{DOWN_PROJ}.weights_scaling_factor"].float().repeat_interleave(64, dim=1)
    dequantized = values * scales
    prescale = tensors.get(f"{DOWN_PROJ}.prequant_scaling_factor")
    if prescale is not None:  # AWQ folds a per-input-channel scale into the activations
        dequantized = dequantized * prescale.float()[None, :]
    assert relative_error(dequantized, original_down_proj(tiny_llama)) < 0.2


def test_mixed_precision_checkpoint(tiny_llama, tmp_path):
    mixed = (
        "mixed_precision:\n  layers:\n    - {range: [0, 0], weights: int8_wo}\n"
        "    - {range: [1, 1], weights: fp16}\n"
    )
    path = tiny_recipe(tmp_path, tiny_llama, "weights: int8_wo")
    path.write_text(path.read_text() + mixed, encoding="utf-8")
    folder = build_trtllm(load_recipe(path), out=tmp_path / "out").artifact
    tensors = checkpoint_tensors(folder)
    assert str(tensors[f"{DOWN_PROJ}.weight"].dtype) == "torch.int8"
    assert str(tensors["transformer.layers.1.mlp.proj.weight"].dtype) == "torch.float16"
    assert "transformer.layers.1.mlp.proj.weights_scaling_factor" not in tensors
