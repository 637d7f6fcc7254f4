"""The co-resident slot arbiter: shares, slot lengths, work conservation, crashes, the gate."""

from __future__ import annotations

import threading
import time

import pytest

from edgectl.runtime.slots import (
    STALE_S,
    SlotBoard,
    SlotGate,
    SlotSpec,
    arbitrate,
    go_idle,
    new_state,
)
from tests.unit.runtime.test_engine import FakePipeline, request, wait_until

STEP_S = 0.025  # one engine step of the simulated engines


def simulate(state, busy: dict[str, tuple[float, float]], until: float, start: float = 0.0):
    """Engines step (STEP_S each) while ``busy[name] = (from, to)`` says they have work.

    Returns how long each engine stepped.  Like the real gate, an engine that may step
    runs one step; the others poll.
    """
    now = start
    held = {name: 0.0 for name in busy}
    while now < until:
        runner = None
        for name, (first, last) in busy.items():
            if not first <= now < last:
                if state["models"][name]["wants"]:
                    go_idle(state, name, now)
                continue
            if arbitrate(state, name, now) is not None:
                runner = name
        if runner is None:
            now += 0.002
            continue
        held[runner] += STEP_S
        now += STEP_S
    return held


def two_models(a_share=30, b_share=70, a_slot=100, b_slot=300):
    return new_state(
        "pair",
        {"a": SlotSpec(a_share, a_slot, priority=1), "b": SlotSpec(b_share, b_slot, priority=2)},
        now=0.0,
    )


def test_busy_models_get_device_time_in_proportion_to_their_shares():
    state = two_models()
    held = simulate(state, {"a": (0, 1e9), "b": (0, 1e9)}, until=60.0)
    total = held["a"] + held["b"]
    assert held["a"] / total == pytest.approx(0.30, abs=0.01)
    assert total == pytest.approx(60.0, rel=0.01)  # never idle while someone has work
    # Slots have the configured lengths (overrun by at most one step).
    for name, slot_s in (("a", 0.1), ("b", 0.3)):
        entry = state["models"][name]
        assert slot_s <= entry["busy_s"] / entry["slots"] <= slot_s + STEP_S


def test_shares_hold_for_other_weights_and_equal_slots():
    state = two_models(a_share=1, b_share=3, a_slot=50, b_slot=50)
    held = simulate(state, {"a": (0, 1e9), "b": (0, 1e9)}, until=40.0)
    assert held["a"] / (held["a"] + held["b"]) == pytest.approx(0.25, abs=0.01)


def test_an_idle_model_lends_its_slots_and_banks_no_credit():
    state = two_models()
    # a idles for the first 20 s: b gets the whole device ...
    held = simulate(state, {"a": (20, 1e9), "b": (0, 1e9)}, until=20.0)
    assert held == {"a": 0.0, "b": pytest.approx(20.0, rel=0.01)}
    # ... and when a comes back it gets its 30 %, not a catch-up burst.
    held = simulate(state, {"a": (20, 1e9), "b": (0, 1e9)}, until=30.0, start=20.0)
    assert held["a"] / (held["a"] + held["b"]) == pytest.approx(0.30, abs=0.03)


def test_the_highest_priority_goes_first_when_virtual_times_tie():
    state = two_models()
    state["models"]["b"]["wants"] = True
    state["models"]["b"]["seen"] = 0.0
    assert arbitrate(state, "a", 0.0) == pytest.approx(0.1)  # priority 1 beats 2
    assert arbitrate(state, "b", 0.0) is None


def test_a_holder_that_stops_asking_loses_the_device():
    state = two_models()
    assert arbitrate(state, "a", 0.0) is not None  # a holds, then its stub dies
    assert arbitrate(state, "b", 0.05) is None
    assert arbitrate(state, "b", STALE_S + 0.2) is not None
    assert state["holder"] == "b"


def test_waits_are_counted_with_their_length():
    state = two_models()
    arbitrate(state, "a", 0.0)
    assert arbitrate(state, "b", 0.0) is None
    assert arbitrate(state, "b", 0.12) is None  # a's slot is over, but only a can end it
    arbitrate(state, "a", 0.125)  # a's next step: slot over, b has the least virtual time
    assert arbitrate(state, "b", 0.126) is not None
    b = state["models"]["b"]
    assert (b["waits"], b["wait_s"]) == (1, pytest.approx(0.126))
    assert state["models"]["a"]["busy_s"] == pytest.approx(0.125)


