"""Raw tritonclient helpers for tests that need tensors, not the edgectl client."""

from __future__ import annotations

import queue
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

DTYPES = {
    np.dtype(np.int32): "INT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.float32): "FP32",
    np.dtype(np.bool_): "BOOL",
    np.dtype(object): "BYTES",
}


def infer_input(name: str, value: Any) -> grpcclient.InferInput:
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    tensor = grpcclient.InferInput(name, list(array.shape), DTYPES[array.dtype])
    tensor.set_data_from_numpy(array)
    return tensor


def stream_infer(
    url: str, model: str, inputs: dict[str, Any], timeout: float = 60, request_id: str = ""
):
    """Send one request on a gRPC stream; return (responses, error) once it is final."""
    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        client.async_stream_infer(
            model,
            [infer_input(name, value) for name, value in inputs.items()],
            request_id=request_id,
            enable_empty_final_response=True,
        )
        results = []
        while True:
            result, error = responses.get(timeout=timeout)
            if error is not None:
                return results, error
            results.append(result)
            final = result.get_response().parameters.get("triton_final_response")
            if final is not None and final.bool_param:
                return results, None
    finally:
        client.stop_stream()
        client.close()
