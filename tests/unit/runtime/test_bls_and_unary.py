"""BLS driven by the rendered ensemble's maps; unary requests checked and merged."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgectl.config import EngineConfig
from edgectl.runtime import bls
from edgectl.runtime.contract import InvalidRequest
from edgectl.runtime.unary import answer_later, check_unary_request, merge_sequences
from tests.unit.deploy.test_repository import render, served


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> bls.EnsemblePlan:
    repo = render(tmp_path_factory.mktemp("bls"), served("cpu"), engine=EngineConfig())
    return bls.EnsemblePlan.from_config(repo / "ensemble" / "config.pbtxt")


def fake_call(log: list):
    """Preprocessing gives ids, the engine streams two responses, postprocessing decodes."""

    def call(model, inputs, requested, decoupled):
        log.append((model, sorted(inputs), decoupled))
        if model == "preprocessing":
            return [{"INPUT_ID": np.asarray([[5, 6]]), "REQUEST_INPUT_LEN": np.asarray([[2]])}]
        if model == "tensorrt_llm":
            return [
                {"output_ids": np.asarray([[[7]]]), "request_key": np.asarray([[42]])},
                {"output_ids": np.asarray([[[8]]]), "num_output_tokens": np.asarray([[2]])},
            ]
        return [{"OUTPUT": np.asarray([str(inputs["TOKENS_BATCH"].item()).encode()])}]

    return call


def test_plan_reads_the_three_steps_from_the_ensemble(plan):
    assert [plan.pre.model, plan.engine.model, plan.post.model] == [
        "preprocessing",
        "tensorrt_llm",
        "postprocessing",
    ]
    assert plan.engine.inputs["runtime_top_k"] == "top_k"
    assert "text_output" in plan.outputs


def test_run_maps_client_names_through_every_step(plan):
    log: list = []
    client = {
        "text_input": np.asarray([[b"hi"]]),
        "max_tokens": np.asarray([[2]]),
        "top_k": np.asarray([[1]]),
    }
    responses = list(
        bls.run(plan, fake_call(log), client, ["text_output", "num_output_tokens"], True)
    )
    assert [r.tensors["text_output"].tolist() for r in responses] == [[b"7"], [b"8"]]
    assert "num_output_tokens" in responses[1].tensors
    assert [r.engine_key for r in responses] == [42, None]
    pre, engine = log[0], log[1]
    assert set(pre[1]) == {"QUERY", "REQUEST_OUTPUT_LEN"}
    assert {"input_ids", "input_lengths", "runtime_top_k"} <= set(engine[1]) and engine[2]


def test_bls_only_inputs_are_refused_or_ignored(plan):
    client = {"text_input": np.asarray([[b"hi"]]), "max_tokens": np.asarray([[2]])}
    ignored = {**client, "num_draft_tokens": np.asarray([[3]])}
    assert len(list(bls.run(plan, fake_call([]), ignored, ["text_output"], True))) == 2
    with pytest.raises(InvalidRequest, match="use_draft_logits is not supported"):
        list(
            bls.run(
                plan, fake_call([]), {**client, "use_draft_logits": np.asarray([True])}, [], True
            )
        )


def test_unary_refuses_streaming_and_batches():
    with pytest.raises(InvalidRequest, match="decoupled"):
        check_unary_request({"streaming": np.asarray([True])}.get)
    with pytest.raises(InvalidRequest, match="batch size 1"):
        check_unary_request({"input_ids": np.zeros((2, 3))}.get)
    check_unary_request({"input_ids": np.zeros((1, 3)), "streaming": np.asarray([False])}.get)


def test_merge_stacks_sequences_in_order_on_the_beam_axis():
    first = {
        "output_ids": np.asarray([[[4, 5, 6]]]),
        "sequence_length": np.asarray([[3]]),
        "sequence_index": np.asarray([[1]]),
        "num_output_tokens": np.asarray([[3]]),
        "finish_reason": np.asarray([[b"length"]], dtype=object),
    }
    second = {
        "output_ids": np.asarray([[[9]]]),
        "sequence_length": np.asarray([[1]]),
        "sequence_index": np.asarray([[0]]),
        "num_output_tokens": np.asarray([[1]]),
        "finish_reason": np.asarray([[b"stop"]], dtype=object),
    }
    merged = merge_sequences([first, second], end_id=2)
    assert merged["output_ids"].tolist() == [[[9, 2, 2], [4, 5, 6]]]
    assert merged["sequence_length"].tolist() == [[1, 3]]
    assert merged["finish_reason"].tolist() == [[b"stop", b"length"]]
    assert merged["num_output_tokens"].tolist() == [[3]]


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[tuple[object, int]] = []

    def send(self, response, flags: int = 0) -> None:
        self.sent.append((response, flags))


def test_answer_later_sends_one_final_response_from_the_pool():
    from concurrent.futures import ThreadPoolExecutor

    release = threading.Event()
    sender = FakeSender()
    with ThreadPoolExecutor(max_workers=2) as pool:
        future = answer_later(pool, sender, lambda: release.wait(5) and "whole", 1, str)
        assert sender.sent == []  # the caller (execute) did not wait for the work
        release.set()
        future.result(5)
    assert sender.sent == [("whole", 1)]


def test_answer_later_turns_a_failure_into_an_error_response():
    from concurrent.futures import ThreadPoolExecutor

    def broken():
        raise RuntimeError("engine gone")

    sender = FakeSender()
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer_later(pool, sender, broken, 1, lambda message: ("error", message)).result(5)
    assert sender.sent == [(("error", "the unary front failed: engine gone"), 1)]
