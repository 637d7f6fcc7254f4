"""Render ``model_repository/`` templates into a repository tritonserver can serve.

Templates use ``${placeholders}`` (``string.Template``); every rendered
``config.pbtxt`` is parsed with Triton's own ``ModelConfig`` protobuf schema, so an
unknown field or a typo fails here, not at server start.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from string import Template

from edgectl.build.recipe import TrtllmServing
from edgectl.config import EngineConfig
from edgectl.errors import EdgectlError
from edgectl.resources import model_templates
from edgectl.staging import staged_directory

TEMPLATES = model_templates()
ENGINE_TEMPLATES = {"cpu": "cpu_engine", "trtllm": "tensorrt_llm"}


@dataclass(frozen=True)
class ServedModel:
    """What one ensemble serves: its name, engine kind and built artifact."""

    name: str
    engine: str  # "cpu" or "trtllm"
    engine_dir: Path
    tokenizer_dir: Path
    end_id: int
    pad_id: int

    @property
    def step_names(self) -> dict[str, str]:
        """Composing model names; the default ensemble keeps NVIDIA's plain names."""
        prefix = "" if self.name == "ensemble" else f"{self.name}_"
        return {
            "ensemble_name": self.name,
            "preprocessing_name": f"{prefix}preprocessing",
            "engine_name": f"{prefix}tensorrt_llm",
            "postprocessing_name": f"{prefix}postprocessing",
            "bls_name": f"{prefix}tensorrt_llm_bls",
        }


