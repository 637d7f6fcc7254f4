"""trtllm.runtime: llmapi renders NVIDIA's LLM-API model (text in / text out) from a recipe."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from edgectl.build.builder import build_trtllm, read_manifest
from edgectl.build.recipe import load_recipe
from edgectl.deploy.repository import parse_model_config
from edgectl.errors import EdgectlError
from edgectl.resources import model_templates
from edgectl.runtime.llmapi import request_settings
from tests.unit.build.test_trtllm_checkpoint import tiny_recipe

CONTRACT = yaml.safe_load(
    (model_templates() / "_contract" / "contract.yaml").read_text(encoding="utf-8")
)["models"]["llmapi_tensorrt_llm"]
LLMAPI = "  runtime: llmapi\n"


def test_llmapi_build_renders_the_model_and_its_settings_without_an_engine(tiny_llama, tmp_path):
    recipe = load_recipe(tiny_recipe(tmp_path, tiny_llama, "weights: fp16", LLMAPI))
    folder = build_trtllm(recipe, out=tmp_path / "out").artifact
    repository = folder / "model_repository"
    assert sorted(p.name for p in repository.iterdir()) == ["tensorrt_llm"]  # no ensemble
    text = (repository / "tensorrt_llm" / "config.pbtxt").read_text(encoding="utf-8")
    config = parse_model_config(text, "llmapi")
    assert config.backend == "python" and config.max_batch_size == 0
    assert [i.name for i in config.input] == [e["name"] for e in CONTRACT["inputs"]]
    assert [o.name for o in config.output] == [e["name"] for e in CONTRACT["outputs"]]
    settings = yaml.safe_load((repository / "tensorrt_llm" / "1" / "model.yaml").read_text())
    assert settings["model"].endswith("hf_checkpoint") and settings["backend"] == "pytorch"
    assert settings["triton_config"] == {"max_batch_size": 0, "decoupled": True}
    assert (folder / "hf_checkpoint" / "config.json").is_file()
    assert (repository / "tensorrt_llm" / "1" / "model.py").is_file()
    assert not read_manifest(folder).engine_build.command  # nothing to compile


def test_llmapi_refuses_quantized_weights(tiny_llama, tmp_path):
    with pytest.raises(EdgectlError, match="llmapi serves the float checkpoint"):
        load_recipe(tiny_recipe(tmp_path, tiny_llama, "weights: int8_wo", LLMAPI))


def lookup_of(**tensors):
    return {name: np.asarray(value) for name, value in tensors.items()}.get


def test_request_settings_map_sampling_inputs():
    settings = request_settings(
        lookup_of(
            text_input=np.asarray([b"Hello"], dtype=object),
            streaming=np.asarray([True]),
            sampling_param_temperature=np.asarray([0.5], dtype=np.float32),
            sampling_param_max_tokens=np.asarray([7], dtype=np.int32),
            sampling_param_stop=np.asarray([b"END", b"STOP"], dtype=object),
            return_cumulative_logprob=np.asarray([True]),
        ),
        decoupled=True,
    )
    assert settings.prompt == "Hello" and settings.streaming
    assert settings.sampling == {"temperature": 0.5, "max_tokens": 7, "stop": ["END", "STOP"]}
    assert settings.return_finish_reason and settings.return_cumulative_logprob


@pytest.mark.parametrize(
    ("extra", "fragment", "decoupled"),
    [
        ({"streaming": np.asarray([True])}, "streaming needs", False),
        ({"lora_id": np.asarray([3], dtype=np.uint64)}, "lora_id is not supported", True),
        ({"sampling_param_best_of": np.asarray([2], dtype=np.int32)}, "best_of", True),
    ],
)
def test_request_settings_refuse_what_is_not_served(extra, fragment, decoupled):
    lookup = lookup_of(text_input=np.asarray([b"Hi"], dtype=object), **extra)
    with pytest.raises(ValueError, match=fragment):
        request_settings(lookup, decoupled)