# -- the file board and the gate ---------------------------------------------------------------


def test_ungoverned_engines_pass_at_once(tmp_path):
    gate = SlotGate(tmp_path / "board", "x_tensorrt_llm")
    assert gate.acquire()  # no policy at all
    SlotBoard(tmp_path / "board").install("p", {"other": SlotSpec(1, 100)})
    assert gate.acquire()  # a policy that does not name this engine
    gate.idle()
    with SlotBoard(tmp_path / "board").locked() as state:
        assert state["holder"] is None


def test_gates_in_threads_never_step_together_and_follow_shares(tmp_path):
    board = SlotBoard(tmp_path)
    board.install("p", {"a": SlotSpec(1, 20), "b": SlotSpec(3, 20)})
    inside: list[str] = []
    overlaps: list[tuple[str, str]] = []
    steps = {"a": 0, "b": 0}
    stop = threading.Event()

    def engine(name: str) -> None:
        gate = SlotGate(tmp_path, name)
        while not stop.is_set():
            if not gate.acquire(stop.is_set):
                break
            if inside:
                overlaps.append((name, inside[0]))
            inside.append(name)
            time.sleep(0.002)  # a step
            inside.remove(name)
            steps[name] += 1
        gate.idle()

    threads = [threading.Thread(target=engine, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join(5)
    assert overlaps == []
    snapshot = board.snapshot()
    busy = {name: snapshot["models"][name]["busy_s"] for name in ("a", "b")}
    assert busy["a"] / (busy["a"] + busy["b"]) == pytest.approx(0.25, abs=0.08)
    assert snapshot["holder"] is None  # both went idle on the way out


def test_removing_the_policy_frees_a_waiting_engine(tmp_path):
    board = SlotBoard(tmp_path)
    board.install("p", {"a": SlotSpec(1, 60_000), "b": SlotSpec(1, 100)})
    assert SlotGate(tmp_path, "a").acquire()  # a holds a very long slot
    released = threading.Event()
    waiter = threading.Thread(target=lambda: SlotGate(tmp_path, "b").acquire() and released.set())
    waiter.start()
    assert not released.wait(0.3)
    board.remove()  # `timeslice off`
    assert released.wait(2.0)
    waiter.join(2)


# -- the engine asks the gate ------------------------------------------------------------------


class RecordingGate:
    def __init__(self) -> None:
        self.log: list[str] = []

    def acquire(self, stopping) -> bool:
        self.log.append("acquire")
        return True

    def idle(self) -> None:
        if not self.log or self.log[-1] != "idle":
            self.log.append("idle")


def test_the_engine_asks_before_every_step_and_goes_idle_without_work():
    from tests.unit.runtime.test_engine import make_engine

    gate = RecordingGate()
    pipeline = FakePipeline([[20, 21, 22, 23]])
    engine = make_engine(pipeline, device_gate=gate)
    engine.start()
    try:
        req = request()
        engine.submit(req)
        req.sink.wait()
        wait_until(lambda: gate.log[-1:] == ["idle"])
    finally:
        engine.shutdown(timeout=5)
    assert gate.log.count("acquire") == len(pipeline.step_log) >= 4
    assert gate.log[-1] == "idle"


def test_an_unreadable_board_fails_open(tmp_path):
    board = SlotBoard(tmp_path)
    board.install("p", {"a": SlotSpec(1, 100)})
    board.state_path.write_text("{not json")
    gate = SlotGate(tmp_path, "a")
    assert gate.acquire()  # serving goes on without shares
    gate.idle()


def test_counters_report_this_engines_accounting(tmp_path):
    now = [0.0]
    board = SlotBoard(tmp_path)
    board.install("p", {"a": SlotSpec(1, 100), "b": SlotSpec(3, 100)})
    a = SlotGate(tmp_path, "a", clock=lambda: now[0])
    assert a.acquire()
    now[0] = 0.25  # a is mid-slot... and its slot is over: counted up to now
    assert a.counters() == {
        "device_seconds": 0.25,
        "slots": 0,
        "slot_waits": 0,
        "slot_wait_seconds": 0.0,
        "configured_share": 0.25,
    }
    assert SlotGate(tmp_path, "c").counters() is None  # not in the policy
