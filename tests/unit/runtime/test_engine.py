"""ContinuousBatchingEngine driven through its public API and thread, over a scripted pipeline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from edgectl.runtime.cancel_board import CancelBoard
from edgectl.runtime.contract import SamplingParams
from edgectl.runtime.detokenize import REPLACEMENT_CHAR, AnchoredDecoder, find_anchor_id
from edgectl.runtime.emission import Emission
from edgectl.runtime.engine import (
    INVALID,
    UNAVAILABLE,
    ContinuousBatchingEngine,
    EngineLimits,
    EngineRequest,
    EngineStats,
)

END_ID = 2
WAIT_S = 5.0
LIMITS = EngineLimits(max_input_len=8, max_output_len=32, cancel_check_steps=4)


# -- fakes ------------------------------------------------------------------------------------


class FakeHandle:
    """One request inside the fake pipeline: emits its script one token per step."""

    def __init__(self, script: list[int], config, honour_limits: bool) -> None:
        self.script = list(script)
        self.config = config
        self.honour_limits = honour_limits
        self.emitted = 0
        self.unread: list[int] = []
        self.cancelled = False
        self.stopped = False

    @property
    def running(self) -> bool:
        if self.cancelled or self.stopped or self.emitted >= len(self.script):
            return False
        if not self.honour_limits:
            return True
        ended = self.emitted > 0 and self.script[self.emitted - 1] in self.config.stop_token_ids
        return not ended and self.emitted < self.config.max_new_tokens

    def generate_one(self) -> None:
        self.unread.append(self.script[self.emitted])
        self.emitted += 1

    # the OpenVINO GenAI GenerationHandle surface the engine uses
    def can_read(self) -> bool:
        return bool(self.unread)

    def read(self) -> dict:
        ids, self.unread = self.unread, []
        return {0: SimpleNamespace(generated_ids=ids)}

    def get_status(self) -> str:
        return "GenerationStatus.RUNNING" if self.running else "GenerationStatus.FINISHED"

    def cancel(self) -> None:
        self.cancelled = True

    def stop(self) -> None:
        self.stopped = True


class FakePipeline:
    """Generates scripted tokens, one per step for every running request; logs each step."""

    def __init__(self, scripts: list[list[int]], honour_limits: bool = True) -> None:
        self.scripts = list(scripts)
        self.honour_limits = honour_limits
        self.handles: list[FakeHandle] = []
        self.prompts: list[list[int]] = []
        self.step_log: list[int] = []  # running requests in each step
        self.on_step: Callable[[int], None] = lambda step: None

    def add_request(self, request_id: int, tensor, config) -> FakeHandle:
        assert request_id == len(self.handles)
        handle = FakeHandle(self.scripts[request_id], config, self.honour_limits)
        self.handles.append(handle)
        self.prompts.append(tensor)
        return handle

    def step(self) -> None:
        running = [handle for handle in self.handles if handle.running]
        for handle in running:
            handle.generate_one()
        self.step_log.append(len(running))
        self.on_step(len(self.step_log))

    def has_non_finished_requests(self) -> bool:
        return any(handle.running for handle in self.handles)

    def get_metrics(self):
        scheduled = self.step_log[-1] if self.step_log else 0
        return SimpleNamespace(scheduled_requests=scheduled, cache_usage=0.25)


class RecordingSink:
    def __init__(self, cancelled: bool = False) -> None:
        self.responses: list[tuple[list[int], bool]] = []
        self.keys: set[int] = set()
        self.emissions: list[Emission] = []
        self.failures: list[str] = []
        self.kinds: list[str] = []
        self.is_cancelled = cancelled
        self.late: list[object] = []  # anything delivered after the request was finished
        self.done = threading.Event()

    def send(self, emission: Emission) -> None:
        self.keys.add(emission.key)
        self.emissions.append(emission)
        ids = emission.ids[0]
        if self.done.is_set():
            self.late.append(ids)
        self.responses.append((list(ids), emission.final))
        if emission.final:
            self.done.set()

    def fail(self, message: str, kind: str = INVALID) -> None:
        if self.done.is_set():
            self.late.append(message)
        self.failures.append(message)
        self.kinds.append(kind)
        self.done.set()

    def cancelled(self) -> bool:
        return self.is_cancelled

    def wait(self) -> RecordingSink:
        assert self.done.wait(WAIT_S), "the engine did not finish the request in time"
        assert self.late == []
        return self

    @property
    def ids(self) -> list[int]:
        return [i for ids, _final in self.responses for i in ids]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class LetterTokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(ord("a") + i % 26) for i in ids)


# -- helpers ----------------------------------------------------------------------------------


def make_engine(
    pipeline: FakePipeline,
    decoder: AnchoredDecoder | None = None,
    limits: EngineLimits = LIMITS,
    **kwargs,
) -> ContinuousBatchingEngine:
    return ContinuousBatchingEngine(
        pipeline,
        decoder or AnchoredDecoder(LetterTokenizer(), 0),
        limits,
        default_end_id=END_ID,
        generation_config_factory=SimpleNamespace,
        tensor_factory=lambda ids: ids,
        **kwargs,
    )


@pytest.fixture
def running():
    """Start engines and always shut them down."""
    engines = []

    def start(*args, **kwargs) -> ContinuousBatchingEngine:
        engine = make_engine(*args, **kwargs)
        engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.shutdown(timeout=WAIT_S)


def request(prompt=(10, 11), sink=None, **params) -> EngineRequest:
    params = {"max_new_tokens": 16, **params}
    return EngineRequest(list(prompt), SamplingParams(**params), sink or RecordingSink())


def run_one(start, script: list[int], **params) -> tuple[RecordingSink, FakePipeline]:
    pipeline = FakePipeline([script])
    engine = start(pipeline)
    req = request(**params)
    engine.submit(req)
    return req.sink.wait(), pipeline


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


# -- output -----------------------------------------------------------------------------------


def test_non_streaming_sends_one_final_response_with_all_ids(running):
    sink, _ = run_one(running, [20, 21, 22, 23])
    assert sink.responses == [([20, 21, 22, 23], True)]
    assert sink.failures == []


def test_non_streaming_prepends_prompt_when_input_not_excluded(running):
    sink, _ = run_one(running, [20, 21], exclude_input_in_output=False)
    assert sink.responses == [([10, 11, 20, 21], True)]


def test_streaming_concatenation_equals_non_streamed_output(running):
    script = [20, 21, 22, 23, 24, 25, END_ID]
    plain, _ = run_one(running, script)
    streamed, _ = run_one(running, script, streaming=True)
    assert len(streamed.responses) > 1
    assert streamed.ids == plain.ids == script[:-1]
    assert [final for _ids, final in streamed.responses] == [False] * (
        len(streamed.responses) - 1
    ) + [True]


def test_end_id_stops_generation_and_is_not_emitted(running):
    sink, pipeline = run_one(running, [20, 21, END_ID, 30, 31])
    assert sink.ids == [20, 21]
    assert pipeline.handles[0].emitted == 3


def test_request_end_id_overrides_the_default(running):
    sink, pipeline = run_one(running, [20, END_ID, 21, 7, 30], end_id=7)
    assert sink.ids == [20, END_ID, 21]
    assert pipeline.handles[0].config.eos_token_id == 7


@pytest.mark.parametrize("streaming", [False, True])
def test_multi_token_stop_word_stops_generation_and_is_not_emitted(running, streaming):
    script = [20, 7, 21, 7, 8, 9, 30, 31, 32]
    sink, pipeline = run_one(running, script, stop_words=[[7, 8, 9]], streaming=streaming)
    assert sink.ids == [20, 7, 21]
    assert sink.responses[-1][1] is True
    assert pipeline.handles[0].stopped
    assert pipeline.handles[0].emitted == 6


def test_streaming_holds_a_stop_word_prefix_until_it_is_resolved(running):
    script = [20, 7, 8, 21, 7, 8, 9, 30]
    sink, _ = run_one(running, script, stop_words=[[7, 8, 9]], streaming=True)
    # [7, 8] is held until 21 shows it is no stop word; the final [7, 8, 9] is never sent.
    assert sink.responses == [([20], False), ([7, 8, 21], False), ([], True)]


@pytest.mark.parametrize("honour_limits", [True, False])
def test_max_new_tokens_is_honoured_exactly(running, honour_limits):
    pipeline = FakePipeline([list(range(20, 40))], honour_limits=honour_limits)
    engine = running(pipeline)
    req = request(max_new_tokens=5)
    engine.submit(req)
    assert req.sink.wait().ids == [20, 21, 22, 23, 24]
    assert pipeline.handles[0].config.max_new_tokens == 5


def test_streamed_chunks_end_on_complete_characters(running, bpe):
    text = "ok 🦜 東京 déjà vu"
    script = bpe.encode(text)
    decoder = AnchoredDecoder(bpe, find_anchor_id(bpe.encode))
    assert END_ID not in script
    engine = running(FakePipeline([[*script, END_ID]]), decoder=decoder)
    req = request(streaming=True, max_new_tokens=32)
    engine.submit(req)
    pieces = [decoder.decode(ids) for ids, _final in req.sink.wait().responses]
    assert all(REPLACEMENT_CHAR not in piece for piece in pieces)
    assert "".join(pieces) == text


# -- generation config ------------------------------------------------------------------------


def test_greedy_request_does_not_enable_sampling(running):
    _, pipeline = run_one(running, [20], max_new_tokens=3, min_length=1)
    config = pipeline.handles[0].config
    assert (config.max_new_tokens, config.eos_token_id, config.stop_token_ids) == (3, 2, {2})
    assert config.min_new_tokens == 1
    assert not getattr(config, "do_sample", False)


def test_sampling_request_configures_the_sampler(running):
    _, pipeline = run_one(running, [20], temperature=0.7, top_k=40, top_p=0.9, seed=123)
    config = pipeline.handles[0].config
    assert config.do_sample is True
    assert (config.temperature, config.top_k, config.top_p, config.rng_seed) == (
        0.7,
        40,
        0.9,
        123,
    )


def test_prompt_reaches_the_pipeline_through_the_tensor_factory(running):
    _, pipeline = run_one(running, [20])
    assert pipeline.prompts == [[10, 11]]


# -- batching ---------------------------------------------------------------------------------


def test_request_submitted_mid_generation_joins_the_running_batch(running):
    pipeline = FakePipeline([list(range(20, 30)), list(range(40, 46))])
    engine = running(pipeline)
    first, second = request(max_new_tokens=10), request(max_new_tokens=6)
    in_step_3, resume = threading.Event(), threading.Event()

    def hold_step_3(step: int) -> None:
        if step == 3:
            in_step_3.set()
            resume.wait(WAIT_S)

    pipeline.on_step = hold_step_3
    engine.submit(first)
    assert in_step_3.wait(WAIT_S)
    engine.submit(second)  # from this thread, while the first request is mid-generation
    resume.set()
    assert first.sink.wait().ids == list(range(20, 30))
    assert second.sink.wait().ids == list(range(40, 46))

    assert pipeline.step_log[:3] == [1, 1, 1]
    assert pipeline.step_log.count(2) == 6  # the second request ran beside the first
    stats = engine.stats
    assert stats.peak_scheduled == 2
    assert stats.steps == len(pipeline.step_log)
    assert stats.scheduled_sequences == sum(pipeline.step_log) == 16
    assert (stats.requests_added, stats.requests_finished) == (2, 2)


def test_requests_submitted_together_share_every_step():
    pipeline = FakePipeline([[20, 21, 22], [30, 31, 32], [40, 41, 42]])
    engine = make_engine(pipeline)
    requests = [request(max_new_tokens=3) for _ in range(3)]
    for req in requests:
        engine.submit(req)
    engine.start()
    try:
        assert [req.sink.wait().ids for req in requests] == pipeline.scripts
    finally:
        engine.shutdown(timeout=WAIT_S)
    assert pipeline.step_log == [3, 3, 3]


# -- cancellation, limits, errors -------------------------------------------------------------


def test_cancelled_client_gets_its_request_cancelled(running):
    pipeline = FakePipeline([list(range(20, 50))])
    engine = running(pipeline)
    req = request(max_new_tokens=30, sink=RecordingSink(cancelled=True))
    engine.submit(req)
    req.sink.wait()
    assert pipeline.handles[0].cancelled
    assert pipeline.handles[0].emitted == LIMITS.cancel_check_steps
    assert req.sink.failures == ["request cancelled by the client"]
    assert req.sink.responses == []
    wait_until(lambda: engine.stats.active == 0)
    assert engine.stats.requests_cancelled == 1
    assert engine.stats.requests_finished == 0


@pytest.mark.parametrize(
    ("prompt", "params", "fragment"),
    [
        ([], {}, "input_ids"),
        (list(range(9)), {}, "max_input_len=8"),
        ([10], {"max_new_tokens": 0}, "max_output_len"),
        ([10], {"max_new_tokens": 33}, "max_output_len"),
        ([10], {"top_p": 2.0}, "top_p"),
    ],
)
def test_invalid_request_fails_and_engine_keeps_serving(running, prompt, params, fragment):
    pipeline = FakePipeline([[20, 21]])
    engine = running(pipeline)
    bad = request(prompt=prompt, **{"max_new_tokens": 4, **params})
    good = request(max_new_tokens=4)
    engine.submit(bad)
    engine.submit(good)
    assert len(bad.sink.wait().failures) == 1
    assert fragment in bad.sink.failures[0]
    assert bad.sink.responses == []
    assert good.sink.wait().responses == [([20, 21], True)]
    assert len(pipeline.handles) == 1
    assert engine.stats.requests_failed == 1


def test_request_over_max_request_seconds_is_aborted(running):
    clock = FakeClock()
    pipeline = FakePipeline([list(range(20, 50))])

    def tick(step: int) -> None:
        clock.now += 1.0

    pipeline.on_step = tick
    limits = EngineLimits(max_input_len=8, max_output_len=32, max_request_seconds=3.5)
    engine = running(pipeline, limits=limits, clock=clock)
    req = request(max_new_tokens=30, streaming=True)
    engine.submit(req)
    req.sink.wait()
    assert req.sink.failures == ["request exceeded max_request_seconds=3.5"]
    assert pipeline.handles[0].cancelled
    assert pipeline.handles[0].emitted == 4
    assert all(final is False for _ids, final in req.sink.responses)


def test_submit_after_shutdown_fails_at_once():
    engine = make_engine(FakePipeline([]))
    engine.start()
    engine.shutdown(timeout=WAIT_S)
    req = request()
    engine.submit(req)
    assert req.sink.done.is_set()
    assert req.sink.failures == ["the engine is shutting down"]


def test_shutdown_fails_requests_in_flight():
    pipeline = FakePipeline([list(range(20, 50))])
    engine = make_engine(pipeline)
    req = request(max_new_tokens=30)
    in_step, release = threading.Event(), threading.Event()

    def pause(step: int) -> None:
        in_step.set()
        release.wait(WAIT_S)

    pipeline.on_step = pause
    engine.start()
    engine.submit(req)
    assert in_step.wait(WAIT_S)
    stopper = threading.Thread(target=engine.shutdown, kwargs={"timeout": WAIT_S})
    stopper.start()
    wait_until(engine._stopping.is_set)  # shutdown() has begun; let the step finish
    release.set()
    stopper.join(WAIT_S)
    assert req.sink.wait().failures == ["the engine is shutting down"]
    assert pipeline.handles[0].cancelled
    assert req.sink.responses == []


def test_each_request_has_one_key_on_all_its_responses(running):
    pipeline = FakePipeline([[20, 21, 22, 23], [30, 31, 32, 33]])
    engine = running(pipeline)
    first, second = request(streaming=True), request(streaming=True)
    engine.submit(first)
    engine.submit(second)
    first.sink.wait()
    second.sink.wait()
    assert len(first.sink.responses) > 1
    assert len(first.sink.keys) == len(second.sink.keys) == 1
    assert first.sink.keys != second.sink.keys


def test_cancellation_posted_on_the_board_cancels_that_request_only(running, tmp_path):
    board = CancelBoard(tmp_path / "cancel")
    pipeline = FakePipeline([list(range(20, 50)), list(range(60, 70))])
    engine = running(pipeline, cancel_board=board)
    doomed, other = request(max_new_tokens=30, streaming=True), request(max_new_tokens=10)
    # Postprocessing posts the key it saw on a streamed response (here: after step 2).
    pipeline.on_step = lambda step: board.post(*doomed.sink.keys) if step == 2 else None
    engine.submit(doomed)
    engine.submit(other)
    assert doomed.sink.wait().failures == ["request cancelled by the client"]
    assert other.sink.wait().responses == [(list(range(60, 70)), True)]
    assert pipeline.handles[0].cancelled
    assert pipeline.handles[0].emitted == LIMITS.cancel_check_steps
    assert not pipeline.handles[1].cancelled
    wait_until(lambda: engine.stats.active == 0)
    assert engine.stats.requests_cancelled == 1
    assert list(board.directory.iterdir()) == []  # the post was consumed


class RefusingPipeline(FakePipeline):
    """A pipeline whose add_request fails for one request (e.g. an OpenVINO error)."""

    def __init__(self, scripts: list[list[int]], refuse: int) -> None:
        super().__init__(scripts)
        self.refuse = refuse
        self.calls = 0

    def add_request(self, request_id: int, tensor, config) -> FakeHandle:
        self.calls += 1
        if self.calls == self.refuse:
            raise RuntimeError("cannot allocate the KV cache")
        return super().add_request(request_id, tensor, config)


def test_a_request_the_pipeline_cannot_add_is_failed_not_dropped(running):
    engine = running(RefusingPipeline([[20, 21]], refuse=1))
    refused, served_next = request(max_new_tokens=2), request(max_new_tokens=2)
    engine.submit(refused)
    engine.submit(served_next)
    assert served_next.sink.wait().responses == [([20, 21], True)]
    # the refused request was handled before the next one was added
    assert refused.sink.done.is_set()
    assert refused.sink.failures


def test_request_aborted_at_the_deadline_counts_as_failed(running):
    clock = FakeClock()
    pipeline = FakePipeline([list(range(20, 50))])
    pipeline.on_step = lambda step: setattr(clock, "now", clock.now + 1.0)
    limits = EngineLimits(max_input_len=8, max_output_len=32, max_request_seconds=2.5)
    engine = running(pipeline, limits=limits, clock=clock)
    req = request(max_new_tokens=30)
    engine.submit(req)
    assert req.sink.wait().failures
    wait_until(lambda: engine.stats.active == 0 and engine.stats.steps >= 3)
    stats = engine.stats
    assert stats.requests_added == (
        stats.requests_finished + stats.requests_cancelled + stats.requests_failed
    )


class ExplodingSink(RecordingSink):
    """A client whose response sender raises (e.g. the sender was closed)."""

    def send(self, ids: list[int], final: bool, key: int) -> None:
        raise RuntimeError("Unable to send response. Response sender has been closed.")


def test_a_sink_that_raises_does_not_fail_the_other_requests(running):
    pipeline = FakePipeline([list(range(20, 30)), list(range(40, 50))])
    engine = running(pipeline)
    broken = request(max_new_tokens=10, streaming=True, sink=ExplodingSink())
    healthy = request(max_new_tokens=10)
    engine.submit(broken)
    engine.submit(healthy)
    assert healthy.sink.wait().failures == []
    assert healthy.sink.responses == [(list(range(40, 50)), True)]


# -- stats ------------------------------------------------------------------------------------


def test_stats_hook_reports_progress(running):
    snapshots: list[dict[str, float]] = []

    def hook(stats: EngineStats) -> None:
        snapshots.append(stats.as_dict())

    pipeline = FakePipeline([[20, 21, 22]])
    engine = running(pipeline, stats_hook=hook)
    req = request(max_new_tokens=3)
    engine.submit(req)
    req.sink.wait()
    wait_until(lambda: any(s["requests_finished"] == 1 for s in snapshots))
    last = snapshots[-1]
    assert last["requests_added"] == 1
    assert last["steps"] == 3
    assert last["active"] == 0
    assert last["kv_cache_usage"] == 0.25


# -- overload ---------------------------------------------------------------------------------


def test_running_batch_is_capped_and_the_rest_wait_their_turn(running):
    limits = EngineLimits(max_input_len=8, max_output_len=32, max_num_seqs=2, max_queue_size=8)
    pipeline = FakePipeline([list(range(20, 26))] * 5)
    engine = running(pipeline, limits=limits)
    requests = [request(max_new_tokens=6) for _ in range(5)]
    for req in requests:
        engine.submit(req)
    for req in requests:
        assert req.sink.wait().responses == [(list(range(20, 26)), True)]
    assert max(pipeline.step_log) == 2
    assert engine.stats.peak_scheduled <= 2


def test_a_full_queue_refuses_at_once_with_unavailable(running):
    limits = EngineLimits(max_input_len=8, max_output_len=64, max_num_seqs=1, max_queue_size=2)
    gate = threading.Event()
    pipeline = FakePipeline([list(range(20, 80))] * 4)
    pipeline.on_step = lambda step: gate.wait(WAIT_S)  # hold the engine until all are queued
    engine = running(pipeline, limits=limits)
    requests = [request(max_new_tokens=60) for _ in range(4)]
    for req in requests:
        engine.submit(req)
    # one in the batch (or about to be), at most two waiting: the fourth is refused now
    refused = [req for req in requests if req.sink.done.is_set()]
    assert refused, "the over-limit request was not refused at submit time"
    assert all(req.sink.kinds == [UNAVAILABLE] for req in refused)
    assert "max_queue_size=2" in refused[0].sink.failures[0]
    gate.set()
    served = [req for req in requests if req not in refused]
    for req in served:
        assert req.sink.wait().responses[-1][1] is True
    wait_until(lambda: engine.stats.requests_rejected == len(refused))


def test_a_request_waiting_past_the_queue_timeout_is_refused(running):
    clock = FakeClock()
    limits = EngineLimits(
        max_input_len=8, max_output_len=64, max_num_seqs=1, max_queue_size=4, queue_timeout_s=2.5
    )
    pipeline = FakePipeline([list(range(20, 60)), [30, 31]])

    def slow_step(step: int) -> None:  # one fake second a step, slow enough to submit mid-run
        clock.now += 1.0
        time.sleep(0.005)

    pipeline.on_step = slow_step
    engine = running(pipeline, limits=limits, clock=clock)
    long, late = request(max_new_tokens=40), request(max_new_tokens=2)
    engine.submit(long)
    wait_until(lambda: engine.stats.steps >= 1)
    engine.submit(late)
    assert late.sink.wait().kinds == [UNAVAILABLE]
    assert "queue_timeout_s=2.5" in late.sink.failures[0]
    assert long.sink.wait().responses[-1][1] is True
    wait_until(lambda: engine.stats.requests_rejected == 1)


def test_invalid_requests_are_refused_as_invalid_argument(running):
    sink, _ = run_one(running, [20, 21], max_new_tokens=0)
    assert sink.kinds == [INVALID]


def test_prompt_ids_outside_the_vocabulary_are_refused(running):
    limits = EngineLimits(max_input_len=8, max_output_len=32, vocab_size=30)
    engine = running(FakePipeline([[20, 21]]), limits=limits)
    bad, good = request(prompt=(10, 40)), request(prompt=(10, 11), max_new_tokens=2)
    engine.submit(bad)
    engine.submit(good)
    assert bad.sink.wait().failures == ["input_ids must be in [0, 30) (vocab_size), got 40"]
    assert good.sink.wait().responses == [([20, 21], True)]
