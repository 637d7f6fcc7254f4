"""Coalescing and the response cache, on the engine loop over the scripted pipeline."""

from __future__ import annotations

import threading

from edgectl.runtime.cancel_board import CancelBoard
from edgectl.runtime.coalesce import Coalescer, request_key
from tests.unit.runtime.test_engine import (
    LIMITS,
    ExplodingSink,
    FakeClock,
    FakePipeline,
    request,
    wait_until,
)
from tests.unit.runtime.test_engine import running as running  # noqa: F401 - fixture

SCRIPT = list(range(20, 36))


def test_identical_requests_share_one_sequence_and_each_gets_the_full_stream(running):
    pipeline = FakePipeline([SCRIPT])
    gate = threading.Event()
    pipeline.on_step = lambda step: gate.wait(5)  # hold the first step until all joined
    engine = running(pipeline)
    coalescer = Coalescer(engine.submit)
    clients = [request(streaming=True, max_new_tokens=12) for _ in range(3)]
    for client in clients:
        coalescer.submit(client)
    gate.set()
    for client in clients:
        assert client.sink.wait().ids == SCRIPT[:12]
        assert client.sink.responses[-1][1] is True
    assert len(pipeline.handles) == 1
    assert coalescer.stats.coalesced_requests == 2
    assert len({key for c in clients for key in c.sink.keys}) == 3  # a private key each


def test_a_late_joiner_gets_what_was_already_sent_then_the_rest(running):
    pipeline = FakePipeline([SCRIPT])
    engine = running(pipeline)
    coalescer = Coalescer(engine.submit)
    first, late = request(streaming=True), request(streaming=True)
    joined = threading.Event()
    pipeline.on_step = lambda step: (coalescer.submit(late), joined.set()) if step == 5 else None
    coalescer.submit(first)
    assert first.sink.wait().ids == late.sink.wait().ids == SCRIPT
    assert joined.is_set() and len(pipeline.handles) == 1


def test_requests_that_could_differ_are_never_merged(running):
    greedy = request()
    assert request_key(request(temperature=0.8, top_p=0.9)) is None  # sampled without a seed
    assert request_key(request(temperature=0.8, top_p=0.9, seed=3)) is not None
    assert request_key(request(temperature=0.8, top_p=0.9, seed=3)) != request_key(
        request(temperature=0.8, top_p=0.9, seed=4)
    )
    for different in (
        request(max_new_tokens=8),
        request(prompt=(10, 12)),
        request(stop_words=[[7]]),
        request(streaming=True),
        request(end_id=5),
    ):
        assert request_key(different) != request_key(greedy)


def test_one_client_cancelling_leaves_the_others_streaming(running, tmp_path):
    board = CancelBoard(tmp_path / "cancel")
    pipeline = FakePipeline([SCRIPT])
    engine = running(pipeline, cancel_board=board)
    coalescer = Coalescer(engine.submit)
    leaving, staying = request(streaming=True), request(streaming=True)
    pipeline.on_step = lambda step: board.post(*leaving.sink.keys) if step == 3 else None
    coalescer.submit(leaving)
    coalescer.submit(staying)
    assert staying.sink.wait().ids == SCRIPT
    assert not pipeline.handles[0].cancelled
    assert len(leaving.sink.ids) < len(SCRIPT)  # it stopped receiving once it left


def test_the_sequence_stops_when_every_client_left(running, tmp_path):
    board = CancelBoard(tmp_path / "cancel")
    pipeline = FakePipeline([SCRIPT + SCRIPT])
    engine = running(pipeline, cancel_board=board)
    coalescer = Coalescer(engine.submit)
    a, b = request(streaming=True, max_new_tokens=32), request(streaming=True, max_new_tokens=32)
    pipeline.on_step = lambda step: board.post(*a.sink.keys, *b.sink.keys) if step == 3 else None
    coalescer.submit(a)
    coalescer.submit(b)
    wait_until(lambda: pipeline.handles and pipeline.handles[0].cancelled)
    assert pipeline.handles[0].emitted <= 3 + LIMITS.cancel_check_steps


