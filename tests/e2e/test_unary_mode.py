"""engine.decoupled=false: NVIDIA's unary calls (gRPC ModelInfer, HTTP /infer) on every model.

Runs on the session's unary server; texts are compared with the decoupled session server.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import LiveServer
from tests.e2e.nvidia_client import (
    ensemble_inputs,
    first_text,
    grpc_stream,
    grpc_unary,
    http_generate,
    http_infer,
)

PROMPT = "The capital of France is"


def streamed_text(server: LiveServer, model: str = "ensemble", **fields) -> str:
    results = grpc_stream(server.state.grpc_url, model, ensemble_inputs(PROMPT, 8, **fields))
    return "".join(
        item.decode()
        for r in results
        if r.as_numpy("text_output") is not None
        for item in r.as_numpy("text_output")
    )


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls"])
def test_grpc_and_http_infer_return_the_whole_greedy_text(
    unary_server: LiveServer, live_server: LiveServer, model: str
):
    expected = streamed_text(live_server)
    inputs = ensemble_inputs(PROMPT, 8, top_k=1, top_p=0.0)
    grpc_result = grpc_unary(unary_server.state.grpc_url, model, inputs)
    assert grpc_result.as_numpy("text_output").shape == (1,)
    assert first_text(grpc_result) == expected
    http_result = http_infer(unary_server.state.http_url, model, inputs)
    assert first_text(http_result) == expected
    [event] = http_generate(
        unary_server.state.http_url, model, {"text_input": PROMPT, "max_tokens": 8}
    )
    assert event["text_output"] == expected


def test_unary_side_outputs_keep_tensorrt_llm_shapes(unary_server: LiveServer):
    inputs = ensemble_inputs(PROMPT, 6, return_log_probs=True, beam_width=2)
    result = grpc_unary(unary_server.state.grpc_url, "ensemble", inputs)
    assert result.as_numpy("text_output").shape == (2,)
    cum = result.as_numpy("cum_log_probs")
    assert cum.shape == (1, 2) and cum[0, 0] >= cum[0, 1]
    assert np.allclose(result.as_numpy("output_log_probs").sum(axis=-1), cum, atol=1e-3)
    samples = ensemble_inputs(PROMPT, 6, num_return_sequences=2, top_k=0, top_p=1.0, seed=5)
    result = grpc_unary(unary_server.state.grpc_url, "ensemble", samples)
    assert result.as_numpy("text_output").shape == (2,)


def test_engine_step_answers_unary_calls(unary_server: LiveServer, live_server: LiveServer):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(unary_server.config.model.artifact / "tokenizer.json"))
    ids = tokenizer.encode(PROMPT, add_special_tokens=False).ids
    inputs = {
        "input_ids": np.asarray([ids], dtype=np.int32),
        "input_lengths": np.asarray([[len(ids)]], dtype=np.int32),
        "request_output_len": np.asarray([[8]], dtype=np.int32),
        "return_num_output_tokens": np.asarray([[True]]),
    }
    result = grpc_unary(unary_server.state.grpc_url, "tensorrt_llm", inputs)
    generated = result.as_numpy("output_ids")[0, 0].tolist()
    assert tokenizer.decode(generated) == streamed_text(live_server)
    assert int(result.as_numpy("num_output_tokens").reshape(-1)[0]) == len(generated)


def test_streaming_and_batches_are_refused_with_a_clear_error(unary_server: LiveServer):
    url = unary_server.state.grpc_url
    with pytest.raises(InferenceServerException, match="decoupled"):
        grpc_unary(url, "ensemble", ensemble_inputs(PROMPT, 4, stream=True))
    with pytest.raises(InferenceServerException, match="batch size 1"):
        grpc_unary(url, "ensemble", ensemble_inputs([PROMPT, PROMPT], 4))
    assert first_text(grpc_unary(url, "ensemble", ensemble_inputs(PROMPT, 2)))  # still serving


def test_concurrent_unary_requests_share_engine_steps(unary_server: LiveServer):
    """In-flight batching survives unary mode: the engine schedules several at once."""
    url = unary_server.state.grpc_url
    before = unary_server.metric("edgectl_engine_peak_scheduled", "tensorrt_llm_decoupled")
    errors: list[Exception] = []

    def call() -> None:
        try:
            grpc_unary(url, "ensemble", ensemble_inputs(PROMPT, 24, ignore_eos=True))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    peak = unary_server.metric("edgectl_engine_peak_scheduled", "tensorrt_llm_decoupled")
    assert max(peak, before) >= 2


def test_unary_extensions_counts_and_exclude_input(unary_server: LiveServer):
    import json

    url = unary_server.state.http_url
    messages = json.dumps([{"role": "user", "content": "What is the capital of France?"}])
    counts = {"return_num_input_tokens": True, "return_num_output_tokens": True}
    inputs = ensemble_inputs("", 5, messages=messages, ignore_eos=True, **counts)
    result = http_infer(url, "ensemble", inputs)
    assert result.as_numpy("finish_reason").reshape(-1)[0] == b"length"
    assert int(result.as_numpy("num_output_tokens").reshape(-1)[0]) == 5
    assert int(result.as_numpy("num_input_tokens").reshape(-1)[0]) > 5
    kept = ensemble_inputs(PROMPT, 4, exclude_input_in_output=False)
    assert first_text(grpc_unary(unary_server.state.grpc_url, "ensemble", kept)).startswith(PROMPT)
    guided = ensemble_inputs(
        "Give me a JSON object.", 48, guided_decoding_guide_type="json", guided_decoding_guide=""
    )
    text = first_text(grpc_unary(unary_server.state.grpc_url, "tensorrt_llm_bls", guided))
    assert isinstance(json.loads(text), dict)


def test_stop_request_reaches_the_engine_behind_the_unary_front(unary_server: LiveServer):
    import time

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(unary_server.config.model.artifact / "tokenizer.json"))
    ids = tokenizer.encode(PROMPT, add_special_tokens=False).ids

    def engine_inputs(max_tokens: int, **flags: bool) -> dict:
        inputs = {
            "input_ids": np.asarray([ids], dtype=np.int32),
            "input_lengths": np.asarray([[len(ids)]], dtype=np.int32),
            "request_output_len": np.asarray([[max_tokens]], dtype=np.int32),
        }
        inputs.update({name: np.asarray([[value]]) for name, value in flags.items()})
        return inputs

    import tritonclient.grpc as grpcclient

    from tests.e2e.helpers import infer_input

    url = unary_server.state.grpc_url
    done: dict = {}

    def run() -> None:
        client = grpcclient.InferenceServerClient(url)
        flags = {"ignore_eos": True, "return_num_output_tokens": True}
        tensors = [infer_input(n, v) for n, v in engine_inputs(250, **flags).items()]
        done["result"] = client.infer("tensorrt_llm", tensors, request_id="unary-stop")
        client.close()

    worker = threading.Thread(target=run)
    worker.start()
    model = "tensorrt_llm_decoupled"
    deadline = time.monotonic() + 60
    while unary_server.metric("edgectl_engine_active", model) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    client = grpcclient.InferenceServerClient(url)
    stop = [infer_input(n, v) for n, v in engine_inputs(1, stop=True).items()]
    client.infer("tensorrt_llm", stop, request_id="unary-stop")
    client.close()
    worker.join(60)
    assert int(done["result"].as_numpy("num_output_tokens").reshape(-1)[0]) < 250


def test_the_openai_gateway_answers_whole_on_a_unary_engine(unary_server: LiveServer) -> None:
    from openai import OpenAI

    client = OpenAI(
        base_url=f"http://127.0.0.1:{unary_server.config.openai.port}/v1", api_key="unused",
        max_retries=0,
    )  # fmt: skip
    question = [{"role": "user", "content": "What is the capital of France?"}]
    whole = client.chat.completions.create(model="ensemble", messages=question, max_tokens=16)
    assert "Paris" in whole.choices[0].message.content and whole.usage.completion_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model="ensemble", messages=question, max_tokens=16, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    contents = [c.choices[0].delta.content for c in chunks if c.choices]
    assert contents == ["", whole.choices[0].message.content, None]  # answered whole
    assert chunks[-1].usage == whole.usage
    two = client.completions.create(model="ensemble", prompt=PROMPT, max_tokens=8, n=2, seed=1)
    assert [choice.index for choice in two.choices] == [0, 1]
