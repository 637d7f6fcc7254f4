"""Rendering the Triton model repository, and the ensemble's wiring checked against each step."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from edgectl.config import EngineConfig
from edgectl.deploy.repository import (
    ServedModel,
    _render_one,
    parse_model_config,
    render_repository,
)
from edgectl.errors import EdgectlError

ENGINE = EngineConfig(max_batch_size=8, max_input_len=256, max_output_len=128)
PLAIN_NAMES = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble", "tensorrt_llm_bls")

ENGINES = ["cpu", "trtllm"]


# -- helpers ----------------------------------------------------------------------------------


def served(engine: str = "cpu", name: str = "ensemble") -> ServedModel:
    return ServedModel(
        name=name,
        engine=engine,
        engine_dir=Path("/artifacts/smollm2/engine"),
        tokenizer_dir=Path("/artifacts/smollm2/tokenizer"),
        end_id=2,
        pad_id=0,
    )


def render(tmp_path: Path, *models: ServedModel, engine: EngineConfig = ENGINE) -> Path:
    return render_repository(list(models), engine, tmp_path / "repo")


def load_configs(repo: Path) -> dict[str, mc.ModelConfig]:
    return {
        path.parent.name: parse_model_config(path.read_text(encoding="utf-8"), str(path))
        for path in sorted(repo.glob("*/config.pbtxt"))
    }


def parameters(config: mc.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def inputs(config: mc.ModelConfig) -> dict[str, mc.ModelInput]:
    return {tensor.name: tensor for tensor in config.input}


def outputs(config: mc.ModelConfig) -> dict[str, mc.ModelOutput]:
    return {tensor.name: tensor for tensor in config.output}


def type_name(data_type: int) -> str:
    return mc.DataType.Name(data_type)


def dims_compatible(a, b) -> bool:
    """Same rank, and every dimension equal or variable (-1)."""
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))


def wiring_problems(configs: dict[str, mc.ModelConfig], ensemble_name: str) -> list[str]:
    """Everything wrong with how the ensemble's steps connect; empty when the wiring holds."""
    ensemble = configs[ensemble_name]
    problems: list[str] = []
    # tensor name -> (its declaration, optional, who provides it)
    tensors = {name: (t, t.optional, "ensemble input") for name, t in inputs(ensemble).items()}
    consumed: set[str] = set()
    steps = ensemble.ensemble_scheduling.step
    for step in steps:  # first collect what every step produces
        model = configs.get(step.model_name)
        if model is None:
            problems.append(f"step {step.model_name!r} is not in the repository")
            continue
        for key, tensor in step.output_map.items():
            if key not in outputs(model):
                problems.append(f"{step.model_name} has no output {key!r}")
            elif tensor in tensors:
                problems.append(f"{tensor} is produced twice")
            else:
                tensors[tensor] = (outputs(model)[key], False, step.model_name)
    for step in steps:
        model = configs.get(step.model_name)
        if model is None:
            continue
        model_inputs = inputs(model)
        for key, tensor in step.input_map.items():
            consumed.add(tensor)
            if key not in model_inputs:
                problems.append(f"{step.model_name} has no input {key!r}")
            elif tensor not in tensors:
                problems.append(f"{step.model_name}.{key} reads {tensor!r}, which nothing provides")
            else:
                provided, optional, source = tensors[tensor]
                expected = model_inputs[key]
                if provided.data_type != expected.data_type:
                    problems.append(
                        f"{step.model_name}.{key} is {type_name(expected.data_type)} but {tensor} "
                        f"({source}) is {type_name(provided.data_type)}"
                    )
                if not dims_compatible(provided.dims, expected.dims):
                    problems.append(
                        f"{step.model_name}.{key} has dims {list(expected.dims)} but {tensor} "
                        f"({source}) has {list(provided.dims)}"
                    )
                if optional and not model_inputs[key].optional:
                    problems.append(f"required {step.model_name}.{key} fed by optional {tensor}")
        for name, tensor in model_inputs.items():
            if not tensor.optional and name not in step.input_map:
                problems.append(f"required input {step.model_name}.{name} is not fed")
    for name, tensor in outputs(ensemble).items():
        if name not in tensors or tensors[name][2] == "ensemble input":
            problems.append(f"ensemble output {name!r} is produced by no step")
        elif tensors[name][0].data_type != tensor.data_type:
            problems.append(f"ensemble output {name!r} has the wrong type")
    problems.extend(
        f"ensemble input {name!r} is never used"
        for name in inputs(ensemble)
        if name not in consumed
    )
    return problems


# -- rendering --------------------------------------------------------------------------------


def test_cpu_render_creates_the_five_models(tmp_path):
    repo = render(tmp_path, served("cpu"))
    assert sorted(path.name for path in repo.iterdir()) == sorted(PLAIN_NAMES)
    for name in PLAIN_NAMES:
        assert (repo / name / "config.pbtxt").is_file()
        assert (repo / name / "1").is_dir()
    for name in ("preprocessing", "tensorrt_llm", "postprocessing", "tensorrt_llm_bls"):
        assert (repo / name / "1" / "model.py").is_file()
    assert not (tmp_path / "repo.partial").exists()


