"""Generation through the real ensemble: correctness of text, streaming, stop words, limits."""

from __future__ import annotations

import numpy as np
import pytest

from edgectl.client import GenerateRequest
from edgectl.errors import EdgectlError
from tests.e2e.conftest import BOTH_MODES, STREAMING_REFUSED, UNUSED_END_ID, LiveServer
from tests.e2e.helpers import stream_infer

pytestmark = pytest.mark.e2e
PROTOCOLS = ["http", "grpc"]
QUESTION = "What is the capital of France?"


def generate(server: LiveServer, protocol: str, **fields) -> list[str]:
    return list(server.client.generate("ensemble", GenerateRequest(**fields), protocol))


def refuses_streaming(server: LiveServer, protocol: str, **fields) -> bool:
    """In unary mode, check that a streamed request is refused clearly and say so."""
    if server.decoupled:
        return False
    with pytest.raises(EdgectlError, match=STREAMING_REFUSED):
        generate(server, protocol, stream=True, **fields)
    return True


@BOTH_MODES
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_greedy_answer_names_paris(server: LiveServer, protocol: str) -> None:
    pieces = generate(
        server, protocol, text_input=QUESTION, max_tokens=32, apply_chat_template=True
    )
    assert len(pieces) == 1
    assert "Paris" in pieces[0]


@BOTH_MODES
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "sampling",
    [{}, {"temperature": 0.9, "top_k": 40, "top_p": 0.95, "random_seed": 1234}],
    ids=["greedy", "seeded-sampling"],
)
def test_stream_concatenates_to_the_non_streamed_text(
    server: LiveServer, protocol: str, sampling: dict
) -> None:
    """Unary mode answers the whole text and refuses the stream."""
    fields = dict(
        text_input="Describe Paris in three sentences.",
        max_tokens=48,
        apply_chat_template=True,
        **sampling,
    )
    whole = generate(server, protocol, **fields)
    assert len(whole) == 1
    if refuses_streaming(server, protocol, **fields):
        return
    pieces = generate(server, protocol, stream=True, **fields)
    assert len(pieces) >= 5, pieces
    assert "".join(pieces) == whole[0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_multibyte_text_survives_streaming(live_server: LiveServer, protocol: str) -> None:
    """Decoupled only: it checks how streamed pieces split characters."""
    fields = dict(
        text_input="Say 'good morning' in Japanese characters.",
        max_tokens=40,
        apply_chat_template=True,
        stop_words=["\n"],
    )
    pieces = generate(live_server, protocol, stream=True, **fields)
    text = "".join(pieces)
    assert any(ord(ch) > 0x3000 for ch in text), text  # CJK reached the client
    assert all("\ufffd" not in piece for piece in pieces[:-1]), pieces  # no split characters
    assert text == generate(live_server, protocol, **fields)[0]


@BOTH_MODES
def test_prompt_echo_round_trips_multibyte_text(server: LiveServer) -> None:
    prompt = "Café naïve — 日本語のテキスト 🙂 ok"
    text = generate(server, "grpc", text_input=prompt, max_tokens=4, exclude_input_in_output=False)[
        0
    ]
    assert text.startswith(prompt)


@BOTH_MODES
@pytest.mark.parametrize("stream", [False, True])
def test_stop_word_ends_generation_before_it(server: LiveServer, stream: bool) -> None:
    fields = dict(text_input=QUESTION, max_tokens=32, apply_chat_template=True)
    if stream and refuses_streaming(server, "grpc", stop_words=["Paris"], **fields):
        return
    fields["stream"] = stream
    baseline = "".join(generate(server, "grpc", **fields))
    assert "Paris" in baseline
    stopped = "".join(generate(server, "grpc", stop_words=["Paris"], **fields))
    assert "Paris" not in stopped
    assert stopped.strip() and baseline.startswith(stopped)
    assert len(stopped) < len(baseline)


@BOTH_MODES
@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("max_tokens", [1, 7, 33])
def test_engine_honours_max_tokens_exactly(
    server: LiveServer, streaming: bool, max_tokens: int
) -> None:
    """Unary mode: the engine step answers whole results and refuses streaming."""
    results, error = stream_infer(
        server.state.grpc_url,
        "tensorrt_llm",
        {
            "input_ids": np.array([[1, 9690, 198, 504, 2156]], dtype=np.int32),
            "input_lengths": np.array([[5]], dtype=np.int32),
            "request_output_len": np.array([[max_tokens]], dtype=np.int32),
            "end_id": np.array([[UNUSED_END_ID]], dtype=np.int32),
            "streaming": np.array([[streaming]], dtype=bool),
        },
    )
    if streaming and not server.decoupled:
        assert error is not None and STREAMING_REFUSED in error.message(), error
        assert results == []
        return
    assert error is None
    data = [r for r in results if r.get_response().outputs]
    generated = sum(int(r.as_numpy("sequence_length").sum()) for r in data)
    assert generated == max_tokens
    assert sum(r.as_numpy("output_ids").shape[-1] for r in data) == max_tokens
    if streaming and max_tokens > 1:
        assert len(data) > 1
