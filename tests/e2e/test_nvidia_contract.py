"""Clients written for NVIDIA's TensorRT-LLM Triton models, against the real server.

Requests are shaped as NVIDIA's example clients shape them (``[1, 1]`` inputs,
``runtime_top_k=1, runtime_top_p=0`` by default) and read as they read them.
"""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest
from tokenizers import Tokenizer
from tritonclient.utils import InferenceServerException

from edgectl.resources import model_templates
from tests.e2e.conftest import BOTH_MODES, STREAMING_REFUSED, LiveServer
from tests.e2e.nvidia_client import (
    column,
    ensemble_inputs,
    first_text,
    grpc_stream,
    http_generate,
)

PROMPT = "The capital of France is"
COUNTS = {"return_num_input_tokens": True, "return_num_output_tokens": True}
CONTRACT = model_templates() / "_contract" / "contract.yaml"
NUMPY_DTYPES = {
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_UINT64": np.uint64,
    "TYPE_FP32": np.float32,
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_STRING": np.object_,
}


def texts(results) -> list[str]:
    """Every text chunk of a stream, in order (the empty final response carries none)."""
    out = []
    for result in results:
        array = result.as_numpy("text_output")
        if array is not None:
            out.extend(item.decode() for item in array)
    return out


def outputs(results, name: str) -> list[np.ndarray]:
    return [a for a in (r.as_numpy(name) for r in results) if a is not None]


def greedy(server: LiveServer, prompt: str = PROMPT, max_tokens: int = 8, **fields) -> str:
    inputs = ensemble_inputs(prompt, max_tokens, **fields)
    return "".join(texts(grpc_stream(server.state.grpc_url, "ensemble", inputs)))


def tokenizer(server: LiveServer) -> Tokenizer:
    return Tokenizer.from_file(str(server.config.model.artifact / "tokenizer.json"))


@BOTH_MODES
def test_text_output_is_one_dimensional_as_nvidia_clients_read_it(server: LiveServer):
    results = grpc_stream(server.state.grpc_url, "ensemble", ensemble_inputs(PROMPT, 6))
    array = results[0].as_numpy("text_output")
    assert array.ndim == 1 and array.shape == (1,)
    assert "Paris" in first_text(results[0])
    # side outputs come only with NVIDIA's return_* flags, as from NVIDIA's backend
    for name in ("cum_log_probs", "num_output_tokens", "arrival_time_ns"):
        assert results[0].as_numpy(name) is None, name
    assert results[-1].as_numpy("finish_reason") is not None
    [event] = http_generate(
        server.state.http_url, "ensemble", {"text_input": PROMPT, "max_tokens": 6}
    )
    assert isinstance(event["text_output"], str) and "Paris" in event["text_output"]


@BOTH_MODES
def test_every_ensemble_output_has_the_contract_dtype_and_rank(server: LiveServer):
    import yaml

    contract = yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))["models"]["ensemble"]
    never_sent = {"context_logits", "generation_logits"}  # asking for them is refused
    declared = {
        e["name"]: e
        for e in contract["outputs"]
        if e["status"] != "omitted" and e["name"] not in never_sent
    }
    inputs = ensemble_inputs(
        PROMPT,
        4,
        return_log_probs=True,
        return_perf_metrics=True,
        return_num_input_tokens=True,
        return_num_output_tokens=True,
    )
    import queue

    import tritonclient.grpc as grpcclient

    from tests.e2e.helpers import infer_input

    received: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.state.grpc_url)
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    try:
        client.async_stream_infer(
            "ensemble",
            [infer_input(name, value) for name, value in inputs.items()],
            outputs=[grpcclient.InferRequestedOutput(name) for name in declared],
        )
        result, error = received.get(timeout=120)
    finally:
        client.stop_stream()
        client.close()
    assert error is None, error
    for name, entry in declared.items():
        array = result.as_numpy(name)
        assert array is not None, f"{name} missing"
        assert array.dtype == NUMPY_DTYPES[entry["dtype"]], name
        # text_output is flat (NVIDIA's postprocessing); the rest keep the batch dimension
        expected_rank = 1 if name == "text_output" else len(entry["dims"]) + 1
        assert array.ndim == expected_rank, (name, array.shape)


@BOTH_MODES
@pytest.mark.parametrize(
    ("top_k", "top_p"), [(1, 0.0), (0, 0.0)], ids=["nvidia-default-k1-p0", "k0-p0"]
)
def test_greedy_settings_give_the_greedy_text(server: LiveServer, top_k: int, top_p: float):
    assert greedy(server, top_k=top_k, top_p=top_p) == greedy(server)