@pytest.mark.parametrize("engine", ENGINES)
def test_every_rendered_config_parses_and_matches_its_folder(tmp_path, engine):
    configs = load_configs(render(tmp_path, served(engine)))
    assert sorted(configs) == sorted(PLAIN_NAMES)
    for folder, config in configs.items():
        assert config.name == folder
        assert config.max_batch_size == ENGINE.max_batch_size


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", ["ensemble", "smollm2-int4"])
def test_ensemble_wiring_is_consistent(tmp_path, engine, name):
    configs = load_configs(render(tmp_path, served(engine, name)))
    assert wiring_problems(configs, name) == []
    ensemble = configs[name]
    assert ensemble.platform == "ensemble"
    assert "text_output" in outputs(ensemble)


def test_wiring_check_catches_mismatches(tmp_path):
    configs = load_configs(render(tmp_path, served("cpu")))
    inputs(configs["tensorrt_llm"])["input_ids"].data_type = mc.TYPE_INT64
    inputs(configs["postprocessing"])["SEQUENCE_LENGTH"].dims.append(4)
    outputs(configs["preprocessing"])["OUT_PAD_ID"].name = "OUT_PAD"
    assert sorted(wiring_problems(configs, "ensemble")) == sorted(
        [
            "preprocessing has no output 'OUT_PAD_ID'",
            "tensorrt_llm.input_ids is TYPE_INT64 but _INPUT_ID (preprocessing) is TYPE_INT32",
            "tensorrt_llm.pad_id reads '_PREPROCESSOR_PAD_ID', which nothing provides",
            "postprocessing.SEQUENCE_LENGTH has dims [-1, 4] but _SEQUENCE_LENGTH (tensorrt_llm) "
            "has [-1]",
        ]
    )


def test_cpu_engine_step_is_a_decoupled_python_model(tmp_path):
    repo = render(tmp_path, served("cpu"))
    configs = load_configs(repo)
    step = configs["tensorrt_llm"]
    assert step.backend == "python"
    assert step.model_transaction_policy.decoupled is True
    params = parameters(step)
    assert params["model_dir"] == "/artifacts/smollm2/engine"
    assert (params["max_input_len"], params["max_output_len"]) == ("256", "128")
    assert params["end_id"] == "2"
    assert params["exclude_input_in_output"] == "true"
    # the engine and postprocessing share the cancellation board, outside the repository
    cancel_dir = Path(params["cancel_dir"])
    assert parameters(configs["postprocessing"])["cancel_dir"] == str(cancel_dir)
    assert cancel_dir.is_relative_to(tmp_path.resolve() / "run")
    assert "request_key" in outputs(step)


def test_trtllm_engine_step_uses_inflight_fused_batching(tmp_path):
    step = load_configs(render(tmp_path, served("trtllm")))["tensorrt_llm"]
    assert step.backend == "tensorrtllm"
    assert step.model_transaction_policy.decoupled is True
    params = parameters(step)
    assert params["gpt_model_type"] == "inflight_fused_batching"
    assert params["gpt_model_path"] == "/artifacts/smollm2/engine"
    assert len(step.input) == len(inputs(step))  # each tensor declared once


def test_preprocessing_gets_the_limits_and_tokenizer(tmp_path):
    params = parameters(load_configs(render(tmp_path, served("cpu")))["preprocessing"])
    assert params["tokenizer_dir"] == "/artifacts/smollm2/tokenizer"
    assert (params["max_input_len"], params["max_output_len"]) == ("256", "128")
    assert (params["end_id"], params["pad_id"]) == ("2", "0")


def test_named_model_renders_prefixed_composing_models(tmp_path):
    configs = load_configs(render(tmp_path, served("cpu", "smollm2-int4")))
    assert sorted(configs) == sorted(
        [
            "smollm2-int4",
            "smollm2-int4_preprocessing",
            "smollm2-int4_tensorrt_llm",
            "smollm2-int4_postprocessing",
            "smollm2-int4_tensorrt_llm_bls",
        ]
    )
    steps = configs["smollm2-int4"].ensemble_scheduling.step
    assert [step.model_name for step in steps] == [
        "smollm2-int4_preprocessing",
        "smollm2-int4_tensorrt_llm",
        "smollm2-int4_postprocessing",
    ]


def test_two_models_render_side_by_side(tmp_path):
    configs = load_configs(render(tmp_path, served("cpu"), served("cpu", "smollm2-int4")))
    assert len(configs) == 10
    assert wiring_problems(configs, "ensemble") == []
    assert wiring_problems(configs, "smollm2-int4") == []
    engines = ("tensorrt_llm", "smollm2-int4_tensorrt_llm")
    boards = {parameters(configs[name])["cancel_dir"] for name in engines}
    assert len(boards) == 2  # each model has its own cancellation board


