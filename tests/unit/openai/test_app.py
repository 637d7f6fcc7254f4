"""The gateway's HTTP behaviour against a fake Triton: shapes, streaming, errors, guards."""

from __future__ import annotations

import json

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from starlette.testclient import TestClient

from edgectl.openai.app import GatewaySettings, create_app
from edgectl.openai.errors import ApiError
from tests.unit.openai.fakes import FULL, FakeTriton

CHAT = {"model": "ensemble", "messages": [{"role": "user", "content": "Capital of France?"}]}


def client_for(triton: FakeTriton, **settings) -> TestClient:
    return TestClient(create_app(GatewaySettings(**settings), triton=triton))


@pytest.fixture
def triton() -> FakeTriton:
    return FakeTriton()


@pytest.fixture
def client(triton: FakeTriton) -> TestClient:
    return client_for(triton)


def sse_events(text: str) -> list[str]:
    lines = [line for line in text.split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return [line[6:] for line in lines]


def test_chat_body_is_a_chat_completion_with_exact_usage(client, triton) -> None:
    reply = client.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == 200
    body = ChatCompletion.model_validate(reply.json())
    assert body.choices[0].message.content == "Paris is the capital."
    assert body.choices[0].finish_reason == "stop"
    assert body.usage.prompt_tokens == 7 and body.usage.completion_tokens == 5
    assert body.usage.total_tokens == 12
    sent = triton.sent[0]
    assert json.loads(sent["messages"]) == CHAT["messages"] and sent["text_input"] == ""
    assert sent["return_num_input_tokens"] and sent["return_num_output_tokens"]
    assert sent["max_tokens"] == 128  # the model's own limit when none is given


def test_finish_reason_length_comes_from_the_ensemble(client) -> None:
    reply = client.post("/v1/chat/completions", json={**CHAT, "max_completion_tokens": 3})
    assert reply.json()["choices"][0]["finish_reason"] == "length"


def test_chat_stream_chunks_usage_and_done(client) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    reply = client.post("/v1/chat/completions", json=body)
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = sse_events(reply.text)
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(e)) for e in events[:-1]]
    raw = [json.loads(e) for e in events[:-1]]
    assert raw[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("usage" in r and r["usage"] is None for r in raw[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-2].choices[0].delta.content is None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Paris is the capital."
    assert len({c.id for c in chunks}) == 1


def test_n_uses_num_return_sequences_and_numbers_choices(client, triton) -> None:
    reply = client.post("/v1/chat/completions", json={**CHAT, "n": 2, "seed": 4})
    body = ChatCompletion.model_validate(reply.json())
    assert [c.index for c in body.choices] == [0, 1]
    assert len(triton.sent) == 1 and triton.sent[0]["num_return_sequences"] == 2
    assert body.usage.prompt_tokens == 7 and body.usage.completion_tokens == 10


def test_n_without_num_return_sequences_sends_n_requests_with_distinct_seeds(
    client, triton
) -> None:
    body = {"model": "old", "prompt": "Hi", "n": 3, "seed": 10, "max_tokens": 5}
    reply = client.post("/v1/completions", json=body)
    assert [c["index"] for c in reply.json()["choices"]] == [0, 1, 2]
    assert [sent["random_seed"] for sent in triton.sent] == [10, 11, 12]
    assert reply.json()["usage"] is None  # the old ensemble reports no counts


def test_completions_with_several_prompts_number_choices_prompt_major(client) -> None:
    body = {"model": "ensemble", "prompt": ["a", "b"], "n": 2, "max_tokens": 2}
    reply = client.post("/v1/completions", json=body)
    completion = Completion.model_validate(reply.json())
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    assert completion.usage.prompt_tokens == 14 and completion.usage.completion_tokens == 8


def test_completion_stream_and_echo(client) -> None:
    body = {"model": "ensemble", "prompt": "Q:", "stream": True, "echo": True, "max_tokens": 5}
    events = sse_events(client.post("/v1/completions", json=body).text)
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "Q:Paris is the capital."
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_a_temperature_alone_samples_the_whole_distribution(client, triton) -> None:
    assert client.post("/v1/chat/completions", json={**CHAT, "temperature": 0.7}).status_code == 200
    assert client.post("/v1/chat/completions", json={**CHAT, "temperature": 0}).status_code == 200
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    sampled, zero, unset = triton.sent[:3]
    assert sampled["temperature"] == 0.7 and sampled["top_p"] == 1.0  # not TensorRT-LLM's greedy
    assert "top_p" not in zero and "top_p" not in unset  # greedy, as before


def test_sampling_fields_reach_the_ensemble_by_nvidia_names(client, triton) -> None:
    body = {
        **CHAT, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 1, "stop": "x",
        "presence_penalty": 0.5, "frequency_penalty": -0.5, "min_tokens": 2,
        "ignore_eos": True, "max_tokens": 9,
    }  # fmt: skip
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    sent = triton.sent[0]
    assert sent["temperature"] == 0.7 and sent["top_p"] == 0.9 and sent["top_k"] == 40
    assert sent["random_seed"] == 1 and sent["stop_words"] == ["x"]
    assert sent["presence_penalty"] == 0.5 and sent["frequency_penalty"] == -0.5
    assert sent["min_tokens"] == 2 and sent["ignore_eos"] is True and sent["max_tokens"] == 9


def test_ignore_eos_on_an_older_ensemble_becomes_min_length(client, triton) -> None:
    body = {"model": "old", "prompt": "Hi", "ignore_eos": True, "max_tokens": 4}
    assert client.post("/v1/completions", json=body).status_code == 200
    assert triton.sent[0]["min_length"] == 4


@pytest.mark.parametrize(
    "fmt,guide_type,guide",
    [
        ({"type": "json_object"}, "json", None),
        ({"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
         "json_schema", '{"type": "object"}'),
    ],
)  # fmt: skip
def test_response_format_is_carried_on_guided_decoding_inputs(
    client, triton, fmt, guide_type, guide
) -> None:
    assert (
        client.post("/v1/chat/completions", json={**CHAT, "response_format": fmt}).status_code
        == 200
    )
    assert triton.sent[0]["guided_decoding_guide_type"] == guide_type
    assert triton.sent[0].get("guided_decoding_guide") == guide


def test_guided_regex_extension(client, triton) -> None:
    client.post("/v1/completions", json={"model": "ensemble", "prompt": "x", "guided_regex": "a+"})
    assert triton.sent[0]["guided_decoding_guide_type"] == "regex"


def test_chat_logprobs_top_one(client, triton) -> None:
    reply = client.post("/v1/chat/completions", json={**CHAT, "logprobs": True, "top_logprobs": 1})
    content = reply.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == 5 and all(entry["logprob"] == -0.5 for entry in content)
    assert len(content[-1]["top_logprobs"]) == 1
    assert triton.sent[0]["return_log_probs"] is True


@pytest.mark.parametrize(
    "body,param",
    [
        ({**CHAT, "top_logprobs": 2, "logprobs": True}, "top_logprobs"),
        ({**CHAT, "top_logprobs": 1}, "top_logprobs"),
        ({"model": "old", "messages": CHAT["messages"], "response_format": {"type": "json_object"}},
         "response_format"),
        ({"model": "old", "messages": [{"role": "system", "content": "s"}, *CHAT["messages"]]},
         "messages"),
        ({**CHAT, "response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({**CHAT, "stream": False, "stream_options": {"include_usage": True}}, "stream_options"),
        ({**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
         "messages[0].content"),
        ({"model": "ensemble", "prompt": ""}, "prompt"),
        ({"model": "ensemble", "prompt": "x", "best_of": 3}, "best_of"),
    ],
)  # fmt: skip
def test_client_mistakes_are_400_naming_the_field(client, body, param) -> None:
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    reply = client.post(path, json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param
    assert reply.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_404(client) -> None:
    reply = client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    assert reply.status_code == 404
    assert reply.json()["error"] == {
        "message": "The model `nope` does not exist.", "type": "not_found_error",
        "param": "model", "code": "model_not_found",
    }  # fmt: skip


def test_unknown_route_is_an_openai_shaped_404(client) -> None:
    reply = client.get("/v1/nothing")
    assert reply.status_code == 404 and "error" in reply.json()


def test_engine_refusal_is_503_with_retry_after() -> None:
    refusal = ApiError(503, "engine queue is full; retry later", retry_after_s=1)
    client = client_for(FakeTriton(error=refusal))
    for body in (CHAT, {**CHAT, "stream": True}):
        reply = client.post("/v1/chat/completions", json=body)
        assert reply.status_code == 503
        assert reply.headers["retry-after"] == "1"
        assert reply.json()["error"]["type"] == "server_error"


def test_api_key_compared_and_health_open() -> None:
    client = client_for(FakeTriton(), api_key="k")
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer x"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer k"}).status_code == 200
    assert client.get("/health/ready").status_code == 200
    assert client.get("/health/live").status_code == 200


def test_body_limit_counts_streamed_bodies_too() -> None:
    client = client_for(FakeTriton(), max_body_bytes=1024)
    big = json.dumps({**CHAT, "user": "x" * 2000}).encode()
    assert client.post("/v1/chat/completions", content=big).status_code == 413

    def chunks():
        yield big[:600]
        yield big[600:]

    assert client.post("/v1/chat/completions", content=chunks()).status_code == 413


def test_models_lists_llm_ensembles(client) -> None:
    data = client.get("/v1/models").json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["ensemble", "old"]
    assert data["data"][0]["object"] == "model"


def test_metrics_count_statuses_and_tokens(client) -> None:
    client.post("/v1/chat/completions", json=CHAT)
    client.post("/v1/chat/completions", json={**CHAT, "temperature": 9})
    text = client.get("/metrics").text
    assert 'edgectl_openai_requests_total{endpoint="/v1/chat/completions",status="200"} 1.0' in text
    assert 'edgectl_openai_requests_total{endpoint="/v1/chat/completions",status="400"} 1.0' in text
    assert "edgectl_openai_completion_tokens_total 5.0" in text
    assert "edgectl_openai_time_to_first_token_seconds_count 1.0" in text


def test_an_error_after_the_first_chunk_is_an_error_event() -> None:
    class FailsMidStream(FakeTriton):
        async def generate(self, caps, inputs):
            async for piece in super().generate(caps, inputs):
                yield piece
                raise ApiError(502, "Triton error: the stub died", code="backend_error")

    reply = client_for(FailsMidStream()).post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert reply.status_code == 200
    events = sse_events(reply.text)
    assert json.loads(events[-1])["error"]["code"] == "backend_error"
    assert "[DONE]" not in events


def test_logprobs_are_asked_streamed_so_each_token_has_its_text(client, triton) -> None:
    client.post("/v1/completions", json={"model": "ensemble", "prompt": "x", "logprobs": 1})
    assert triton.sent[0]["stream"] is True and triton.sent[0]["return_log_probs"] is True
    reply = client.post("/v1/chat/completions", json={**CHAT, "logprobs": True})
    tokens = [entry["token"] for entry in reply.json()["choices"][0]["logprobs"]["content"]]
    assert tokens == ["Paris", " is", " the", " capital", "."]


def test_a_unary_ensemble_is_never_asked_to_stream_and_answers_whole() -> None:
    unary = FULL.__class__(**{**FULL.__dict__, "decoupled": False})
    triton = FakeTriton(unary)
    reply = client_for(triton).post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert triton.sent[0]["stream"] is False
    chunks = [json.loads(e) for e in sse_events(reply.text)[:-1]]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert contents == ["", "Paris is the capital.", None]  # role, the whole text, finish
