"""The OpenAI-compatible gateway: the real ``openai`` SDK -> gateway -> real tritonserver.

One server with its gateway for the module (``deploy_local`` starts both), plus a
second gateway process with an API key and a small body limit.  Features that need
ensemble outputs an older ensemble lacks are skipped, naming the output, after
reading the served model's metadata.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
import tritonclient.grpc as grpcclient
from openai import OpenAI
from tokenizers import Tokenizer

from edgectl.loadtest.profile import parse_profile
from edgectl.loadtest.prompts import load_tokenizer
from edgectl.loadtest.runner import ServerHandle, Target, run_profile
from edgectl.runtime.chat_tokenizer import ChatTokenizer
from tests.e2e.conftest import LiveServer, free_ports, running_server, server_config
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e
MODEL = "ensemble"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
KEY_ENV = "EDGECTL_TEST_OPENAI_KEY"


@pytest.fixture(scope="module")
def stack(built_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    config = server_config(tmp_path_factory.mktemp("openai"), built_artifact, gateway=True)
    with running_server(config) as live:
        yield live


def gateway_url(live: LiveServer) -> str:
    return f"http://127.0.0.1:{live.config.openai.port}"


@pytest.fixture(scope="module")
def client(stack: LiveServer) -> OpenAI:
    return OpenAI(base_url=f"{gateway_url(stack)}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def ensemble_io(stack: LiveServer) -> set[str]:
    """Names of the served ensemble's inputs and outputs, from Triton's metadata."""
    meta = grpcclient.InferenceServerClient(stack.state.grpc_url).get_model_metadata(
        MODEL, as_json=True
    )
    return {t["name"] for t in meta["inputs"]} | {t["name"] for t in meta["outputs"]}


def needs(ensemble_io: set[str], *names: str) -> None:
    missing = [name for name in names if name not in ensemble_io]
    if missing:
        pytest.skip(f"needs ensemble inputs/outputs the served model lacks: {', '.join(missing)}")


def test_models_lists_the_llm_models(client: OpenAI, stack: LiveServer) -> None:
    listed = [model.id for model in client.models.list().data]
    assert MODEL in listed
    ready = {m["name"] for m in stack.client.list_models() if m.get("state") == "READY"}
    assert set(listed) <= ready and "preprocessing" not in listed and "postprocessing" not in listed


def test_chat_answers_and_stream_matches_the_whole_answer(client: OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24)
    assert whole.object == "chat.completion"
    assert whole.choices[0].message.role == "assistant"
    assert "Paris" in whole.choices[0].message.content
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, stream=True)
    )
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_completions_stream_and_not(client: OpenAI) -> None:
    prompt = "The capital of France is"
    whole = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12)
    assert whole.object == "text_completion"
    pieces = list(client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == whole.choices[0].text
    echoed = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, echo=True)
    assert echoed.choices[0].text == prompt + whole.choices[0].text


def test_sse_wire_format_ends_with_done(stack: LiveServer) -> None:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 8, "stream": True}
    with httpx.stream("POST", f"{gateway_url(stack)}/v1/chat/completions", json=body) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in reply.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_n_two_gives_two_choices(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=16, n=2, temperature=0.9, seed=11
    )
    assert sorted(choice.index for choice in reply.choices) == [0, 1]
    assert all(choice.message.content for choice in reply.choices)
    streamed = list(
        client.completions.create(
            model=MODEL, prompt="Once upon a time", max_tokens=8, n=2, seed=5, stream=True
        )
    )
    assert {p.choices[0].index for p in streamed} == {0, 1}


@pytest.mark.parametrize("stop", ["Paris", ["Paris", "London"]])
def test_stop_strings_end_the_answer_before_them(client: OpenAI, stop) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, stop=stop)
    assert "Paris" not in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"


def test_usage_equals_the_tokenizer_counts(
    client: OpenAI, ensemble_io: set[str], built_artifact: Path
) -> None:
    needs(ensemble_io, "num_input_tokens", "num_output_tokens", "finish_reason")
    tokenizer = Tokenizer.from_file(str(built_artifact / "tokenizer.json"))
    prompt = "Write a poem about the sea and the sky."
    reply = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=20, extra_body={"ignore_eos": True}
    )
    assert reply.usage.prompt_tokens == len(tokenizer.encode(prompt).ids)
    assert reply.usage.completion_tokens == 20
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 20
    assert reply.choices[0].finish_reason == "length"
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=QUESTION, max_tokens=24, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1] if c.choices)
    assert chunks[-1].usage.completion_tokens >= len(tokenizer.encode(text).ids) - 1


def test_chat_template_renders_system_and_turns(
    client: OpenAI, ensemble_io: set[str], built_artifact: Path
) -> None:
    needs(ensemble_io, "messages", "num_input_tokens")
    messages = [
        {"role": "system", "content": "You answer with one word."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": "And of Italy?"},
    ]
    reply = client.chat.completions.create(model=MODEL, max_tokens=16, messages=messages)
    assert reply.choices[0].message.content
    # The prompt the model saw is exactly the chat template's rendering of every turn.
    chat = ChatTokenizer.from_dir(built_artifact)
    rendered = chat.apply_chat_template(messages, add_generation_prompt=True)
    assert "You answer with one word." in rendered and "And of Italy?" in rendered
    assert reply.usage.prompt_tokens == len(chat.encode(rendered))


def test_logprobs_one_per_token(client: OpenAI, ensemble_io: set[str]) -> None:
    needs(ensemble_io, "return_log_probs", "output_log_probs", "num_output_tokens")
    reply = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=12, logprobs=True, top_logprobs=1
    )
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    assert "".join(entry.token for entry in entries) == reply.choices[0].message.content
    assert all(entry.logprob <= 0 and len(entry.top_logprobs) == 1 for entry in entries)


SCHEMAS = [
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    },
    {
        "type": "object",
        "properties": {"colors": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
        "required": ["colors"],
    },
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=["city", "person", "colors"])
def test_json_schema_output_validates(client: OpenAI, ensemble_io: set[str], schema) -> None:
    needs(ensemble_io, "guided_decoding_guide_type", "guided_decoding_guide")
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    reply = client.chat.completions.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Answer in JSON."}],
        response_format=fmt,
    )  # fmt: skip
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


# (request body, status, param named in the error)
BAD_REQUESTS = [
    ({"model": MODEL, "messages": QUESTION, "temperature": 3}, 400, "temperature"),
    ({"model": MODEL, "messages": QUESTION, "top_p": 0}, 400, "top_p"),
    ({"model": MODEL, "messages": QUESTION, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": MODEL, "messages": QUESTION, "max_tokens": 100000}, 400, "max_tokens"),
    ({"model": MODEL, "messages": QUESTION, "n": 0}, 400, "n"),
    ({"model": MODEL, "messages": QUESTION, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"model": MODEL, "messages": QUESTION, "presence_penalty": 9}, 400, "presence_penalty"),
    ({"model": MODEL, "messages": QUESTION, "seed": -1}, 400, "seed"),
    ({"model": MODEL, "messages": QUESTION, "bogus": 1}, 400, "bogus"),
    ({"model": MODEL, "messages": []}, 400, "messages"),
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role"),
    ({"model": MODEL}, 400, "messages"),
    ({"messages": QUESTION}, 400, "model"),
    ({"model": "no-such-model", "messages": QUESTION}, 404, "model"),
    ({"model": MODEL, "messages": QUESTION, "stream_options": {"include_usage": True}}, 400,
     "stream_options"),
]  # fmt: skip


@pytest.mark.parametrize("body,status,param", BAD_REQUESTS, ids=[b[2] for b in BAD_REQUESTS])
def test_bad_request_gets_the_status_and_openai_error_shape(
    stack: LiveServer, client: OpenAI, body: dict, status: int, param: str
) -> None:
    reply = httpx.post(f"{gateway_url(stack)}/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["message"]
    good = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)
    assert good.choices[0].message.content


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", '{"model": "\xff"}'.encode("latin-1")])
def test_malformed_json_is_a_400(stack: LiveServer, raw: bytes) -> None:
    reply = httpx.post(
        f"{gateway_url(stack)}/v1/completions", content=raw,
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"


def test_disconnect_mid_stream_frees_the_engine_sequence(stack: LiveServer) -> None:
    cancelled = stack.metric("edgectl_engine_requests_cancelled_total")
    body = {
        "model": MODEL, "prompt": "Tell me a very long story.", "max_tokens": 250,
        "ignore_eos": True, "stream": True,
    }  # fmt: skip
    with httpx.stream("POST", f"{gateway_url(stack)}/v1/completions", json=body) as reply:
        lines = reply.iter_lines()
        for _ in range(3):
            next(line for line in lines if line.startswith("data: "))
    # The client is gone: the gateway cancels the gRPC call, the engine stops the sequence.
    wait_for(
        lambda: stack.metric("edgectl_engine_requests_cancelled_total") > cancelled,
        15, "the engine to count the cancellation",
    )  # fmt: skip
    wait_for(lambda: stack.metric("edgectl_engine_active") == 0, 15, "the engine to be idle")


def test_metrics_count_requests_and_latencies(stack: LiveServer, client: OpenAI) -> None:
    list(client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=6, stream=True))
    text = httpx.get(f"{gateway_url(stack)}/metrics").text
    assert 'edgectl_openai_requests_total{endpoint="/v1/chat/completions",status="200"}' in text
    for name in ("time_to_first_token_seconds_count", "inter_token_latency_seconds_count"):
        line = next(x for x in text.splitlines() if x.startswith(f"edgectl_openai_{name}"))
        assert float(line.rsplit(" ", 1)[1]) > 0
    assert "edgectl_openai_requests_in_flight 0.0" in text


def test_health_ready(stack: LiveServer) -> None:
    assert httpx.get(f"{gateway_url(stack)}/health/ready").status_code == 200


@pytest.fixture(scope="module")
def keyed_gateway(stack: LiveServer, tmp_path_factory) -> Iterator[str]:
    """`edgectl openai serve` as the chart runs it, with a key and a 2 KiB body limit."""
    (port,) = free_ports(1)
    env = {**os.environ, KEY_ENV: "s3cret-key"}
    log = (tmp_path_factory.mktemp("keyed") / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgectl.cli", "openai", "serve", "--port", str(port),
         "--triton-grpc", stack.state.grpc_url, "--api-key-env", KEY_ENV,
         "--max-body-bytes", "2048"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), 60, "the keyed gateway")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready").status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("key,status", [(None, 401), ("wrong", 401), ("s3cret-key", 200)])
def test_api_key_is_required_when_configured(keyed_gateway: str, key, status: int) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    reply = httpx.get(f"{keyed_gateway}/v1/models", headers=headers)
    assert reply.status_code == status
    if status == 401:
        assert reply.json()["error"]["type"] == "authentication_error"


def test_api_key_works_through_the_sdk(keyed_gateway: str) -> None:
    good = OpenAI(base_url=f"{keyed_gateway}/v1", api_key="s3cret-key", max_retries=0)
    assert good.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4).choices
    bad = OpenAI(base_url=f"{keyed_gateway}/v1", api_key="nope", max_retries=0)
    with pytest.raises(Exception) as raised:
        bad.models.list()
    assert raised.value.status_code == 401


def test_a_body_over_the_limit_is_a_413(keyed_gateway: str) -> None:
    body = {"model": MODEL, "prompt": "x" * 4096}
    reply = httpx.post(
        f"{keyed_gateway}/v1/completions", json=body,
        headers={"Authorization": "Bearer s3cret-key"},
    )  # fmt: skip
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "body_too_large"


def test_one_load_profile_drives_grpc_and_the_gateway_alike(
    stack: LiveServer, tmp_path: Path
) -> None:
    profile = parse_profile(
        {"name": "both", "input_tokens": 32, "output_tokens": 16, "duration_s": 3,
         "max_requests": 8, "warmup_requests": 1, "request_timeout_s": 60,
         "concurrency": [2]},
        "e2e",
    )  # fmt: skip
    state = stack.state
    handles = [
        ServerHandle("grpc", Target("grpc", "127.0.0.1", state.grpc_port), state.http_url, None),
        ServerHandle("openai", Target("openai", "127.0.0.1", stack.config.openai.port),
                     state.http_url, None),
    ]  # fmt: skip
    tokenizer = load_tokenizer(Path(stack.config.model.artifact))
    summary = run_profile(profile, handles, MODEL, tmp_path / "run", tokenizer).as_json()
    by_path = {step["variant"]: step for step in summary["steps"]}
    for step in by_path.values():
        assert step["metrics"]["failure_count"] == 0 and step["metrics"]["request_count"] >= 1
        assert step["metrics"]["output_sequence_length"]["min"] == 16  # fixed length on both
        assert step["retokenized_output_tokens_avg"] >= 15


def edgectl(live: LiveServer, *args: str) -> subprocess.CompletedProcess:
    """The CLI on this module's server (its work dir and ports)."""
    s = live.config.server
    settings = [
        f"server.workdir={s.workdir}", f"server.http_port={s.http_port}",
        f"server.grpc_port={s.grpc_port}", f"server.metrics_port={s.metrics_port}",
        f"openai.port={live.config.openai.port}",
    ]  # fmt: skip
    command = [sys.executable, "-m", "edgectl.cli"]
    for setting in settings:
        command += ["--set", setting]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)


def test_status_shows_the_gateway(stack: LiveServer) -> None:
    out = edgectl(stack, "status").stdout
    assert "openai: up" in out and f":{stack.config.openai.port}/v1" in out


def test_stop_stops_the_gateway_too(stack: LiveServer) -> None:
    """Last in this module: it stops the module's server."""
    out = edgectl(stack, "stop").stdout
    assert "openai gateway stopped" in out and "server stopped" in out
    assert not _ready(gateway_url(stack))
    assert "openai: up" not in edgectl(stack, "status").stdout