def parse_model_config(text: str, source: str):
    """Parse with Triton's schema (shipped in tritonclient); unknown fields are errors."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as err:
        raise EdgectlError(f"{source} is not a valid Triton model config: {err}") from None


def template_values(model: ServedModel, engine: EngineConfig, run_dir: Path) -> dict[str, str]:
    def flag(value: bool) -> str:
        return "true" if value else "false"

    # Only the CPU engine step emits request_key (client cancellation, see cancel_board).
    forwards_cancel = model.engine == "cpu"

    max_seq = engine.max_input_len + engine.max_output_len
    return {
        **model.step_names,
        # unary mode: the decoupled CPU engine behind the unary front
        "engine_stream_name": decoupled_engine_name(model),
        "bls_instances": "1" if engine.decoupled else str(engine.front_instances),
        "engine_io": (TEMPLATES / "_contract" / "engine_io.pbtxt").read_text(encoding="utf-8"),
        "engine_extension_io": (TEMPLATES / "_contract" / "cpu_engine_extensions.pbtxt").read_text(
            encoding="utf-8"
        ),
        "decoupled": flag(engine.decoupled),
        "front_instances": str(engine.front_instances),
        "front_max_concurrent": str(engine.front_max_concurrent),
        "engine_dir": str(model.engine_dir),
        "tokenizer_dir": str(model.tokenizer_dir),
        "end_id": str(model.end_id),
        "pad_id": str(model.pad_id),
        "cancel_dir": str(run_dir / "cancel" / model.name) if forwards_cancel else "",
        # The co-resident time-slicing board every CPU engine step consults (timeslice.slots).
        "timeslice_dir": str(run_dir / "timeslice"),
        **engine_extension_values(model.engine == "cpu"),
        "postprocessing_cancel_input": (
            'input_map { key: "REQUEST_KEY" value: "_REQUEST_KEY" }' if forwards_cancel else ""
        ),
        "max_batch_size": str(engine.max_batch_size),
        "max_input_len": str(engine.max_input_len),
        "max_output_len": str(engine.max_output_len),
        "max_num_seqs": str(engine.max_num_seqs),
        "max_queue_size": str(engine.max_queue_size),
        "queue_timeout_s": f"{engine.queue_timeout_s:g}",
        "max_num_tokens": str(engine.max_num_tokens),
        "kv_cache_gb": f"{engine.kv_cache_gb:g}",
        "enable_kv_cache_reuse": flag(engine.enable_kv_cache_reuse),
        "exclude_input_in_output": flag(engine.exclude_input_in_output),
        "max_request_seconds": f"{engine.max_request_seconds:g}",
        "preprocessing_instances": str(engine.preprocessing_instances),
        "preprocessing_dynamic_batching": (
            "dynamic_batching { max_queue_delay_microseconds: "
            f"{engine.preprocessing_queue_delay_us} }}"
            if engine.preprocessing_dynamic_batching
            else ""
        ),
        # tensorrt_llm-only knobs (GPU template): the recipe's serving defaults
        **trtllm_serving_values(TrtllmServing()),
        "max_tokens_in_paged_kv_cache": str(engine.max_num_seqs * max_seq),
        "max_beam_width": "1",  # a TensorRT-LLM build overrides it with the engine's own
        "dynamic_quantization_group_size": str(engine.dynamic_quantization_group_size),
        "kv_cache_precision": engine.kv_cache_precision or "",
        **cpu_step_values(engine),
    }


# RAG drop counts: preprocessing -> CPU engine step (echoed on its responses) -> ensemble.
# An ensemble output may only come from one decoupled origin, so the counts ride through
# the engine step; NVIDIA's GPU backend cannot echo them, so that ensemble lacks them.
RAG_COUNTS = ("rag_passages_dropped", "rag_tokens_dropped")


def engine_extension_values(cpu: bool) -> dict[str, str]:
    """Ensemble lines for the CPU engine step's extensions (ignore_eos, finish_reason,
    request_key, the RAG drop counts); NVIDIA's GPU backend has no such tensors, so they
    are left out there."""
    if not cpu:
        return {
            "ensemble_engine_extension_inputs": "",
            "ensemble_engine_extension_outputs": "",
            "engine_extension_maps": "",
            "preprocessing_extension_maps": "",
        }
    rag_outputs = "".join(
        f',\n  {{ name: "{name}" data_type: TYPE_INT32 dims: [ 1 ] }}' for name in RAG_COUNTS
    )
    rag_maps = "".join(
        f'input_map {{ key: "{name}" value: "_{name.upper()}" }} '
        f'output_map {{ key: "{name}" value: "{name}" }} '
        for name in RAG_COUNTS
    )
    return {
        "ensemble_engine_extension_inputs": (
            'input [ { name: "ignore_eos" data_type: TYPE_BOOL dims: [ 1 ] optional: true } ]'
        ),
        "ensemble_engine_extension_outputs": (
            'output [\n  { name: "finish_reason" data_type: TYPE_STRING dims: [ -1 ] }'
            f"{rag_outputs}\n]"
        ),
        "engine_extension_maps": (
            'input_map { key: "ignore_eos" value: "ignore_eos" } '
            'output_map { key: "finish_reason" value: "finish_reason" } '
            'output_map { key: "request_key" value: "_REQUEST_KEY" } ' + rag_maps.rstrip()
        ),
        "preprocessing_extension_maps": " ".join(
            f'output_map {{ key: "{name.upper()}" value: "_{name.upper()}" }}'
            for name in RAG_COUNTS
        ),
    }


def cpu_step_values(engine: EngineConfig) -> dict[str, str]:
    """Speculative decoding, coalescing (CPU engine step) and RAG (preprocessing) values."""
    spec = engine.speculative
    return {
        "speculative_mode": spec.mode,
        # GPU template: a draft engine hands the target its logits directly
        "speculative_fast_logits": "true" if spec.mode == "draft" else "false",
        "num_assistant_tokens": str(spec.num_assistant_tokens),
        "max_ngram_size": str(spec.max_ngram_size),
        "draft_dir": str(Path(spec.draft).expanduser().resolve()) if spec.draft else "",
        "inference_precision": engine.inference_precision,
        "rag_template": engine.rag_template,
        "rag_reserve_tokens": str(engine.rag_reserve_tokens),
        "coalesce": "true" if engine.coalesce else "false",
        "response_cache_size": str(engine.response_cache_size),
        "response_cache_ttl_s": f"{engine.response_cache_ttl_s:g}",
    }


def trtllm_serving_values(serving: TrtllmServing) -> dict[str, str]:
    """The ``tensorrt_llm`` config values a recipe's serving section decides."""
    return {
        "batch_scheduler_policy": serving.batch_scheduler_policy,
        "kv_cache_free_gpu_mem_fraction": f"{serving.kv_cache_free_gpu_mem_fraction:g}",
        "engine_queue_delay_us": str(serving.max_queue_delay_microseconds),
        "engine_instance_count": str(serving.instance_count),
    }


