"""The engine's side outputs: log probs, counts, finish reasons, beams, stop, config mapping."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np

from edgectl.runtime.contract import SamplingParams
from edgectl.runtime.emission import Emission, RequestTiming, finished_beams
from edgectl.runtime.engine import EngineRequest
from edgectl.runtime.generation_config import ANY_JSON_OBJECT, configure
from edgectl.runtime.response_tensors import (
    KV_BLOCKS_UNKNOWN,
    FanIn,
    output_tensors,
    outputs_to_send,
)
from tests.unit.runtime.test_engine import (
    END_ID,
    FakeHandle,
    FakePipeline,
    RecordingSink,
    make_engine,
)


class LogProbHandle(FakeHandle):
    """Reports a log prob of -0.5 per generated token."""

    def read(self) -> dict:
        ids, self.unread = self.unread, []
        return {0: SimpleNamespace(generated_ids=ids, generated_log_probs=[-0.5] * len(ids))}


class LogProbPipeline(FakePipeline):
    def add_request(self, request_id, tensor, config):
        handle = LogProbHandle(self.scripts[request_id], config, self.honour_limits)
        self.handles.append(handle)
        self.prompts.append(tensor)
        return handle


@contextmanager
def started(pipeline: FakePipeline) -> Iterator:
    engine = make_engine(pipeline)
    engine.start()
    try:
        yield engine
    finally:
        engine.shutdown(timeout=5)


def run(pipeline: FakePipeline, prompt, **params) -> RecordingSink:
    with started(pipeline) as engine:
        sink = RecordingSink()
        engine.submit(EngineRequest(list(prompt), SamplingParams(**params), sink))
        return sink.wait()


def test_counts_log_probs_and_finish_reason_when_max_tokens_ends_it():
    pipeline = LogProbPipeline([[7, 8, 9, 10, 11]])
    [final] = run(pipeline, [1, 2, 3], max_new_tokens=3, return_log_probs=True).emissions
    assert final.ids == [[7, 8, 9]]
    assert final.log_probs == [[-0.5, -0.5, -0.5]] and final.cum_log_probs == [-1.5]
    assert (final.num_input_tokens, final.num_output_tokens) == (3, 3)
    assert final.finish_reasons == ["length"]


def test_end_id_finishes_with_stop_and_is_not_counted():
    pipeline = LogProbPipeline([[7, END_ID]])
    [final] = run(pipeline, [1], max_new_tokens=5).emissions
    assert final.ids == [[7]] and final.num_output_tokens == 1
    assert final.finish_reasons == ["stop"]


def test_streamed_responses_carry_running_counts_and_reason_only_at_the_end():
    pipeline = LogProbPipeline([[7, 8, 9]])
    emissions = run(pipeline, [1], max_new_tokens=3, streaming=True).emissions
    assert [e.num_output_tokens for e in emissions] == sorted(
        e.num_output_tokens for e in emissions
    )
    assert emissions[-1].num_output_tokens == 3
    assert [e.finish_reasons[0] for e in emissions[:-1]] == [""] * (len(emissions) - 1)
    assert emissions[-1].finish_reasons == ["length"]


def test_ignore_eos_generates_past_the_end_id():
    pipeline = LogProbPipeline([[7, END_ID, 9]])
    [final] = run(pipeline, [1], max_new_tokens=3, ignore_eos=True).emissions
    assert final.ids == [[7, END_ID, 9]] and final.finish_reasons == ["length"]


def test_timing_is_ordered_on_the_engine_clock():
    pipeline = LogProbPipeline([[7, 8]])
    [final] = run(pipeline, [1], max_new_tokens=2).emissions
    t = final.timing
    assert 0 < t.arrival_ns <= t.first_scheduled_ns <= t.first_token_ns <= t.last_token_ns


def test_stop_request_ends_the_running_sequence_early():
    pipeline = LogProbPipeline([[7] * 30])
    sink = RecordingSink()
    with started(pipeline) as engine:
        pipeline.on_step = lambda step: engine.stop_request("r1") if step == 3 else None
        engine.submit(EngineRequest([1], SamplingParams(max_new_tokens=30), sink, request_id="r1"))
        sink.wait()
        assert sink.failures == []
        [final] = sink.emissions
    assert 0 < final.num_output_tokens < 30
    assert final.finish_reasons == ["stop"]
    assert pipeline.handles[0].stopped


def beam(ids, log_probs, score, reason="GenerationFinishReason.LENGTH"):
    return SimpleNamespace(
        generated_ids=ids, generated_log_probs=log_probs, score=score, finish_reason=reason
    )


def test_beams_are_ordered_best_first_without_end_ids_and_cut_at_stop_words():
    outputs = [
        beam([4, 5, END_ID], [-1.0, -1.0, -0.1], -2.1, "GenerationFinishReason.STOP"),
        beam([4, 6, 9, 9], [-0.5, -0.5, -0.2, -0.2], -1.4),
        beam([1, 1, 1], [-3.0, -3.0, -3.0], -9.0),
    ]

    def stop_match(ids):
        return 2 if list(ids[-2:]) == [9, 9] else 0

    beams = finished_beams(outputs, 2, END_ID, stop_match)
    assert [b.ids for b in beams] == [[4, 6], [4, 5]]
    assert [b.finish_reason for b in beams] == ["stop", "stop"]
    assert [b.log_probs for b in beams] == [[-0.5, -0.5], [-1.0, -1.0]]


def test_beam_search_config_uses_tensorrt_llm_defaults():
    config = configure(SimpleNamespace(), SamplingParams(max_new_tokens=4, beam_width=3), END_ID)
    assert (config.num_beams, config.num_return_sequences, config.length_penalty) == (3, 3, 0.0)
    assert config.stop_criteria == "EARLY"
    heuristic = SamplingParams(max_new_tokens=4, beam_width=2, early_stopping=False)
    assert configure(SimpleNamespace(), heuristic, END_ID).stop_criteria == "HEURISTIC"


def test_full_distribution_sampling_and_seeds_per_sample():
    params = SamplingParams(max_new_tokens=4, top_k=0, top_p=1.0, seed=10)
    first = configure(SimpleNamespace(), params, END_ID, seed_offset=0)
    second = configure(SimpleNamespace(), params, END_ID, seed_offset=1)
    assert first.do_sample and first.top_p == 1.0 and not hasattr(first, "top_k")
    assert (first.rng_seed, second.rng_seed) == (10, 11)
    unseeded = configure(SimpleNamespace(), SamplingParams(max_new_tokens=4, top_k=5), END_ID)
    assert unseeded.rng_seed == 0 and unseeded.top_p == 1.0  # TensorRT-LLM's defaults


def test_guides_map_to_structured_output():
    made = []

    def factory(**kwargs):
        made.append(kwargs)
        return kwargs

    for guide_type, guide in (("json", None), ("regex", "[a-z]"), ("ebnf_grammar", "root ::= x")):
        params = SamplingParams(max_new_tokens=4, guide_type=guide_type, guide=guide)
        configure(SimpleNamespace(), params, END_ID, structured_output_factory=factory)
    assert made == [{"json_schema": ANY_JSON_OBJECT}, {"regex": "[a-z]"}, {"grammar": "root ::= x"}]


def emission(**overrides) -> Emission:
    values = dict(
        ids=[[4, 5, 6], [4, 5]],
        log_probs=[[-0.1, -0.2, -0.3], [-0.4, -0.5]],
        cum_log_probs=[-0.6, -0.9],
        final=True,
        finish_reasons=["length", "stop"],
        num_input_tokens=7,
        num_output_tokens=3,
        timing=RequestTiming(1, 2, 3, 4),
        end_id=END_ID,
    )
    values.update(overrides)
    return Emission(**values)


def test_output_tensors_have_tensorrt_llm_shapes():
    names = [
        "output_ids",
        "sequence_length",
        "cum_log_probs",
        "output_log_probs",
        "num_input_tokens",
        "finish_reason",
        "kv_cache_reused_blocks",
        "first_token_time_ns",
    ]
    tensors = output_tensors(emission(), names)
    assert tensors["output_ids"].tolist() == [[[4, 5, 6], [4, 5, END_ID]]]
    assert tensors["sequence_length"].tolist() == [[3, 2]]
    assert tensors["cum_log_probs"].shape == (1, 2)
    assert tensors["output_log_probs"].shape == (1, 2, 3)
    assert tensors["num_input_tokens"].tolist() == [[7]]
    assert tensors["finish_reason"].tolist() == [[b"length", b"stop"]]
    assert tensors["kv_cache_reused_blocks"].tolist() == [[KV_BLOCKS_UNKNOWN]]
    assert tensors["first_token_time_ns"].dtype == np.int64
    assert set(output_tensors(emission(), ["output_ids"])) == {"output_ids"}


def test_fan_in_sends_the_final_flag_once_every_sequence_is_done():
    sent = []
    fan_in = FanIn(2, lambda t, final: sent.append(final), lambda m, k: None, lambda: False, [])
    first, second = fan_in.sink(), fan_in.sink()
    first.send(emission(final=False))
    first.send(emission())
    second.send(emission())
    assert sent == [False, False, True]


def test_fan_in_error_drops_the_rest_and_cancels_them():
    errors, sent = [], []
    fan_in = FanIn(
        2, lambda t, final: sent.append(final), lambda m, k: errors.append(m), lambda: False, []
    )
    first, second = fan_in.sink(), fan_in.sink()
    first.fail("queue full")
    second.send(emission())
    assert errors == ["queue full"] and sent == [] and second.cancelled()


def test_side_outputs_need_their_return_flag():
    requested = [
        "output_ids",
        "cum_log_probs",
        "num_input_tokens",
        "arrival_time_ns",
        "context_logits",
    ]
    assert outputs_to_send(requested, lambda flag: False) == {"output_ids"}
    enabled = outputs_to_send(requested, lambda flag: flag == "return_log_probs")
    assert enabled == {"output_ids", "cum_log_probs"}
    everything = outputs_to_send(requested, lambda flag: True)
    assert "context_logits" not in everything and "arrival_time_ns" in everything
