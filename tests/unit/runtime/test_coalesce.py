"""Coalescing and the response cache, on the engine loop over the scripted pipeline."""

from __future__ import annotations

import threading

from edgectl.runtime.cancel_board import CancelBoard
from edgectl.runtime.coalesce import Coalescer, request_key
from tests.unit.runtime.test_engine import (
    LIMITS,
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
    assert request_key(request(temperature=0.8)) is None  # sampled without a seed
    assert request_key(request(temperature=0.8, seed=3)) is not None
    assert request_key(request(temperature=0.8, seed=3)) != request_key(
        request(temperature=0.8, seed=4)
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
        coalescer.submit(sampled := request(max_new_tokens=4, temperature=0.7, seed=1))
        sampled.sink.wait()
    assert coalescer.stats.response_cache_hits == 0 and len(pipeline.handles) == 2