def _render_one(template_dir: Path, out_dir: Path, values: dict[str, str]) -> None:
    shutil.copytree(template_dir, out_dir, ignore=shutil.ignore_patterns("__pycache__"))
    (out_dir / "1").mkdir(exist_ok=True)
    config_path = out_dir / "config.pbtxt"
    try:
        text = Template(config_path.read_text(encoding="utf-8")).substitute(values)
    except KeyError as err:
        raise EdgectlError(f"{template_dir}/config.pbtxt uses unknown placeholder {err}") from None
    parsed = parse_model_config(text, str(config_path))
    if parsed.name != out_dir.name:
        raise EdgectlError(
            f"{config_path}: name {parsed.name!r} must equal its folder {out_dir.name!r}"
        )
    config_path.write_text(text, encoding="utf-8")


def model_templates_for(
    model: ServedModel, engine: EngineConfig, values: dict[str, str]
) -> list[tuple[str, str, dict[str, str]]]:
    """(template, name key, values) of every model one served model renders.

    Unary mode on the CPU keeps the decoupled engine (renamed) and puts the unary
    front under the engine step's name; NVIDIA's GPU backend is unary by itself.
    """
    engine_steps = [(ENGINE_TEMPLATES[model.engine], "engine_name", values)]
    if model.engine == "cpu" and not engine.decoupled:
        hidden = {**values, "engine_name": values["engine_stream_name"]}
        engine_steps = [
            ("cpu_engine", "engine_stream_name", hidden),
            ("unary_front", "engine_name", values),
        ]
    return [
        ("preprocessing", "preprocessing_name", values),
        *engine_steps,
        ("postprocessing", "postprocessing_name", values),
        ("ensemble", "ensemble_name", values),
        ("tensorrt_llm_bls", "bls_name", values),
    ]


def models_to_load(model: ServedModel, engine: EngineConfig) -> list[str]:
    """What the server loads for one served model: models nothing else loads for it.

    The ensemble loads its steps; the BLS model and, in unary mode, the decoupled
    CPU engine behind the unary front (called through BLS, not a step) are loaded
    by name.
    """
    names = [model.name, model.step_names["bls_name"]]
    if model.engine == "cpu" and not engine.decoupled:
        names.append(decoupled_engine_name(model))
    return names


def decoupled_engine_name(model: ServedModel) -> str:
    """Unary mode on the CPU: the decoupled engine step's name behind the unary front."""
    return f"{model.step_names['engine_name']}_decoupled"


def render_repository(
    models: list[ServedModel],
    engine: EngineConfig,
    out: Path,
    overrides: dict[str, str] | None = None,
) -> Path:
    """Render every model's ensemble and steps into ``out`` (replaced atomically).

    ``overrides`` replaces template values (a TensorRT-LLM build's serving parameters).

    Run-time scratch (the cancellation board) goes beside ``out`` in ``run/``,
    since a deployed repository may be read-only.
    """
    if not models:
        raise EdgectlError("nothing to render: no models configured")
    with staged_directory(out) as partial:
        partial.mkdir(parents=True)
        for model in models:
            if model.engine not in ENGINE_TEMPLATES:
                raise EdgectlError(f"model.engine must be one of {sorted(ENGINE_TEMPLATES)}")
            values = template_values(model, engine, out.resolve().parent / "run")
            values.update(overrides or {})
            for template, name_key, model_values in model_templates_for(model, engine, values):
                target = partial / values[name_key]
                if target.exists():
                    raise EdgectlError(f"two models would both render {values[name_key]!r}")
                _render_one(TEMPLATES / template, target, model_values)
    return out
