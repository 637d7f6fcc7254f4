"""Async gRPC to Triton: model discovery, and one generation as a stream of Pieces.

Uses Triton's own protobuf stubs on a ``grpc.aio`` channel rather than
``tritonclient.grpc.aio``, which drops the empty final response a decoupled model
sends: here each request is one ``ModelStreamInfer`` call read until Triton's
final-response flag.  Leaving the iteration early (a client that went away) cancels
the call, which is how the ensemble learns to free the engine sequence.  Models
that are not decoupled are called with unary ``ModelInfer``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from tritonclient.grpc import InferResult, service_pb2, service_pb2_grpc
from tritonclient.utils import serialize_byte_tensor

from edgectl.openai.ensemble import Capabilities, Piece, read_pieces, tensor
from edgectl.openai.errors import ApiError

# Ensemble inputs and the request field a client knows them by, to name it in a 400.
FIELD_NAMES = {
    "text_input": "prompt", "messages": "messages", "max_tokens": "max_tokens",
    "stop_words": "stop", "top_k": "top_k", "top_p": "top_p", "temperature": "temperature",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
    "random_seed": "seed", "min_length": "min_tokens", "min_tokens": "min_tokens",
    "guided_decoding_guide": "response_format", "num_return_sequences": "n",
}  # fmt: skip
RETRY_AFTER_S = 1


def infer_request(model: str, inputs: dict[str, Any]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, value in inputs.items():
        datatype, shape, array = tensor(name, value)
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        raw = serialize_byte_tensor(array).item() if datatype == "BYTES" else array.tobytes()
        request.raw_input_contents.append(raw)
    return request


def api_error(message: str, code: grpc.StatusCode | None = None) -> ApiError:
    """A Triton error as the status an OpenAI client expects."""
    lowered = message.lower()
    if "retry later" in lowered or code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ApiError(503, message, code="engine_overloaded", retry_after_s=RETRY_AFTER_S)
    if code == grpc.StatusCode.UNAVAILABLE and "connect" in lowered:
        return ApiError(503, f"Triton is not reachable: {message}", code="backend_unavailable",
                        retry_after_s=RETRY_AFTER_S)  # fmt: skip
    if code == grpc.StatusCode.NOT_FOUND or "unknown model" in lowered:
        return ApiError(404, message, param="model", code="model_not_found")
    if code in (None, grpc.StatusCode.INVALID_ARGUMENT):
        param = next((field for name, field in FIELD_NAMES.items() if name in message), None)
        return ApiError(400, message, param=param, code="invalid_value")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ApiError(504, message, code="timeout")
    return ApiError(502, f"Triton error: {message}", code="backend_error")


class Triton:
    """One channel to one Triton gRPC endpoint, shared by every request of the gateway."""

    def __init__(self, url: str, timeout_s: float = 600.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._grpc: service_pb2_grpc.GRPCInferenceServiceStub | None = None
        self._capabilities: dict[str, Capabilities] = {}

    @property
    def _stub(self) -> service_pb2_grpc.GRPCInferenceServiceStub:
        """The channel is made on first use: it belongs to the event loop that serves."""
        if self._grpc is None:
            self._channel = grpc.aio.insecure_channel(
                self.url, options=[("grpc.max_receive_message_length", 64 << 20)]
            )
            self._grpc = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        return self._grpc

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    # -- discovery -------------------------------------------------------------------
    async def ready(self) -> bool:
        try:
            reply = await self._stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            return False
        return reply.ready

    async def ready_models(self) -> list[str]:
        """Names of the READY models (the repository index)."""
        try:
            index = await self._stub.RepositoryIndex(
                service_pb2.RepositoryIndexRequest(ready=True), timeout=5
            )
        except grpc.aio.AioRpcError as err:
            raise api_error(err.details() or "", err.code()) from None
        return sorted({model.name for model in index.models if model.state == "READY"})

    async def capabilities(self, model: str) -> Capabilities:
        """The ensemble's inputs/outputs, decoupled or not, its output limit (cached)."""
        known = self._capabilities.get(model)
        if known is not None:
            return known
        try:
            meta = await self._stub.ModelMetadata(
                service_pb2.ModelMetadataRequest(name=model), timeout=5
            )
            config = (
                await self._stub.ModelConfig(service_pb2.ModelConfigRequest(name=model), timeout=5)
            ).config
            steps = [step.model_name for step in config.ensemble_scheduling.step]
            step_configs = [
                (await self._stub.ModelConfig(
                    service_pb2.ModelConfigRequest(name=step), timeout=5)).config
                for step in steps
            ]  # fmt: skip
        except grpc.aio.AioRpcError as err:
            raise api_error(err.details() or "", err.code()) from None
        decoupled = any(c.model_transaction_policy.decoupled for c in [config, *step_configs])
        limits = [
            int(c.parameters["max_output_len"].string_value)
            for c in step_configs
            if "max_output_len" in c.parameters
            and c.parameters["max_output_len"].string_value.isdigit()
        ]
        found = Capabilities(
            name=model,
            inputs=frozenset(tensor.name for tensor in meta.inputs),
            outputs=frozenset(tensor.name for tensor in meta.outputs),
            decoupled=decoupled,
            max_output_len=min(limits) if limits else None,
        )
        self._capabilities[model] = found
        return found

    # -- generation ------------------------------------------------------------------
    async def generate(self, caps: Capabilities, inputs: dict[str, Any]) -> AsyncIterator[Piece]:
        """Send one request; yield a Piece per response until the final one."""
        request = infer_request(caps.name, inputs)
        if not caps.decoupled:
            for piece in await self._unary(request, caps):
                yield piece
            return
        request.parameters["triton_enable_empty_final_response"].bool_param = True
        call = self._stub.ModelStreamInfer(iter([request]), timeout=self.timeout_s)
        completed = False
        try:
            async for response in call:
                if response.error_message:
                    completed = True  # an error ends the request; Triton needs no cancel
                    raise api_error(response.error_message)
                message = response.infer_response
                final = message.parameters.get("triton_final_response")
                is_final = final is not None and final.bool_param
                if message.outputs:
                    pieces = read_pieces(InferResult(message), caps.outputs)
                    pieces[-1].final = is_final
                    for piece in pieces:
                        yield piece
                elif is_final:
                    yield Piece(final=True)
                if is_final:
                    completed = True
                    return
            completed = True
            raise ApiError(502, "Triton closed the stream before the final response",
                           code="backend_error")  # fmt: skip
        except grpc.aio.AioRpcError as err:
            completed = True
            raise api_error(err.details() or "", err.code()) from None
        finally:
            if not completed:
                call.cancel()  # the client left: Triton cancels, the engine frees the sequence

    async def _unary(
        self, request: service_pb2.ModelInferRequest, caps: Capabilities
    ) -> list[Piece]:
        try:
            response = await self._stub.ModelInfer(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise api_error(err.details() or "", err.code()) from None
        pieces = read_pieces(InferResult(response), caps.outputs)
        pieces[-1].final = True
        return pieces
