"""Talking to a running Triton: generation over HTTP or gRPC, and the repository API.

HTTP uses Triton's ``generate`` / ``generate_stream`` (SSE) endpoints, since
decoupled models are refused on ``/infer``; gRPC uses the bidirectional stream.
"""

from __future__ import annotations

import json
import queue
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from edgectl.config import NAME_PATTERN
from edgectl.errors import EdgectlError


def checked_model_name(name: str) -> str:
    """Model names go into URLs: refuse anything but a plain name (no '/', '..', spaces)."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise EdgectlError(
            f"model name {name!r} is not valid: use letters, digits, '_', '.', '-' "
            "(at most 64, starting with a letter or digit)"
        )
    return name


@dataclass
class GenerateRequest:
    """The ensemble's inputs, by the names NVIDIA's TensorRT-LLM ensemble uses."""

    text_input: str
    max_tokens: int = 64
    stream: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    random_seed: int | None = None
    stop_words: list[str] = field(default_factory=list)
    end_id: int | None = None
    apply_chat_template: bool = False
    exclude_input_in_output: bool | None = None
    rag_passages: list[str] = field(default_factory=list)  # retrieved context, best first

    def inputs(self) -> dict[str, Any]:
        """Only the inputs that are set, so server defaults apply to the rest."""
        values: dict[str, Any] = {
            "text_input": self.text_input,
            "max_tokens": self.max_tokens,
            "stream": self.stream,
            "apply_chat_template": self.apply_chat_template,
        }
        optional = {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "random_seed": self.random_seed,
            "end_id": self.end_id,
            "exclude_input_in_output": self.exclude_input_in_output,
        }
        values.update({k: v for k, v in optional.items() if v is not None})
        if self.temperature and self.top_k is None and self.top_p is None:
            # TensorRT-LLM decodes greedily unless top_k or top_p asks to sample;
            # a temperature alone means "sample the whole distribution" here.
            values["top_p"] = 1.0
        if self.stop_words:
            values["stop_words"] = list(self.stop_words)
        if self.rag_passages:
            values["rag_passages"] = list(self.rag_passages)
            values["rag_question"] = self.text_input
        return values


_GRPC_TYPES = {
    "text_input": ("BYTES", object),
    "stop_words": ("BYTES", object),
    "rag_passages": ("BYTES", object),
    "rag_question": ("BYTES", object),
    "max_tokens": ("INT32", np.int32),
    "end_id": ("INT32", np.int32),
    "top_k": ("INT32", np.int32),
    "top_p": ("FP32", np.float32),
    "temperature": ("FP32", np.float32),
    "random_seed": ("UINT64", np.uint64),
    "stream": ("BOOL", bool),
    "apply_chat_template": ("BOOL", bool),
    "exclude_input_in_output": ("BOOL", bool),
}


def iter_generate_text(response: httpx.Response, stream: bool) -> Iterator[str]:
    """Text pieces of a ``generate`` (JSON) or ``generate_stream`` (SSE) response.

    Errors, as an HTTP status or as an SSE error event, raise EdgectlError.
    """
    if response.status_code != 200:
        response.read()
        raise EdgectlError(_http_error(response))
    if not stream:
        response.read()
        yield response.json()["text_output"]
        return
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        event = json.loads(line[5:])
        if "error" in event:
            raise EdgectlError(f"server error: {event['error']}")
        yield event.get("text_output", "")


def grpc_inputs(values: dict[str, Any]):
    import tritonclient.grpc as grpcclient

    tensors = []
    for name, value in values.items():
        datatype, dtype = _GRPC_TYPES[name]
        items = value if isinstance(value, list) else [value]
        if dtype is object:
            items = [str(item).encode("utf-8") for item in items]
        array = np.asarray([items], dtype=dtype)  # [batch=1, n]
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


NO_SERVER_HINT = (
    "start one with `edgectl deploy --local`, or check server.host and the ports "
    "with `edgectl status`"
)


def no_server(url: str, protocol: str) -> EdgectlError:
    """The error for a refused connection: nothing listens at ``url``."""
    return EdgectlError(f"no Triton server is answering at {url} ({protocol}); {NO_SERVER_HINT}")


def _refused(message: str) -> bool:
    """gRPC's way of saying nothing listens there."""
    return "failed to connect to all addresses" in message or "Connection refused" in message


