"""tensorrt_llm_bls: the ensemble's three steps driven from Python (NVIDIA's BLS model).

The steps and their tensor maps are read from the rendered ensemble's own
``config.pbtxt``, so the BLS model and the ensemble cannot drift apart.  Triton
calls are injected (``Call``), which keeps this module free of Triton.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgectl.runtime.contract import InvalidRequest

Tensors = dict[str, np.ndarray]
# call(model, inputs, requested_outputs, decoupled) -> the model's responses
Call = Callable[[str, Tensors, list[str], bool], Iterable[Tensors]]

# BLS-only inputs of NVIDIA's tensorrt_llm_bls: refused when set, or ignored.
BLS_REFUSED = {
    "image_input": "multimodal models are not served",
    "image_bytes_input": "multimodal models are not served",
    "image_url_input": "multimodal models are not served",
    "video_bytes_input": "multimodal models are not served",
    "use_draft_logits": "no draft model is configured",
}
BLS_IGNORED = ("num_draft_tokens",)


@dataclass(frozen=True)
class Step:
    model: str
    inputs: dict[str, str]  # step input name -> pool tensor name
    outputs: dict[str, str]  # step output name -> pool tensor name


@dataclass(frozen=True)
class EnsemblePlan:
    pre: Step
    engine: Step
    post: Step
    outputs: tuple[str, ...]  # the ensemble's outputs, in order

    @classmethod
    def from_config(cls, path: Path) -> EnsemblePlan:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2

        config = text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
        steps = [
            Step(step.model_name, dict(step.input_map), dict(step.output_map))
            for step in config.ensemble_scheduling.step
        ]
        if len(steps) != 3:
            raise ValueError(f"{path}: expected preprocessing, engine, postprocessing steps")
        return cls(*steps, outputs=tuple(output.name for output in config.output))


def _is_set(array: np.ndarray) -> bool:
    flat = np.asarray(array).reshape(-1)
    return flat.size > 0 and any(bool(value) for value in flat)


def refuse_bls_inputs(client: Tensors) -> None:
    for name, reason in BLS_REFUSED.items():
        if name in client and _is_set(client[name]):
            raise InvalidRequest(f"{name} is not supported: {reason}")


def _step_inputs(step: Step, pool: Tensors) -> Tensors:
    return {key: pool[value] for key, value in step.inputs.items() if value in pool}


def _collect(step: Step, produced: Tensors, pool: Tensors) -> None:
    for key, value in step.outputs.items():
        if key in produced:
            pool[value] = produced[key]


@dataclass
class BlsResponse:
    tensors: Tensors  # the client's requested outputs
    engine_key: int | None  # the CPU engine's request_key (to forward a cancellation)


def run(
    plan: EnsemblePlan, call: Call, client: Tensors, requested: list[str], decoupled: bool
) -> Iterator[BlsResponse]:
    """Yield one client response (requested outputs only) per engine response."""
    refuse_bls_inputs(client)
    pool = {name: value for name, value in client.items() if name not in BLS_REFUSED}
    for name in BLS_IGNORED:
        pool.pop(name, None)
    [pre] = call(plan.pre.model, _step_inputs(plan.pre, pool), list(plan.pre.outputs), False)
    _collect(plan.pre, pre, pool)
    engine_inputs = _step_inputs(plan.engine, pool)
    for produced in call(plan.engine.model, engine_inputs, list(plan.engine.outputs), decoupled):
        step_pool = dict(pool)
        _collect(plan.engine, produced, step_pool)
        post_inputs = _step_inputs(plan.post, step_pool)
        [post] = call(plan.post.model, post_inputs, list(plan.post.outputs), False)
        _collect(plan.post, post, step_pool)
        key = produced.get("request_key")
        yield BlsResponse(
            {name: step_pool[name] for name in requested if name in step_pool},
            None if key is None else int(np.asarray(key).reshape(-1)[0]),
        )
