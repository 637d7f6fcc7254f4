"""Bad input gets a clear error naming the field; the server keeps serving."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from edgectl.client import GenerateRequest
from edgectl.errors import EdgectlError
from tests.e2e.conftest import BOTH_MODES, MAX_INPUT_LEN, MAX_OUTPUT_LEN, LiveServer
from tests.e2e.helpers import stream_infer

pytestmark = pytest.mark.e2e

BAD_REQUESTS = {
    "empty-text": ({"text_input": ""}, "text_input must not be empty"),
    "zero-max-tokens": ({"max_tokens": 0}, "max_tokens must be between 1 and"),
    "negative-max-tokens": ({"max_tokens": -5}, "max_tokens must be between 1 and"),
    "huge-max-tokens": ({"max_tokens": MAX_OUTPUT_LEN + 1}, f"and {MAX_OUTPUT_LEN}"),
    "prompt-too-long": (
        {"text_input": "word " * (MAX_INPUT_LEN * 2)},
        f"max_input_len={MAX_INPUT_LEN}",
    ),
    "top-p-above-one": ({"top_p": 1.5}, "top_p must be in (0, 1]"),
    "negative-temperature": ({"temperature": -0.5}, "temperature must be in [0, 100]"),
    "negative-top-k": ({"top_k": -1}, "top_k must be >= 0"),
}


def assert_still_serving(server: LiveServer) -> None:
    request = GenerateRequest("What is the capital of France?", 16, apply_chat_template=True)
    assert "Paris" in "".join(server.client.generate("ensemble", request, "grpc"))


@BOTH_MODES
@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_is_refused_with_the_field_named(
    server: LiveServer, protocol: str, case: str
) -> None:
    overrides, expected = BAD_REQUESTS[case]
    fields = {"text_input": "Hello", "max_tokens": 8, **overrides}
    with pytest.raises(EdgectlError) as err:
        list(server.client.generate("ensemble", GenerateRequest(**fields), protocol))
    assert expected in str(err.value)
    if protocol == "http":
        assert "HTTP 400" in str(err.value)
    assert_still_serving(server)


@BOTH_MODES
def test_unknown_model_is_refused(server: LiveServer) -> None:
    with pytest.raises(EdgectlError, match="no-such-model"):
        list(server.client.generate("no-such-model", GenerateRequest("Hi", 4), "http"))
    assert_still_serving(server)


RAW_BAD_TENSORS = {
    "wrong-dtype": (
        {"text_input": [[b"Hello"]], "max_tokens": np.array([[8.0]], dtype=np.float32)},
        ("max_tokens", "INT32"),
    ),
    "invalid-utf8": (
        {"text_input": [[b"caf\xc3("]], "max_tokens": np.array([[8]], dtype=np.int32)},
        ("text_input is not valid UTF-8",),
    ),
}


@BOTH_MODES
@pytest.mark.parametrize("case", sorted(RAW_BAD_TENSORS))
def test_malformed_tensors_are_refused(server: LiveServer, case: str) -> None:
    inputs, expected = RAW_BAD_TENSORS[case]
    inputs = {**inputs, "text_input": np.array(inputs["text_input"], dtype=object)}
    _, error = stream_infer(server.state.grpc_url, "ensemble", inputs)
    assert error is not None
    assert all(fragment in error.message() for fragment in expected), error.message()
    assert_still_serving(server)


@BOTH_MODES
def test_malformed_json_body_is_refused(server: LiveServer) -> None:
    response = httpx.post(
        f"{server.state.http_url}/v2/models/ensemble/generate",
        content=b'{"text_input": "hi", "max_tokens": ',
        timeout=30,
    )
    # Triton's HTTP frontend answers unparsable JSON with 500 and a parse error.
    assert response.status_code in (400, 500)
    assert "error" in response.json()
    assert_still_serving(server)