class TritonClient:
    """A client for one server; ``url`` is ``host:port`` of the chosen protocol."""

    def __init__(self, http_url: str, grpc_url: str, timeout_s: float = 120.0) -> None:
        self.http_url = http_url.rstrip("/")
        self.grpc_url = grpc_url
        self.timeout_s = timeout_s

    # -- generation --------------------------------------------------------------
    def generate(
        self, model: str, request: GenerateRequest, protocol: str = "grpc"
    ) -> Iterator[str]:
        """Yield text pieces: several when streaming, one otherwise."""
        checked_model_name(model)
        if protocol == "http":
            yield from self._generate_http(model, request)
        elif protocol == "grpc":
            yield from self._generate_grpc(model, request)
        else:
            raise EdgectlError(f"protocol must be http or grpc, got {protocol!r}")

    def _generate_http(self, model: str, request: GenerateRequest) -> Iterator[str]:
        endpoint = "generate_stream" if request.stream else "generate"
        url = f"{self.http_url}/v2/models/{model}/{endpoint}"
        try:
            with httpx.Client(timeout=self.timeout_s) as client:
                with client.stream("POST", url, json=request.inputs()) as response:
                    yield from iter_generate_text(response, request.stream)
        except httpx.ConnectError:
            raise no_server(self.http_url, "http") from None
        except httpx.HTTPError as err:
            raise EdgectlError(f"cannot reach {self.http_url}: {err}") from None

    def _generate_grpc(self, model: str, request: GenerateRequest) -> Iterator[str]:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        responses: queue.Queue = queue.Queue()
        completed = False
        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            client.start_stream(callback=lambda result, error: responses.put((result, error)))
            client.async_stream_infer(
                model, grpc_inputs(request.inputs()), enable_empty_final_response=True
            )
            while True:
                try:
                    result, error = responses.get(timeout=self.timeout_s)
                except queue.Empty:
                    raise EdgectlError(
                        f"no response from {model} within client.timeout_s={self.timeout_s:g}s"
                    ) from None
                if error is not None:
                    # An error ends the request: do not cancel it.  Triton 2.51 keeps a
                    # decoupled request whose stream is cancelled after its final error
                    # counted in flight, and the model can then never be unloaded.
                    completed = True
                    if _refused(error.message()):
                        raise no_server(self.grpc_url, "grpc")
                    raise EdgectlError(f"server error: {error.message()}")
                message = result.get_response()
                if message.outputs:
                    for item in result.as_numpy("text_output").reshape(-1):
                        yield item.decode("utf-8") if isinstance(item, bytes) else str(item)
                final = message.parameters.get("triton_final_response")
                if final is not None and final.bool_param:
                    completed = True
                    return
        except InferenceServerException as err:
            # A stream that failed to open reports why through its callback.
            reasons = [err.message()]
            while not responses.empty():
                _result, error = responses.get_nowait()
                if error is not None:
                    reasons.append(error.message())
            if any(_refused(reason) for reason in reasons):
                raise no_server(self.grpc_url, "grpc") from None
            raise EdgectlError(f"cannot reach {self.grpc_url}: {err.message()}") from None
        finally:
            # Cancel only a request we abandon (error, timeout, caller stopped reading):
            # cancelling one that just completed can leave the ensemble counting it as
            # in flight, which blocks a later unload.
            client.stop_stream(cancel_requests=not completed)
            client.close()

    # -- repository API ----------------------------------------------------------
    def _http(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = httpx.request(
                method, f"{self.http_url}{path}", timeout=self.timeout_s, **kwargs
            )
        except httpx.ConnectError:
            raise no_server(self.http_url, "http") from None
        except httpx.HTTPError as err:
            raise EdgectlError(f"cannot reach {self.http_url}: {err}") from None
        if response.status_code != 200:
            raise EdgectlError(_http_error(response))
        return response

    def list_models(self) -> list[dict[str, str]]:
        return self._http("POST", "/v2/repository/index", json={}).json()

    def load_model(self, name: str) -> None:
        self._http("POST", f"/v2/repository/models/{checked_model_name(name)}/load", json={})

    def unload_model(self, name: str, wait: bool = True) -> None:
        """Unload ``name`` and the models only it uses; wait until they are really gone.

        Triton answers the unload call at once and unloads in the background, so
        ``wait`` polls the repository index until no model is left UNLOADING.
        """
        self._http(
            "POST", f"/v2/repository/models/{checked_model_name(name)}/unload",
            json={"parameters": {"unload_dependents": True}},
        )  # fmt: skip
        if not wait:
            return
        deadline = time.monotonic() + self.timeout_s
        while any(m.get("state") == "UNLOADING" for m in self.list_models()):
            if time.monotonic() > deadline:
                raise EdgectlError(f"{name} still unloading after {self.timeout_s:g}s")
            time.sleep(0.1)

    def metrics(self, metrics_url: str) -> str:
        try:
            return httpx.get(f"{metrics_url}/metrics", timeout=self.timeout_s).text
        except httpx.HTTPError as err:
            raise EdgectlError(f"cannot reach {metrics_url}: {err}") from None


def _http_error(response: httpx.Response) -> str:
    try:
        detail = response.json().get("error", response.text)
    except ValueError:
        detail = response.text
    return f"server error (HTTP {response.status_code}): {detail}"
