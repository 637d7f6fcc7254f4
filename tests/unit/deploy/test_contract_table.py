"""Every rendered config against the pinned NVIDIA contract table (_contract/contract.yaml)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from edgectl.config import EngineConfig
from edgectl.resources import model_templates
from tests.paths import REPO_ROOT
from tests.unit.deploy.test_repository import inputs, load_configs, outputs, render, served

CONTRACT = yaml.safe_load(
    (model_templates() / "_contract" / "contract.yaml").read_text(encoding="utf-8")
)["models"]
STATUSES = {"implemented", "refused", "ignored", "placeholder", "omitted", "extension"}
RENDERED = ["preprocessing", "tensorrt_llm", "postprocessing", "ensemble", "tensorrt_llm_bls"]


def expected(model: str, side: str, engine: str) -> dict[str, dict]:
    """What a rendered config must declare: NVIDIA's tensors we keep, plus our extensions
    served on ``engine``."""
    return {
        entry["name"]: entry
        for entry in CONTRACT[model][side]
        if entry["status"] != "omitted"
        and (entry["status"] != "extension" or entry["engines"] in ("both", engine))
    }


def test_table_is_well_formed():
    for model, sides in CONTRACT.items():
        for side in ("inputs", "outputs"):
            names = [entry["name"] for entry in sides[side]]
            assert len(names) == len(set(names)), f"{model} {side} repeats a name"
            for entry in sides[side]:
                assert entry["status"] in STATUSES, entry
                assert entry["dtype"].startswith("TYPE_"), entry
                assert (entry["nvidia"] == "-") == (entry["status"] == "extension"), entry


@pytest.mark.parametrize("decoupled", [True, False], ids=["decoupled", "unary"])
@pytest.mark.parametrize("engine", ["cpu", "trtllm"])
@pytest.mark.parametrize("model", RENDERED)
def test_rendered_config_declares_exactly_the_table(tmp_path, engine, model, decoupled):
    mode = EngineConfig(decoupled=decoupled)
    config = load_configs(render(tmp_path, served(engine), engine=mode))[model]
    for side, declared in (("inputs", inputs(config)), ("outputs", outputs(config))):
        table = expected(model, side, engine)
        if model == "tensorrt_llm" and engine == "trtllm":  # NVIDIA's backend: no extensions
            table = {name: e for name, e in table.items() if e["status"] != "extension"}
        assert sorted(declared) == sorted(table), f"{model} {side}"
        for name, tensor in declared.items():
            entry = table[name]
            assert type_name(tensor.data_type) == entry["dtype"], (model, name)
            assert list(tensor.dims) == entry["dims"], (model, name)
            if side == "inputs":
                assert tensor.optional == entry["optional"], (model, name)


def type_name(data_type: int) -> str:
    from tritonclient.grpc import model_config_pb2 as mc

    return mc.DataType.Name(data_type)


def test_renamed_inputs_are_accepted_under_both_names():
    for model in ("ensemble", "tensorrt_llm"):
        names = {entry["name"] for entry in CONTRACT[model]["inputs"]}
        assert {"seed", "random_seed", "min_tokens", "min_length"} <= names


def test_refused_engine_inputs_are_refused_by_the_engine_step():
    from edgectl.runtime.request_inputs import IGNORED_INPUTS, UNSUPPORTED_INPUTS

    refused = {e["name"] for e in CONTRACT["tensorrt_llm"]["inputs"] if e["status"] == "refused"}
    handled_elsewhere = {"bad_words_list", "decoder_input_ids", "decoder_input_lengths"}
    assert refused - handled_elsewhere == set(UNSUPPORTED_INPUTS)
    ignored = {e["name"] for e in CONTRACT["tensorrt_llm"]["inputs"] if e["status"] == "ignored"}
    assert ignored == set(IGNORED_INPUTS)


def test_contract_doc_is_rendered_from_the_table():
    script = REPO_ROOT / "scripts" / "render_contract_doc.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