def test_two_models_with_one_name_are_rejected(tmp_path):
    with pytest.raises(EdgectlError, match="two models would both render 'preprocessing'"):
        render(tmp_path, served("cpu"), served("cpu"))


def test_no_models_is_an_error(tmp_path):
    with pytest.raises(EdgectlError, match="no models"):
        render(tmp_path)


def test_failed_render_leaves_the_previous_repository_untouched(tmp_path):
    repo = render(tmp_path, served("cpu"))
    with pytest.raises(EdgectlError, match="model.engine must be one of"):
        render(tmp_path, served("tpu"))
    assert sorted(path.name for path in repo.iterdir()) == sorted(PLAIN_NAMES)
    assert not (tmp_path / "repo.partial").exists()


def test_rerender_replaces_the_repository(tmp_path):
    render(tmp_path, served("cpu", "first"))
    repo = render(tmp_path, served("cpu"), engine=EngineConfig(max_batch_size=3))
    configs = load_configs(repo)
    assert sorted(configs) == sorted(PLAIN_NAMES)
    assert configs["ensemble"].max_batch_size == 3


# -- one template -----------------------------------------------------------------------------


def render_template(tmp_path: Path, text: str, folder: str = "pre", **values: str) -> Path:
    template = tmp_path / "template"
    template.mkdir()
    (template / "config.pbtxt").write_text(text, encoding="utf-8")
    _render_one(template, tmp_path / folder, {"name": "pre", **values})
    return tmp_path / folder


def test_render_one_substitutes_placeholders(tmp_path):
    out = render_template(tmp_path, 'name: "${name}"\nbackend: "${backend}"\n', backend="python")
    config = parse_model_config((out / "config.pbtxt").read_text(), "x")
    assert (config.name, config.backend) == ("pre", "python")
    assert (out / "1").is_dir()


def test_unknown_placeholder_is_an_error(tmp_path):
    with pytest.raises(EdgectlError, match="unknown placeholder 'nope'"):
        render_template(tmp_path, 'name: "${name}"\nbackend: "${nope}"\n')


def test_config_name_must_match_its_folder(tmp_path):
    with pytest.raises(EdgectlError, match="must equal its folder 'other'"):
        render_template(tmp_path, 'name: "${name}"\n', folder="other")


def test_unknown_config_field_is_an_error(tmp_path):
    with pytest.raises(EdgectlError, match="not a valid Triton model config"):
        render_template(tmp_path, 'name: "${name}"\nmax_batch: 4\n')


@pytest.mark.parametrize("enabled", [True, False])
def test_preprocessing_dynamic_batching_can_be_switched_off(tmp_path: Path, enabled: bool) -> None:
    engine = ENGINE.model_copy(
        update={"preprocessing_dynamic_batching": enabled, "preprocessing_queue_delay_us": 250}
    )
    config = load_configs(render(tmp_path, served(), engine=engine))["preprocessing"]
    assert config.HasField("dynamic_batching") is enabled
    if enabled:
        assert config.dynamic_batching.max_queue_delay_microseconds == 250


def test_unary_mode_puts_a_unary_front_before_the_decoupled_cpu_engine(tmp_path):
    unary = EngineConfig(max_batch_size=8, max_input_len=256, max_output_len=128, decoupled=False)
    configs = load_configs(render(tmp_path, served("cpu"), engine=unary))
    front, engine = configs["tensorrt_llm"], configs["tensorrt_llm_decoupled"]
    assert not front.model_transaction_policy.decoupled
    assert engine.model_transaction_policy.decoupled
    assert parameters(front)["engine_model"] == "tensorrt_llm_decoupled"
    assert front.instance_group[0].count == unary.front_instances
    assert inputs(front).keys() == inputs(engine).keys()
    assert outputs(front).keys() == outputs(engine).keys()
    assert not configs["tensorrt_llm_bls"].model_transaction_policy.decoupled
    assert wiring_problems(configs, "ensemble") == []


@pytest.mark.parametrize("decoupled", [True, False])
def test_gpu_engine_step_follows_decoupled_mode(tmp_path, decoupled):
    mode = EngineConfig(
        max_batch_size=8, max_input_len=256, max_output_len=128, decoupled=decoupled
    )
    configs = load_configs(render(tmp_path, served("trtllm"), engine=mode))
    assert configs["tensorrt_llm"].model_transaction_policy.decoupled is decoupled
    assert configs["tensorrt_llm_bls"].model_transaction_policy.decoupled is decoupled


def test_gpu_engine_step_takes_the_engines_beam_width(tmp_path):
    repo = render_repository([served("trtllm")], ENGINE, tmp_path / "repo", {"max_beam_width": "4"})
    assert parameters(load_configs(repo)["tensorrt_llm"])["max_beam_width"] == "4"
