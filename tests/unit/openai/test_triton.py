"""The gRPC side: request encoding, response decoding, error mapping, stream vs unary."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from edgectl.openai.triton import Triton, api_error, infer_request
from tests.unit.openai.fakes import FULL, OLD


def response(text: str, final: bool = False, **outputs) -> service_pb2.ModelInferResponse:
    reply = service_pb2.ModelInferResponse(model_name="ensemble")
    tensors = {"text_output": np.array([text.encode()], dtype=object), **outputs}
    for name, array in tensors.items():
        datatype = {"O": "BYTES", "i": "INT32", "f": "FP32"}[array.dtype.kind]
        reply.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        raw = serialize_byte_tensor(array).item() if datatype == "BYTES" else array.tobytes()
        reply.raw_output_contents.append(raw)
    reply.parameters["triton_final_response"].bool_param = final
    return reply


class FakeCall:
    """A ModelStreamInfer call: yields the scripted responses, records a cancel."""

    def __init__(self, replies: list) -> None:
        self.replies = replies
        self.cancelled = False

    def __aiter__(self):
        return self._iterate()

    async def _iterate(self):
        for reply in self.replies:
            yield service_pb2.ModelStreamInferResponse(infer_response=reply)
            await asyncio.sleep(0)

    def cancel(self) -> None:
        self.cancelled = True


class FakeStub:
    def __init__(self, replies: list) -> None:
        self.call = FakeCall(replies)
        self.requests: list = []

    def ModelStreamInfer(self, requests, timeout=None):  # noqa: N802 - gRPC's method name
        self.requests += list(requests)
        return self.call

    async def ModelInfer(self, request, timeout=None):  # noqa: N802 - gRPC's method name
        self.requests.append(request)
        return self.call.replies[0]


def triton_with(replies: list) -> tuple[Triton, FakeStub]:
    triton = Triton("127.0.0.1:1")
    stub = FakeStub(replies)
    triton._grpc = stub  # the channel is never opened
    return triton, stub


def collect(triton: Triton, caps, inputs, limit: int | None = None) -> list:
    async def run():
        pieces = []
        stream = triton.generate(caps, inputs)
        async for piece in stream:
            pieces.append(piece)
            if limit is not None and len(pieces) >= limit:
                await stream.aclose()  # the HTTP client went away
                break
        return pieces

    return asyncio.run(run())


def test_inputs_are_encoded_with_their_triton_types() -> None:
    request = infer_request(
        "ensemble",
        {"text_input": "héllo", "max_tokens": 5, "stop_words": ["a", "b"], "random_seed": 2**63,
         "temperature": 0.5, "stream": True},
    )  # fmt: skip
    by_name = {
        t.name: (t, raw) for t, raw in zip(request.inputs, request.raw_input_contents, strict=True)
    }
    text, raw = by_name["text_input"]
    assert text.datatype == "BYTES" and list(text.shape) == [1, 1]
    assert deserialize_bytes_tensor(raw)[0].decode() == "héllo"
    stops, raw = by_name["stop_words"]
    assert list(stops.shape) == [1, 2]
    assert by_name["max_tokens"][0].datatype == "INT32"
    seed, raw = by_name["random_seed"]
    assert seed.datatype == "UINT64" and np.frombuffer(raw, np.uint64)[0] == 2**63
    assert by_name["stream"][0].datatype == "BOOL"


def test_stream_pieces_carry_the_contract_outputs() -> None:
    replies = [
        response("Par", finish_reason=np.array([b""], dtype=object),
                 num_output_tokens=np.array([1], np.int32)),
        response("is", final=True, finish_reason=np.array([b"length"], dtype=object),
                 num_input_tokens=np.array([9], np.int32),
                 num_output_tokens=np.array([2], np.int32), sequence_index=np.array([1], np.int32)),
    ]  # fmt: skip
    triton, stub = triton_with(replies)
    pieces = collect(triton, FULL, {"text_input": "x", "max_tokens": 2, "stream": True})
    assert [p.text for p in pieces] == ["Par", "is"]
    assert pieces[0].finish_reason is None and pieces[1].finish_reason == "length"
    assert pieces[1].input_tokens == 9 and pieces[1].output_tokens == 2 and pieces[1].index == 1
    assert pieces[1].final and not stub.call.cancelled
    assert stub.requests[0].parameters["triton_enable_empty_final_response"].bool_param


def test_leaving_mid_stream_cancels_the_call() -> None:
    triton, stub = triton_with([response("a"), response("b"), response("c", final=True)])
    assert len(collect(triton, OLD, {"text_input": "x", "max_tokens": 3}, limit=1)) == 1
    assert stub.call.cancelled


def test_a_model_that_is_not_decoupled_gets_one_unary_call() -> None:
    triton, stub = triton_with([response("whole answer", final=True)])
    caps = FULL.__class__(**{**FULL.__dict__, "decoupled": False})
    pieces = collect(triton, caps, {"text_input": "x", "max_tokens": 3})
    assert [p.text for p in pieces] == ["whole answer"] and pieces[0].final
    assert isinstance(stub.requests[0], service_pb2.ModelInferRequest)


@pytest.mark.parametrize(
    "message,code,status,param",
    [
        ("engine queue is full (max_queue_size=4 requests waiting); retry later",
         grpc.StatusCode.UNAVAILABLE, 503, None),
        ("max_tokens must be in [1, 256], got 999", None, 400, "max_tokens"),
        ("top_p must be in (0, 1]", grpc.StatusCode.INVALID_ARGUMENT, 400, "top_p"),
        ("Request for unknown model: 'x' is not found", grpc.StatusCode.NOT_FOUND, 404, "model"),
        ("failed to connect to all addresses", grpc.StatusCode.UNAVAILABLE, 503, None),
        ("something broke", grpc.StatusCode.INTERNAL, 502, None),
    ],
)  # fmt: skip
def test_triton_errors_map_to_openai_statuses(message, code, status, param) -> None:
    err = api_error(message, code)
    assert err.status == status and err.param == param
    if status == 503:
        assert err.headers() == {"Retry-After": "1"}


def test_a_unary_answer_with_n_sequences_becomes_n_pieces() -> None:
    reply = response(
        "", final=True,
        finish_reason=np.array([b"stop", b"length"], dtype=object),
        num_input_tokens=np.array([4], np.int32), num_output_tokens=np.array([1, 2], np.int32),
        sequence_index=np.array([0, 1], np.int32),
    )  # fmt: skip
    texts = np.array([b"short", b"longer one"], dtype=object)
    reply.outputs[0].shape[:] = [2]
    reply.raw_output_contents[0] = serialize_byte_tensor(texts).item()
    triton, _ = triton_with([reply])
    caps = FULL.__class__(**{**FULL.__dict__, "decoupled": False})
    pieces = collect(triton, caps, {"text_input": "x", "max_tokens": 2})
    assert [(p.index, p.text, p.finish_reason, p.output_tokens) for p in pieces] == [
        (0, "short", "stop", 1), (1, "longer one", "length", 2)
    ]  # fmt: skip
    assert [p.input_tokens for p in pieces] == [4, 4] and pieces[-1].final


def test_unary_rows_without_per_row_counts_leave_counts_unknown() -> None:
    reply = response(
        "", final=True, finish_reason=np.array([b"length", b"stop"], dtype=object),
        num_output_tokens=np.array([8], np.int32), sequence_index=np.array([1], np.int32),
        output_log_probs=np.array([[-0.5, -0.25], [-1.0, -2.0]], np.float32),
    )  # fmt: skip
    reply.outputs[0].shape[:] = [2]
    reply.raw_output_contents[0] = serialize_byte_tensor(np.array([b"a", b"b"], object)).item()
    triton, _ = triton_with([reply])
    caps = FULL.__class__(**{**FULL.__dict__, "decoupled": False})
    pieces = collect(triton, caps, {"text_input": "x", "max_tokens": 2})
    assert [(p.index, p.text, p.finish_reason) for p in pieces] == [
        (0, "a", "length"),
        (1, "b", "stop"),
    ]
    assert [p.output_tokens for p in pieces] == [None, None]
    assert pieces[1].log_probs == [-1.0, -2.0]
