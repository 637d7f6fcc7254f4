"""Swap mode's front without Triton: dispatch, timeouts, election, stopping, draining,
metric values, and unloading through model control, with fake clocks and callables."""

from __future__ import annotations

import fcntl
import logging
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from edgectl.runtime.metrics import SWAP_COUNTERS, SWAP_GAUGES
from edgectl.runtime.processes import Stub
from edgectl.runtime.swap import (
    DRAINING,
    IN,
    LOADING,
    OUT,
    Board,
    Demand,
    SwapModel,
    SwapPlan,
)
from edgectl.runtime.swap_front import (
    ELECT_S,
    METRICS_EVERY_S,
    TICK_S,
    UNLOAD_POLL_S,
    UNLOAD_TIMEOUT_S,
    ModelControlOps,
    SwapFront,
)

WALL = 1_000_000.0


def plan() -> SwapPlan:
    return SwapPlan(
        policy="p",
        memory_budget_gb=1.5,
        wait_timeout_s=5.0,
        min_resident_s=2.0,
        models=[
            SwapModel("a", "a_backing", ["a_backing", "a_engine"], 1.0, 50, 1),
            SwapModel("b", "b_backing", ["b_backing", "b_engine"], 1.0, 50, 1),
        ],
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL + self.now


class InlineExecutor(Executor):
    """Runs each forwarded request at once, so a test sees it finished after the tick."""

    def __init__(self) -> None:
        self.shut_down = False

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.shut_down = True


@dataclass
class FakeOps:
    """The scheduler's Triton operations: a set of ready backing models."""

    ready: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    def is_ready(self, model: SwapModel) -> bool:
        return model.name in self.ready

    def load(self, model: SwapModel) -> None:
        self.calls.append(f"load {model.name}")
        self.ready.add(model.name)

    def unload(self, model: SwapModel) -> int:
        self.calls.append(f"unload {model.name}")
        self.ready.discard(model.name)
        return 0

    def rss(self) -> int:
        return 0


class FakeStop:
    """threading.Event for the loops: each wait runs ``on_wait(n)``; set() ends the loop."""

    def __init__(self, on_wait=lambda n: None) -> None:
        self.waits: list[float | None] = []
        self.on_wait = on_wait
        self.flag = False

    def is_set(self) -> bool:
        return self.flag

    def set(self) -> None:
        self.flag = True

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        self.on_wait(len(self.waits))
        return self.flag


@dataclass
class Harness:
    front: SwapFront
    board: Board
    clock: Clock
    ops: FakeOps
    forwarded: list[Any]
    refused: list[tuple[Any, str]]
    published: list[dict[str, float]]

    def schedule(self, **phases: str | dict[str, Any]) -> None:
        """Write schedule.json as the scheduler would, one entry per model."""
        models = {}
        for name, phase in phases.items():
            entry = {"phase": phase} if isinstance(phase, str) else phase
            models[name] = {"epoch": 1, "since": 0.0, **entry}
        self.board.write_schedule({"models": models, "events": []})


def make_front(tmp_path: Path, name: str = "a", forward=None) -> Harness:
    board = Board(tmp_path)
    clock = Clock()
    ops = FakeOps()
    forwarded: list[Any] = []
    refused: list[tuple[Any, str]] = []
    published: list[dict[str, float]] = []
    front = SwapFront(
        name,
        board,
        plan(),
        forward=forward or forwarded.append,
        refuse=lambda item, message: refused.append((item, message)),
        publish=published.append,
        ops=ops,
        clock=clock,
        wall=clock.wall,
        executor=InlineExecutor(),
    )
    return Harness(front, board, clock, ops, forwarded, refused, published)


def lock_held_elsewhere(board: Board):
    """Another front (another open file description) holding the scheduler lock."""
    handle = open(board.lock_path, "a+")  # noqa: SIM115 - closed by the test
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def lock_is_free(board: Board) -> bool:
    with open(board.lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True


# -- dispatch -------------------------------------------------------------------------
def test_a_queued_request_is_forwarded_once_the_schedule_says_in(tmp_path):
    h = make_front(tmp_path)
    h.schedule(a=OUT, b=IN)
    h.front.submit("req")
    h.clock.now = 1.0
    h.front.dispatch_tick()
    assert h.forwarded == []
    assert h.board.demand("a").queued == 1  # the scheduler sees the demand

    h.schedule(a=IN, b=OUT)
    h.clock.now = 2.0
    h.front.dispatch_tick()
    h.front.dispatch_tick()
    assert h.forwarded == ["req"]  # once, not again on the next tick
    assert h.refused == []
    demand = h.board.demand("a")
    assert (demand.queued, demand.forwarded, demand.in_flight, demand.completed) == (0, 1, 0, 1)
    assert (demand.waited, demand.wait_s_total) == (1, 2.0)
    assert demand.updated_at == WALL + 2.0


def test_a_request_stays_in_flight_until_forward_returns(tmp_path):
    seen: list[Demand] = []
    h = make_front(tmp_path, forward=lambda item: seen.append(h.board.demand("a")))
    h.schedule(a=IN)
    h.front.submit("req")
    h.front.dispatch_tick()
    assert seen[0].in_flight == 1  # written before the forward ran
    assert h.front.gate.demand.in_flight == 0


def test_a_forward_that_raises_still_counts_the_request_finished(tmp_path, caplog):
    def forward(item: Any) -> None:
        raise RuntimeError("bls broke")

    h = make_front(tmp_path, forward=forward)
    h.schedule(a=IN)
    h.front.submit("req")
    with caplog.at_level(logging.ERROR):
        h.front.dispatch_tick()
    assert (h.front.gate.demand.in_flight, h.front.gate.demand.completed) == (0, 1)
    assert "forward failed" in caplog.text


def test_requests_of_one_batch_share_their_arrival_time(tmp_path):
    h = make_front(tmp_path)
    h.schedule(a=OUT)
    h.front.submit("first", now=0.0)
    h.front.submit("second", now=0.0)
    h.clock.now = 5.0
    h.front.dispatch_tick()
    assert [item for item, _ in h.refused] == ["first", "second"]


# -- timeouts -------------------------------------------------------------------------
def test_a_request_that_waits_past_the_timeout_is_refused_naming_who_holds_the_budget(
    tmp_path,
):
    h = make_front(tmp_path)
    h.schedule(a=OUT, b=IN)
    h.front.submit("req")
    h.clock.now = 4.9
    h.front.dispatch_tick()
    assert h.refused == []

    h.clock.now = 6.04
    h.front.dispatch_tick()
    assert h.refused == [
        (
            "req",
            "model a is swapped out: waited 6.0s (swap.wait_timeout_s=5) for it to be "
            "swapped in; b holds the memory budget (1.5 GB); retry later",
        )
    ]
    assert h.forwarded == []
    assert h.board.demand("a").timeouts == 1
    assert h.board.demand("a").queued == 0


def test_the_timeout_message_shows_phases_and_the_last_failed_swap_in(tmp_path):
    h = make_front(tmp_path)
    schedule = {
        "models": {
            "a": {"phase": OUT, "last_error": "out of memory"},
            "b": {"phase": DRAINING},
            "c": {"phase": LOADING},
        }
    }
    assert h.front.timeout_message(schedule, 7.25) == (
        "model a is swapped out: waited 7.2s (swap.wait_timeout_s=5) for it to be swapped "
        "in; b (draining), c (loading) holds the memory budget (1.5 GB); its last swap-in "
        "failed: out of memory; retry later"
    )


def test_the_timeout_message_says_no_model_when_nothing_is_resident(tmp_path):
    h = make_front(tmp_path)
    message = h.front.timeout_message({"models": {"a": {"phase": OUT}}}, 5.0)
    assert "; no model holds the memory budget (1.5 GB); retry later" in message
    assert "last swap-in" not in message
    assert "no model holds" in h.front.timeout_message({}, 5.0)


# -- metrics --------------------------------------------------------------------------
def test_metric_values_come_from_the_schedule_and_the_demand(tmp_path):
    h = make_front(tmp_path)
    schedule = {
        "models": {},
        "events": [
            {"model": "a", "kind": "in", "seconds": 2.5},
            {"model": "b", "kind": "in", "seconds": 9.0},
            {"model": "a", "kind": "in", "seconds": 1.5},
            {"model": "a", "kind": "in", "seconds": 8.0, "error": "failed"},
            {"model": "a", "kind": "out", "seconds": 0.7},
        ],
    }
    entry = {"phase": IN, "swap_ins": 2, "swap_outs": 1, "load_s_total": 4.0}
    demand = Demand(queued=3, in_flight=2, requests=9, waited=4, wait_s_total=6.5, timeouts=1)
    values = h.front.metric_values(schedule, entry, demand)
    assert values == {
        "requests": 9,
        "ins": 2,
        "outs": 1,
        "load_seconds": 4.0,
        "waited_requests": 4,
        "wait_seconds": 6.5,
        "wait_timeouts": 1,
        "resident": 1.0,
        "queue_depth": 3,
        "in_flight": 2,
        "last_load_seconds": 1.5,  # the latest successful swap-in of this model
    }
    assert set(values) == set(SWAP_COUNTERS) | set(SWAP_GAUGES)


def test_metric_values_of_a_model_the_schedule_does_not_know_yet(tmp_path):
    h = make_front(tmp_path)
    values = h.front.metric_values({}, {}, Demand())
    assert values["resident"] == 0.0
    assert values["last_load_seconds"] == 0.0
    assert (values["ins"], values["outs"], values["load_seconds"]) == (0, 0, 0.0)


def test_dispatch_publishes_metrics_at_most_every_half_second(tmp_path):
    h = make_front(tmp_path)
    h.schedule(a={"phase": IN, "swap_ins": 1})
    for now in (0.0, 0.2, 0.45, METRICS_EVERY_S, 0.8, 1.05):
        h.clock.now = now
        h.front.dispatch_tick()
    assert len(h.published) == 3  # at 0.0, 0.5 and 1.05
    assert h.published[-1]["ins"] == 1
    assert h.published[-1]["resident"] == 1.0


def test_the_dispatch_loop_ticks_every_tick_s_and_survives_a_failing_tick(tmp_path, caplog):
    h = make_front(tmp_path)
    h.schedule(a=IN)
    stop = FakeStop()
    h.board.schedule = lambda: 1 / 0  # the first tick fails
    h.front.submit("req")

    def on_wait(n: int) -> None:
        if n == 2:
            del h.board.schedule  # the board is readable again
        if n == 3:
            stop.set()

    stop.on_wait = on_wait
    with caplog.at_level(logging.ERROR):
        h.front.dispatch_loop(stop)
    assert stop.waits == [TICK_S] * 3
    assert "dispatch tick failed" in caplog.text
    assert h.forwarded == ["req"]


# -- election and the scheduler -----------------------------------------------------------
def test_a_front_without_the_lock_does_not_schedule_and_takes_over_once_released(tmp_path):
    h = make_front(tmp_path)
    h.ops.ready = {"b"}  # what Triton has loaded when this front takes over
    other = lock_held_elsewhere(h.board)
    stop = FakeStop()
    elected_at: list[int] = []

    def on_wait(n: int) -> None:
        if n <= 2:
            assert h.front.scheduler is None
            assert not (tmp_path / "schedule.json").exists()  # nothing scheduled
        if n == 2:
            other.close()  # the other front's stub exited
        if h.front.scheduler is not None and not elected_at:
            elected_at.append(n)
        if n == 4:
            stop.set()

    stop.on_wait = on_wait
    h.front.schedule_loop(stop)
    assert stop.waits == [ELECT_S, ELECT_S, TICK_S, TICK_S]
    assert elected_at == [3]
    schedule = h.board.schedule()
    assert {name: m["phase"] for name, m in schedule["models"].items()} == {"a": OUT, "b": IN}
    assert not lock_is_free(h.board)  # held until the front closes
    h.front.close()
    assert lock_is_free(h.board)


def test_the_elected_front_schedules_a_queued_request_in_and_forwards_it(tmp_path):
    h = make_front(tmp_path)
    h.front.submit("req")
    h.front.dispatch_tick()  # reports the demand
    stop = FakeStop(on_wait=lambda n: stop.set())
    h.front.schedule_loop(stop)  # elect, recover, one tick
    assert h.ops.calls == ["load a"]
    assert h.board.schedule()["models"]["a"]["phase"] == IN
    h.clock.now = 0.1
    h.front.dispatch_tick()
    assert h.forwarded == ["req"]
    h.front.close()


def test_try_elect_fails_while_another_handle_holds_the_lock(tmp_path):
    h = make_front(tmp_path)
    other = lock_held_elsewhere(h.board)
    assert h.front.try_elect() is None
    assert h.front.lock_file is None
    other.close()
    assert h.front.try_elect() is not None
    assert h.front.lock_file is not None
    h.front.close()


def test_the_stopping_flag_stops_scheduling_before_election(tmp_path):
    h = make_front(tmp_path)
    h.board.set_stopping()
    stop = FakeStop()
    h.front.schedule_loop(stop)
    assert stop.waits == []
    assert h.front.scheduler is None
    assert lock_is_free(h.board)  # nobody takes over while swap mode is turned off


def test_a_stopping_flag_set_during_election_is_seen_before_the_first_tick(tmp_path):
    h = make_front(tmp_path)
    h.front.submit("req")
    h.front.dispatch_tick()  # a request waits: a tick would swap it in
    elect = h.front.try_elect

    def elect_then_stop():
        scheduler = elect()
        h.board.set_stopping()  # edgectl turns swap mode off meanwhile
        return scheduler

    h.front.try_elect = elect_then_stop
    stop = FakeStop()
    h.front.schedule_loop(stop)
    assert stop.waits == []
    assert h.board.schedule()["stopped"] is True
    assert h.ops.calls == []  # nothing was loaded
    h.front.close()


def test_a_stopping_flag_set_while_scheduling_ends_the_loop_without_more_ticks(tmp_path):
    h = make_front(tmp_path)
    stop = FakeStop()

    def on_wait(n: int) -> None:
        if n == 1:
            h.front.submit("req")
            h.front.dispatch_tick()
            h.board.set_stopping()
        if n > 1:
            stop.set()

    stop.on_wait = on_wait
    h.front.schedule_loop(stop)
    assert stop.waits == [TICK_S]  # one tick, then the flag ended the loop
    assert h.board.schedule()["stopped"] is True
    assert h.ops.calls == []  # the queued request was not swapped in
    h.front.close()


def test_a_failing_scheduler_tick_is_logged_and_retried(tmp_path, caplog):
    h = make_front(tmp_path)
    stop = FakeStop()
    ticks: list[int] = []

    def on_wait(n: int) -> None:
        if n == 1:
            h.front.scheduler.tick = lambda: ticks.append(n) or 1 / 0
        if n == 3:
            stop.set()

    stop.on_wait = on_wait
    with caplog.at_level(logging.ERROR):
        h.front.schedule_loop(stop)
    assert len(ticks) == 2
    assert "swap scheduler tick failed" in caplog.text
    h.front.close()


# -- draining and closing -------------------------------------------------------------------
def test_drain_refuses_the_queued_requests(tmp_path):
    h = make_front(tmp_path)
    h.front.submit("one")
    h.front.submit("two")
    assert h.front.drain() == 2
    message = "model a: swap mode was turned off; retry later"
    assert h.refused == [("one", message), ("two", message)]
    assert h.front.gate.demand.queued == 0
    h.schedule(a=IN)
    h.front.dispatch_tick()
    assert h.forwarded == []


def test_close_stops_the_threads_drains_and_shuts_the_pool(tmp_path):
    h = make_front(tmp_path)
    h.schedule(a=OUT)
    h.front.start()
    h.front.submit("req")
    h.front.close()
    assert all(not thread.is_alive() for thread in h.front.threads)
    assert [item for item, _ in h.refused] == ["req"]
    assert h.front.executor.shut_down
    assert lock_is_free(h.board)


# -- model control ----------------------------------------------------------------------------
class FakeServer:
    """Triton's model control and its stub processes, polled by ModelControlOps."""

    def __init__(self, clock: Clock, stubs: dict[int, Stub], rss: dict[int, int]) -> None:
        self.clock = clock
        self.stubs = dict(stubs)
        self.rss = rss
        self.ready = {stub.model for stub in stubs.values()}
        self.unloaded: list[str] = []
        self.sleeps: list[float] = []
        self.exits: dict[int, float] = {}  # pid -> when its stub exits after unload
        self.not_ready_after_load = False

    def is_ready(self, name: str) -> bool:
        return name in self.ready

    def load(self, name: str) -> None:
        if not self.not_ready_after_load:
            self.ready.add(name)

    def unload(self, name: str) -> None:
        self.unloaded.append(name)
        self.ready.discard(name)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.now += seconds
        for pid, at in self.exits.items():
            if self.clock.now >= at:
                self.stubs.pop(pid, None)

    def process(self, pid: int) -> Any:
        def memory_info() -> SimpleNamespace:
            if pid not in self.rss:
                raise psutil.NoSuchProcess(pid)
            return SimpleNamespace(rss=self.rss[pid])

        return SimpleNamespace(pid=pid, memory_info=memory_info)

    def live_stubs(self, server: Any) -> dict[int, Stub]:
        assert server.pid == 1  # the server's pid
        return dict(self.stubs)


def stub(model: str) -> Stub:
    return Stub(model, f"shm_{model}")


def control(server: FakeServer, **kwargs: Any) -> ModelControlOps:
    return ModelControlOps(
        server.is_ready,
        server.load,
        server.unload,
        1,
        clock=server.clock,
        sleep=server.sleep,
        process=server.process,
        stubs=server.live_stubs,
        server_rss=lambda pid: 1000 * pid,
        **kwargs,
    )


A = plan().model("a")


def test_unload_unloads_every_step_and_waits_until_their_stubs_are_gone():
    clock = Clock()
    server = FakeServer(
        clock,
        {11: stub("a_backing"), 12: stub("a_engine"), 21: stub("b_engine")},
        {1: 5, 11: 100, 12: 2000, 21: 7},
    )
    server.ready = {"a_backing", "a_engine", "b_engine"}
    server.exits = {11: 0.2, 12: 0.35}
    stubs_rss = control(server).unload(A)
    assert server.unloaded == ["a_backing", "a_engine"]
    assert stubs_rss == 2100  # this model's stubs only, measured before the unload
    assert server.sleeps == [UNLOAD_POLL_S] * 4  # until the slower stub exited
    assert set(server.stubs) == {21}


def test_unload_times_out_naming_the_stubs_still_alive():
    clock = Clock()
    server = FakeServer(clock, {11: stub("a_backing"), 12: stub("a_engine")}, {})
    server.exits = {11: 1.0}
    with pytest.raises(RuntimeError) as err:
        control(server).unload(A)
    assert str(err.value) == f"still loaded after {UNLOAD_TIMEOUT_S:g}s: ['a_engine']"
    assert UNLOAD_TIMEOUT_S < clock.now <= UNLOAD_TIMEOUT_S + 2 * UNLOAD_POLL_S


def test_unload_times_out_naming_the_models_still_ready_when_no_stub_is_left(caplog):
    class Refusing(FakeServer):
        def unload(self, name: str) -> None:
            self.unloaded.append(name)
            raise ValueError(f"{name} is busy")

    clock = Clock()
    server = Refusing(clock, {}, {})
    server.ready = {"a_backing", "a_engine"}
    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError) as err:
        control(server, unload_errors=(ValueError,)).unload(A)
    assert server.unloaded == ["a_backing", "a_engine"]  # one refusal does not stop the rest
    assert "unload a_backing: a_backing is busy" in caplog.text
    assert str(err.value) == "still loaded after 120s: ['a_backing', 'a_engine']"


def test_unload_errors_outside_the_expected_ones_propagate():
    class Broken(FakeServer):
        def unload(self, name: str) -> None:
            raise KeyError(name)

    server = Broken(Clock(), {}, {})
    with pytest.raises(KeyError):
        control(server, unload_errors=(ValueError,)).unload(A)
    assert server.sleeps == []


def test_load_is_checked_by_the_backing_models_readiness():
    server = FakeServer(Clock(), {}, {})
    ops = control(server)
    assert not ops.is_ready(A)
    ops.load(A)
    assert ops.is_ready(A)
    server.ready.clear()
    server.not_ready_after_load = True
    with pytest.raises(RuntimeError, match="a_backing is not ready after loading"):
        ops.load(A)
    assert ops.rss() == 1000  # the server's pid, summed by server_rss_bytes