@BOTH_MODES
def test_top_k_0_top_p_1_samples_the_full_distribution(server: LiveServer):
    sampled = {greedy(server, max_tokens=12, top_k=0, top_p=1.0, seed=seed) for seed in range(4)}
    assert len(sampled) > 1  # greedy would give one text for every seed
    same_seed = greedy(server, max_tokens=12, top_k=0, top_p=1.0, seed=2)
    assert same_seed == greedy(server, max_tokens=12, top_k=0, top_p=1.0, random_seed=2)


def test_n2_returns_two_sampled_sequences_with_sequence_index(live_server: LiveServer):
    """Decoupled only: one response per sequence (unary stacks them: test_unary_mode)."""
    inputs = ensemble_inputs(PROMPT, 10, num_return_sequences=2, top_k=0, top_p=1.0, seed=7)
    results = grpc_stream(live_server.state.grpc_url, "ensemble", inputs)
    by_index: dict[int, str] = {}
    for result in results:
        index = result.as_numpy("sequence_index")
        if index is not None:
            by_index[int(index.reshape(-1)[0])] = by_index.get(
                int(index.reshape(-1)[0]), ""
            ) + "".join(item.decode() for item in result.as_numpy("text_output"))
    assert sorted(by_index) == [0, 1]
    assert by_index[0] != by_index[1]


@BOTH_MODES
def test_beam_search_returns_beams_best_first(server: LiveServer):
    inputs = ensemble_inputs(PROMPT, 8, beam_width=2, return_log_probs=True)
    results = grpc_stream(server.state.grpc_url, "ensemble", inputs)
    [result] = [r for r in results if r.as_numpy("text_output") is not None]
    beams = [item.decode() for item in result.as_numpy("text_output")]
    cum = result.as_numpy("cum_log_probs").reshape(-1)
    per_token = result.as_numpy("output_log_probs").reshape(2, -1)
    assert len(beams) == 2 and beams[0] != beams[1]
    assert cum[0] >= cum[1]  # len_penalty 0 (TensorRT-LLM's default): raw cumulative order
    assert np.allclose(per_token.sum(axis=1), cum, atol=1e-3)


@BOTH_MODES
@pytest.mark.parametrize("stream", [False, True])
def test_output_log_probs_sum_to_cum_log_probs(server: LiveServer, stream: bool):
    inputs = ensemble_inputs(PROMPT, 8, return_log_probs=True, stream=stream)
    if stream and not server.decoupled:
        with pytest.raises(InferenceServerException, match=STREAMING_REFUSED):
            grpc_stream(server.state.grpc_url, "ensemble", inputs)
        return
    results = grpc_stream(server.state.grpc_url, "ensemble", inputs)
    per_token = np.concatenate([a.reshape(-1) for a in outputs(results, "output_log_probs")])
    final_cum = outputs(results, "cum_log_probs")[-1].reshape(-1)[0]
    assert per_token.size == 8 and np.all(per_token <= 0)
    assert per_token.sum() == pytest.approx(final_cum, abs=1e-3)


@BOTH_MODES
def test_token_counts_and_finish_reason(server: LiveServer):
    """Unary mode refuses the stream and answers the counts in one response."""
    inputs = ensemble_inputs(PROMPT, 5, stream=True, ignore_eos=True, **COUNTS)
    if not server.decoupled:
        with pytest.raises(InferenceServerException, match=STREAMING_REFUSED):
            grpc_stream(server.state.grpc_url, "ensemble", inputs)
        inputs = ensemble_inputs(PROMPT, 5, ignore_eos=True, **COUNTS)
    results = grpc_stream(server.state.grpc_url, "ensemble", inputs)
    counts = [int(a.reshape(-1)[0]) for a in outputs(results, "num_output_tokens")]
    reasons = [a.reshape(-1)[0].decode() for a in outputs(results, "finish_reason")]
    prompt_tokens = len(tokenizer(server).encode(PROMPT, add_special_tokens=False).ids)
    assert int(outputs(results, "num_input_tokens")[0].reshape(-1)[0]) == prompt_tokens
    assert counts[-1] == 5 and counts == sorted(counts)
    assert reasons[-1] == "length" and set(reasons[:-1]) <= {""}
    stopped = grpc_stream(
        server.state.grpc_url,
        "ensemble",
        {**ensemble_inputs(PROMPT, 30), "stop_words": np.asarray([[b"Paris"]], dtype=object)},
    )
    assert outputs(stopped, "finish_reason")[-1].reshape(-1)[0].decode() == "stop"