def test_response_cache_answers_repeats_until_the_ttl(running):
    clock = FakeClock()
    pipeline = FakePipeline([SCRIPT, SCRIPT])
    engine = running(pipeline)
    coalescer = Coalescer(engine.submit, cache_size=4, cache_ttl_s=30, clock=clock)
    first = request(max_new_tokens=6)
    coalescer.submit(first)
    first.sink.wait()
    wait_until(lambda: coalescer.stats.response_cache_entries == 1)
    repeat = request(max_new_tokens=6)
    coalescer.submit(repeat)
    assert repeat.sink.wait().responses == first.sink.responses
    assert coalescer.stats.response_cache_hits == 1 and len(pipeline.handles) == 1
    clock.now += 31  # expired: the engine runs it again
    again = request(max_new_tokens=6)
    coalescer.submit(again)
    assert again.sink.wait().ids == SCRIPT[:6]
    assert len(pipeline.handles) == 2


def test_sampled_requests_are_not_cached_even_with_a_seed(running):
    pipeline = FakePipeline([SCRIPT, SCRIPT])
    engine = running(pipeline)
    coalescer = Coalescer(engine.submit, cache_size=4)
    for _ in range(2):
        coalescer.submit(sampled := request(max_new_tokens=4, temperature=0.7, top_p=0.9, seed=1))
        sampled.sink.wait()
    assert coalescer.stats.response_cache_hits == 0 and len(pipeline.handles) == 2


def test_every_field_that_changes_the_output_separates_requests():
    greedy = request()
    for different in (
        request(beam_width=2),
        request(num_return_sequences=2, top_p=0.9, seed=1),
        request(return_log_probs=True),
        request(ignore_eos=True),
        request(guide_type="json"),
        request(guide_type="regex", guide="[a-z]+"),
        request(exclude_input_in_output=False),
        request(min_length=3),
    ):
        assert request_key(different) != request_key(greedy)
    second = request()
    second.sequence_index = 1  # the n-th sample: its seed is offset by its index
    assert request_key(second) != request_key(greedy)
    named = request()
    named.request_id = "a"  # a later stop request names it
    assert request_key(named) != request_key(greedy)
    timed = request()
    timed.shareable = False  # asks for its own timings (return_perf_metrics)
    assert request_key(timed) is None


def test_each_client_gets_its_own_batch_index(running):
    pipeline = FakePipeline([SCRIPT])
    gate = threading.Event()
    pipeline.on_step = lambda step: gate.wait(5)
    engine = running(pipeline)
    coalescer = Coalescer(engine.submit)
    first, second = request(max_new_tokens=4), request(max_new_tokens=4)
    second.batch_index = 3  # the fourth row of a batched request
    coalescer.submit(first)
    coalescer.submit(second)
    gate.set()
    assert first.sink.wait().ids == second.sink.wait().ids == SCRIPT[:4]
    assert len(pipeline.handles) == 1
    assert {e.batch_index for e in first.sink.emissions} == {0}
    assert {e.batch_index for e in second.sink.emissions} == {3}


def test_an_answer_cut_short_by_a_stop_request_is_not_cached(running):
    pipeline = FakePipeline([SCRIPT, SCRIPT])
    engine = running(pipeline)
    coalescer = Coalescer(engine.submit, cache_size=4)
    stopped = request(max_new_tokens=12)
    stopped.request_id = "r1"

    def stop(step):
        if step == 2:
            coalescer.stopping("r1")
            engine.stop_request("r1")

    pipeline.on_step = stop
    coalescer.submit(stopped)
    assert len(stopped.sink.wait().ids) < 12
    pipeline.on_step = lambda step: None
    again = request(max_new_tokens=12)
    coalescer.submit(again)
    assert again.sink.wait().ids == SCRIPT[:12]
    assert coalescer.stats.response_cache_hits == 0 and len(pipeline.handles) == 2


def test_a_sequence_every_client_left_is_not_joined_again(running):
    pipeline = FakePipeline([SCRIPT, SCRIPT])
    engine = running(pipeline)
    coalescer = Coalescer(engine.submit)
    broken = request(streaming=True, sink=ExplodingSink())
    coalescer.submit(broken)
    wait_until(lambda: pipeline.handles and pipeline.handles[0].cancelled)
    later = request(streaming=True)
    coalescer.submit(later)
    assert later.sink.wait().ids == SCRIPT
    assert len(pipeline.handles) == 2
