"""Requests shaped the way NVIDIA's TensorRT-LLM example clients shape them.

Every input is ``[batch, 1]`` (``[1, 1]`` for one prompt) and ``text_output`` is read
with ``as_numpy("text_output")[0].decode()``, exactly as those clients do.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.e2e.helpers import DTYPES, stream_infer

TYPES = {
    "text_input": np.object_,
    "messages": np.object_,
    "guided_decoding_guide_type": np.object_,
    "guided_decoding_guide": np.object_,
    "max_tokens": np.int32,
    "top_k": np.int32,
    "num_return_sequences": np.int32,
    "beam_width": np.int32,
    "min_tokens": np.int32,
    "min_length": np.int32,
    "end_id": np.int32,
    "lora_task_id": np.uint64,
    "seed": np.uint64,
    "random_seed": np.uint64,
    "top_p": np.float32,
    "temperature": np.float32,
    "length_penalty": np.float32,
}


def column(name: str, values: list[Any]) -> np.ndarray:
    """One ``[batch, 1]`` input; strings become bytes, flags BOOL."""
    if all(isinstance(value, bool) for value in values):
        return np.asarray([[value] for value in values], dtype=np.bool_)
    dtype = TYPES[name]
    if dtype is np.object_:
        return np.asarray([[str(value).encode()] for value in values], dtype=object)
    return np.asarray([[value] for value in values], dtype=dtype)


def ensemble_inputs(prompt: str | list[str] = "", max_tokens: int = 8, **fields) -> dict:
    prompts = [prompt] if isinstance(prompt, str) else prompt
    inputs = {
        "text_input": column("text_input", prompts),
        "max_tokens": column("max_tokens", [max_tokens] * len(prompts)),
    }
    for name, value in fields.items():
        inputs[name] = column(name, [value] * len(prompts))
    return inputs


def grpc_stream(url: str, model: str, inputs: dict, request_id: str = "") -> list:
    """All responses of one decoupled request; raises on an error response."""
    results, error = stream_infer(url, model, inputs, request_id=request_id)
    if error is not None:
        raise error
    return results


def grpc_unary(url: str, model: str, inputs: dict):
    client = grpcclient.InferenceServerClient(url)
    try:
        tensors = []
        for name, array in inputs.items():
            tensor = grpcclient.InferInput(name, list(array.shape), DTYPES[array.dtype])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        return client.infer(model, tensors)
    finally:
        client.close()


def http_infer(url: str, model: str, inputs: dict):
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    try:
        tensors = []
        for name, array in inputs.items():
            tensor = httpclient.InferInput(name, list(array.shape), DTYPES[array.dtype])
            tensor.set_data_from_numpy(array, binary_data=False)
            tensors.append(tensor)
        return client.infer(model, tensors)
    finally:
        client.close()


def http_generate(url: str, model: str, payload: dict, stream: bool = False) -> list[dict]:
    """Triton's generate / generate_stream endpoints: one dict per response."""
    if not stream:
        response = httpx.post(f"{url}/v2/models/{model}/generate", json=payload, timeout=120)
        response.raise_for_status()
        return [response.json()]
    events = []
    with httpx.stream(
        "POST", f"{url}/v2/models/{model}/generate_stream", json=payload, timeout=120
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    return events


def first_text(result) -> str:
    return result.as_numpy("text_output")[0].decode()