@BOTH_MODES
def test_messages_use_the_chat_template(server: LiveServer):
    one_turn = json.dumps([{"role": "user", "content": "What is the capital of France?"}])
    via_messages = greedy(server, "", 8, messages=one_turn)
    via_flag = greedy(server, "What is the capital of France?", 8, apply_chat_template=True)
    assert via_messages == via_flag
    conversation = [
        {"role": "system", "content": "You answer questions about geography."},
        *json.loads(one_turn),
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Germany?"},
    ]
    url = server.state.grpc_url
    multi = grpc_stream(
        url, "ensemble", ensemble_inputs("", 2, messages=json.dumps(conversation), **COUNTS)
    )
    single = grpc_stream(url, "ensemble", ensemble_inputs("", 2, messages=one_turn, **COUNTS))
    assert outputs(multi, "num_input_tokens")[0] > outputs(single, "num_input_tokens")[0]


@BOTH_MODES
@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ("[{not json", "messages is not valid JSON"),
        ('[{"role": "pirate", "content": "x"}]', "role"),
    ],
)
def test_malformed_messages_are_refused(server: LiveServer, messages: str, fragment: str):
    inputs = ensemble_inputs("", 4, messages=messages)
    with pytest.raises(InferenceServerException, match=fragment) as err:
        grpc_stream(server.state.grpc_url, "ensemble", inputs)
    assert "messages" in str(err.value)
    assert greedy(server, max_tokens=2)  # still serving


@BOTH_MODES
@pytest.mark.parametrize(
    ("guide_type", "guide", "check"),
    [
        ("json", "", lambda text: isinstance(json.loads(text), dict)),
        (
            "json_schema",
            json.dumps(
                {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
            ),
            lambda text: isinstance(json.loads(text)["ok"], bool),
        ),
        ("regex", "[0-9]{3}-[a-z]{2}", lambda text: re.fullmatch("[0-9]{3}-[a-z]{2}", text)),
        ("ebnf_grammar", 'root ::= "yes" | "no"', lambda text: text in ("yes", "no")),
    ],
)
def test_guided_decoding_output_follows_the_guide(
    server: LiveServer, guide_type: str, guide: str, check
):
    text = greedy(
        server,
        "Give me a JSON object.",
        48,
        guided_decoding_guide_type=guide_type,
        guided_decoding_guide=guide,
    )
    assert check(text), text


@BOTH_MODES
def test_unknown_guide_type_and_unsupported_inputs_are_refused_by_name(server: LiveServer):
    url = server.state.grpc_url
    bad_guide = ensemble_inputs(PROMPT, 4, guided_decoding_guide_type="xml")
    with pytest.raises(InferenceServerException, match="guided_decoding_guide_type"):
        grpc_stream(url, "ensemble", bad_guide)
    lora = ensemble_inputs(PROMPT, 4, lora_task_id=3)
    with pytest.raises(InferenceServerException, match="lora_task_id is not supported"):
        grpc_stream(url, "ensemble", lora)
    assert greedy(server, max_tokens=2)


@BOTH_MODES
@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls"])
def test_batched_text_input_answers_each_row_with_batch_index(server: LiveServer, model):
    """Unary mode refuses a batch larger than 1, as NVIDIA's non-decoupled backend does."""
    prompts = [PROMPT, "The largest planet is"]
    if not server.decoupled:
        with pytest.raises(InferenceServerException, match="batch size 1"):
            grpc_stream(server.state.grpc_url, model, ensemble_inputs(prompts, 6))
        assert greedy(server, max_tokens=2)  # still serving
        return
    results = grpc_stream(server.state.grpc_url, model, ensemble_inputs(prompts, 6))
    by_row: dict[int, str] = {}
    for result in results:
        index = result.as_numpy("batch_index")
        if index is not None:
            by_row[int(index.reshape(-1)[0])] = first_text(result)
    assert by_row == {0: greedy(server, prompts[0], 6), 1: greedy(server, prompts[1], 6)}


@BOTH_MODES
def test_preprocessing_engine_postprocessing_by_hand_gives_the_ensemble_text(
    server: LiveServer,
):
    url = server.state.grpc_url
    [pre] = grpc_unary_preprocessing(url)
    ids = pre.as_numpy("INPUT_ID")
    for name in ("DECODER_INPUT_ID", "REQUEST_DECODER_INPUT_LEN", "EMBEDDING_BIAS"):
        assert pre.as_numpy(name) is not None, name
    engine_inputs = {
        "input_ids": ids,
        "input_lengths": pre.as_numpy("REQUEST_INPUT_LEN"),
        "request_output_len": np.asarray([[8]], dtype=np.int32),
        "end_id": pre.as_numpy("OUT_END_ID"),
        "runtime_top_k": np.asarray([[1]], dtype=np.int32),
        "runtime_top_p": np.asarray([[0.0]], dtype=np.float32),
    }
    engine = [
        r
        for r in grpc_stream(url, "tensorrt_llm", engine_inputs)
        if r.as_numpy("output_ids") is not None
    ]
    tokens = engine[-1].as_numpy("output_ids")
    post = grpc_stream_post(url, tokens, engine[-1].as_numpy("sequence_length"))
    assert post == greedy(server)


def grpc_unary_preprocessing(url: str):
    from tests.e2e.nvidia_client import grpc_unary

    inputs = {
        "QUERY": column("text_input", [PROMPT]),
        "REQUEST_OUTPUT_LEN": column("max_tokens", [8]),
    }
    return [grpc_unary(url, "preprocessing", inputs)]


def grpc_stream_post(url: str, tokens: np.ndarray, lengths: np.ndarray) -> str:
    from tests.e2e.nvidia_client import grpc_unary

    result = grpc_unary(url, "postprocessing", {"TOKENS_BATCH": tokens, "SEQUENCE_LENGTH": lengths})
    return result.as_numpy("OUTPUT")[0].decode()


@BOTH_MODES
@pytest.mark.parametrize("exclude", [True, False])
def test_exclude_input_in_output_on_the_engine_step(server: LiveServer, exclude: bool):
    ids = tokenizer(server).encode(PROMPT, add_special_tokens=False).ids
    inputs = {
        "input_ids": np.asarray([ids], dtype=np.int32),
        "input_lengths": np.asarray([[len(ids)]], dtype=np.int32),
        "request_output_len": np.asarray([[4]], dtype=np.int32),
        "exclude_input_in_output": np.asarray([[exclude]], dtype=np.bool_),
    }
    results = grpc_stream(server.state.grpc_url, "tensorrt_llm", inputs)
    output = outputs(results, "output_ids")[-1]
    assert output.shape[:2] == (1, 1)
    assert (output[0, 0, : len(ids)].tolist() == ids) is not exclude
    assert output.shape[2] == (4 if exclude else len(ids) + 4)


@BOTH_MODES
def test_perf_metrics_come_from_the_engine_clock(server: LiveServer):
    inputs = ensemble_inputs(PROMPT, 4, return_perf_metrics=True)
    results = grpc_stream(server.state.grpc_url, "ensemble", inputs)
    names = (
        "arrival_time_ns",
        "first_scheduled_time_ns",
        "first_token_time_ns",
        "last_token_time_ns",
    )
    times = [int(outputs(results, name)[-1].reshape(-1)[0]) for name in names]
    assert 0 < times[0] <= times[1] <= times[2] <= times[3]
    assert int(outputs(results, "kv_cache_alloc_total_blocks")[-1].reshape(-1)[0]) == -1


def engine_inputs(server: LiveServer, max_tokens: int, **fields) -> dict:
    ids = tokenizer(server).encode(PROMPT, add_special_tokens=False).ids
    inputs = {
        "input_ids": np.asarray([ids], dtype=np.int32),
        "input_lengths": np.asarray([[len(ids)]], dtype=np.int32),
        "request_output_len": np.asarray([[max_tokens]], dtype=np.int32),
    }
    for name, value in fields.items():
        inputs[name] = np.asarray([[value]], dtype=np.bool_)
    return inputs


def test_stop_request_ends_generation_and_frees_the_slot(live_server: LiveServer):
    """Decoupled only: it streams from the engine (unary: test_unary_mode's stop test)."""
    import threading
    import time

    url = live_server.state.grpc_url
    finished_before = live_server.metric("edgectl_engine_requests_finished_total")
    done: dict[str, list] = {}

    def run() -> None:
        long_request = engine_inputs(
            live_server, 250, ignore_eos=True, streaming=True, return_num_output_tokens=True
        )
        done["results"] = grpc_stream(url, "tensorrt_llm", long_request, request_id="stop-me")

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 60
    while live_server.metric("edgectl_engine_active") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    grpc_stream(url, "tensorrt_llm", engine_inputs(live_server, 1, stop=True), request_id="stop-me")
    worker.join(60)
    assert not worker.is_alive()
    generated = int(outputs(done["results"], "num_output_tokens")[-1].reshape(-1)[0])
    assert 0 < generated < 250
    while live_server.metric("edgectl_engine_active") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live_server.metric("edgectl_engine_active") == 0
    assert live_server.metric("edgectl_engine_requests_finished_total") > finished_before


def test_bls_streams_the_ensemble_text_and_side_outputs(live_server: LiveServer):
    """Decoupled only: streams and one response per sequence (unary: test_unary_mode)."""
    url = live_server.state.grpc_url
    for stream in (False, True):
        inputs = ensemble_inputs(PROMPT, 8, stream=stream, return_log_probs=True)
        results = grpc_stream(url, "tensorrt_llm_bls", inputs)
        assert "".join(texts(results)) == greedy(live_server)
        per_token = np.concatenate([a.reshape(-1) for a in outputs(results, "output_log_probs")])
        assert per_token.sum() == pytest.approx(
            outputs(results, "cum_log_probs")[-1].reshape(-1)[0], abs=1e-3
        )
    samples = ensemble_inputs(PROMPT, 6, num_return_sequences=2, top_k=0, top_p=1.0, seed=3)
    results = grpc_stream(url, "tensorrt_llm_bls", samples)
    indices = {int(a.reshape(-1)[0]) for a in outputs(results, "sequence_index")}
    assert indices == {0, 1}


@BOTH_MODES
def test_bls_accepts_draft_inputs_and_refuses_by_name(server: LiveServer):
    url = server.state.grpc_url
    inputs = {
        **ensemble_inputs(PROMPT, 8),
        "num_draft_tokens": np.asarray([[4]], dtype=np.int32),
        "use_draft_logits": np.asarray([[False]], dtype=np.bool_),
    }
    assert "".join(texts(grpc_stream(url, "tensorrt_llm_bls", inputs))) == greedy(server)
    inputs["use_draft_logits"] = np.asarray([[True]], dtype=np.bool_)
    with pytest.raises(InferenceServerException, match="use_draft_logits is not supported"):
        grpc_stream(url, "tensorrt_llm_bls", inputs)
    lora = ensemble_inputs(PROMPT, 4, lora_task_id=3)
    with pytest.raises(InferenceServerException, match="lora_task_id is not supported"):
        grpc_stream(url, "tensorrt_llm_bls", lora)


@BOTH_MODES
def test_http_generate_stream_concatenates_to_the_greedy_text(server: LiveServer):
    """Unary mode refuses generate_stream with the documented error."""
    for model in ("ensemble", "tensorrt_llm_bls"):
        if not server.decoupled:
            response = httpx.post(
                f"{server.state.http_url}/v2/models/{model}/generate_stream",
                json={"text_input": PROMPT, "max_tokens": 8, "stream": True},
                timeout=60,
            )
            assert response.status_code == 400 and STREAMING_REFUSED in response.text
            continue
        events = http_generate(
            server.state.http_url,
            model,
            {"text_input": PROMPT, "max_tokens": 8, "stream": True},
            stream=True,
        )
        assert len(events) > 1
        assert "".join(e.get("text_output", "") for e in events) == greedy(server)


def test_cancelling_a_bls_stream_frees_the_engine_sequence(live_server: LiveServer):
    """Decoupled only: it cancels a stream, which a unary deployment refuses."""
    import queue
    import time

    import tritonclient.grpc as grpcclient

    from tests.e2e.helpers import infer_input

    cancelled_before = live_server.metric("edgectl_engine_requests_cancelled_total")
    received: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(live_server.state.grpc_url)
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    inputs = ensemble_inputs(PROMPT, 250, stream=True, ignore_eos=True)
    client.async_stream_infer(
        "tensorrt_llm_bls", [infer_input(name, value) for name, value in inputs.items()]
    )
    for _ in range(3):
        _, error = received.get(timeout=60)
        assert error is None
    client.stop_stream(cancel_requests=True)
    client.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        live_server.metric("edgectl_engine_requests_cancelled_total") <= cancelled_before
        or live_server.metric("edgectl_engine_active") > 0
    ):
        time.sleep(0.2)
    assert live_server.metric("edgectl_engine_requests_cancelled_total") > cancelled_before
    assert live_server.metric("edgectl_engine_active") == 0
