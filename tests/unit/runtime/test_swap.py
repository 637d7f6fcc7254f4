"""Swap mode's logic without Triton: the schedule decisions, the fronts' gate, the
scheduler with fake operations, and the rendered front config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgectl.config import EngineConfig
from edgectl.deploy.repository import parse_model_config
from edgectl.runtime.swap import (
    DRAINING,
    IN,
    OUT,
    STALE_FRONT_S,
    Action,
    Board,
    Demand,
    FrontGate,
    SwapModel,
    SwapPlan,
    SwapScheduler,
    decide,
)
from edgectl.timeslice.swap import BackingModel, _render, swap_status

WALL = 1_000_000.0


def plan(budget: float = 1.5, min_resident_s: float = 2.0, **memory: float) -> SwapPlan:
    memory = memory or {"a": 1.0, "b": 1.0}
    return SwapPlan(
        policy="p",
        memory_budget_gb=budget,
        wait_timeout_s=5.0,
        min_resident_s=min_resident_s,
        models=[
            SwapModel(name, f"{name}_backing", [f"{name}_backing"], gb, share, 1)
            for (name, gb), share in zip(memory.items(), (30, 70, 50), strict=False)
        ],
    )


def entry(phase: str, since: float = 0.0, epoch: int = 1) -> dict:
    return {"phase": phase, "since": since, "epoch": epoch}


def demand(queued: int = 0, in_flight: int = 0, wait: float = 0.0, seen: int = 1) -> Demand:
    return Demand(queued, in_flight, wait, seen_epoch=seen, updated_at=WALL)


# -- decide ---------------------------------------------------------------------------
def test_a_waiting_model_that_fits_is_loaded():
    models = {"a": entry(OUT), "b": entry(OUT)}
    actions = decide(plan(budget=4), models, {"a": demand(1), "b": None}, 10.0, WALL)
    assert actions == [Action("load", "a")]


def test_nothing_happens_without_queued_requests():
    models = {"a": entry(IN), "b": entry(OUT)}
    assert decide(plan(), models, {"a": demand(), "b": demand()}, 10.0, WALL) == []


def test_a_busy_resident_keeps_the_budget_for_min_resident_s_then_drains():
    models = {"a": entry(IN, since=9.0), "b": entry(OUT)}
    busy = {"a": demand(in_flight=2), "b": demand(queued=1, wait=1.0)}
    assert decide(plan(min_resident_s=2), models, busy, 10.0, WALL) == []
    assert decide(plan(min_resident_s=2), models, busy, 11.5, WALL) == [Action("drain", "a")]


def test_an_idle_resident_is_drained_at_once():
    models = {"a": entry(IN, since=9.9), "b": entry(OUT)}
    idle = {"a": demand(), "b": demand(queued=1)}
    assert decide(plan(min_resident_s=60), models, idle, 10.0, WALL) == [Action("drain", "a")]


def test_a_draining_model_is_unloaded_only_when_acknowledged_and_empty():
    models = {"a": entry(DRAINING, epoch=5), "b": entry(OUT)}
    b = demand(queued=1)
    assert decide(plan(), models, {"a": demand(seen=4), "b": b}, 10.0, WALL) == []
    assert decide(plan(), models, {"a": demand(in_flight=1, seen=5), "b": b}, 10.0, WALL) == []
    # Unloaded first, then the waiting model that now fits is loaded, in the same tick.
    assert decide(plan(), models, {"a": demand(seen=5), "b": b}, 10.0, WALL) == [
        Action("unload", "a"),
        Action("load", "b"),
    ]


def test_a_dead_front_does_not_block_its_unload():
    models = {"a": entry(DRAINING, epoch=5), "b": entry(OUT)}
    stale = Demand(0, 3, 0.0, seen_epoch=1, updated_at=WALL - STALE_FRONT_S - 1)
    assert decide(plan(), models, {"a": stale, "b": None}, 10.0, WALL) == [Action("unload", "a")]


def test_the_next_model_waits_for_memory_being_freed():
    models = {"a": entry(DRAINING, epoch=5), "b": entry(OUT)}
    assert (
        decide(plan(), models, {"a": demand(in_flight=1, seen=5), "b": demand(1)}, 10, WALL) == []
    )


def test_the_longest_share_weighted_wait_goes_first_and_priority_before_that():
    p = plan(budget=1.0, a=1.0, b=1.0, c=1.0)  # shares 30, 70, 50
    models = {"a": entry(OUT), "b": entry(OUT), "c": entry(OUT)}
    waits = {"a": demand(1, wait=2.0), "b": demand(1, wait=1.0), "c": demand(1, wait=1.0)}
    assert decide(p, models, waits, 10.0, WALL) == [Action("load", "b")]  # 70 > 60 > 50
    urgent = SwapPlan(**{**vars(p), "models": [
        *p.models[:2], SwapModel("c", "c_backing", ["c_backing"], 1.0, 50, priority=0)
    ]})  # fmt: skip
    assert decide(urgent, models, waits, 10.0, WALL) == [Action("load", "c")]


def test_several_models_stay_resident_when_the_budget_allows():
    p = plan(budget=2.0, a=1.0, b=1.0, c=1.0)
    models = {"a": entry(IN, since=0), "b": entry(OUT), "c": entry(IN, since=5)}
    busy = {"a": demand(in_flight=1), "b": demand(1), "c": demand()}
    # Room for b means draining one of the two: the idle one, not the busy older one.
    assert decide(p, models, busy, 10.0, WALL) == [Action("drain", "c")]


def test_a_failed_load_is_retried_only_after_its_back_off():
    models = {"a": {**entry(OUT), "retry_at": 15.0}, "b": entry(OUT)}
    assert decide(plan(budget=4), models, {"a": demand(1), "b": None}, 10.0, WALL) == []
    assert decide(plan(budget=4), models, {"a": demand(1), "b": None}, 15.0, WALL) == [
        Action("load", "a")
    ]


# -- the front's gate -------------------------------------------------------------------
def test_the_gate_holds_requests_until_in_and_acknowledges_the_epoch():
    gate = FrontGate("a", wait_timeout_s=5.0)
    gate.submit("r1", now=0.0)
    gate.submit("r2", now=1.0)
    assert gate.poll(entry(OUT, epoch=3), now=2.0) == ([], [])
    assert gate.demand.queued == 2 and gate.demand.oldest_wait_s == 2.0
    assert gate.demand.seen_epoch == 3
    forward, expired = gate.poll(entry(IN, epoch=4), now=3.0)
    assert forward == ["r1", "r2"] and expired == []
    assert gate.demand.in_flight == 2 and gate.demand.waited == 2
    assert gate.demand.wait_s_max == 3.0 and gate.demand.seen_epoch == 4
    gate.done()
    assert gate.demand.in_flight == 1 and gate.demand.completed == 1


def test_the_gate_refuses_what_waited_past_the_timeout_in_arrival_order():
    gate = FrontGate("a", wait_timeout_s=5.0)
    gate.submit("old", now=0.0)
    gate.submit("new", now=4.0)
    forward, expired = gate.poll(entry(DRAINING), now=5.5)
    assert forward == [] and expired == [("old", 5.5)]
    assert gate.demand.timeouts == 1 and gate.demand.queued == 1
    assert gate.drain_all() == ["new"] and gate.demand.queued == 0


def test_a_draining_gate_admits_nothing_new():
    gate = FrontGate("a", wait_timeout_s=5.0)
    gate.submit("r", now=0.0)
    assert gate.poll(entry(DRAINING, epoch=7), now=0.1) == ([], [])
    assert gate.demand.seen_epoch == 7 and gate.demand.in_flight == 0


# -- the scheduler with fake operations ---------------------------------------------------
@dataclass
class FakeOps:
    loaded: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)

    def is_ready(self, model: SwapModel) -> bool:
        return model.name in self.loaded

    def load(self, model: SwapModel) -> None:
        self.calls.append(f"load {model.name}")
        if model.name in self.fail:
            raise RuntimeError(f"failed to load '{model.backing}': no such file")
        self.loaded.add(model.name)

    def unload(self, model: SwapModel) -> int:
        self.calls.append(f"unload {model.name}")
        self.loaded.discard(model.name)
        return 400 * 2**20

    def rss(self) -> int:
        return (200 + 400 * len(self.loaded)) * 2**20


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scheduler(tmp_path: Path, ops: FakeOps, p: SwapPlan | None = None) -> SwapScheduler:
    board = Board(tmp_path)
    board.write_plan(p or plan(min_resident_s=1.0))
    clock = Clock()
    sched = SwapScheduler(board.plan(), board, ops, clock=clock, wall=lambda: WALL)
    sched.recover()
    return sched


def front(board: Board, name: str, queued: int = 0, in_flight: int = 0, wait: float = 0.0):
    epoch = board.schedule()["models"][name]["epoch"]
    board.write_demand(name, Demand(queued, in_flight, wait, seen_epoch=epoch, updated_at=WALL))


def test_the_scheduler_swaps_a_out_and_b_in_and_records_the_swap(tmp_path):
    ops = FakeOps(loaded={"a"})
    sched = scheduler(tmp_path, ops)
    board = sched.board
    assert board.schedule()["models"]["a"]["phase"] == IN  # recovered from Triton's state
    front(board, "a", in_flight=1)
    front(board, "b", queued=2, wait=0.5)
    sched.clock.now += 2  # past min_resident_s
    assert sched.tick() == [Action("drain", "a")]
    assert sched.tick() == []  # a's front has not acknowledged the drain yet
    front(board, "a")  # acknowledged, nothing in flight
    assert sched.tick() == [Action("unload", "a"), Action("load", "b")]
    assert ops.calls == ["unload a", "load b"]
    schedule = board.schedule()
    assert schedule["models"]["a"]["phase"] == OUT and schedule["models"]["a"]["swap_outs"] == 1
    assert schedule["models"]["b"]["phase"] == IN and schedule["models"]["b"]["swap_ins"] == 1
    out, into = schedule["events"]
    assert out["kind"] == "out" and out["rss_before"] - out["rss_after"] == 400 * 2**20
    assert into["kind"] == "in" and into["swap_s"] >= 0.5


def test_a_failed_load_is_reported_and_backs_off(tmp_path):
    ops = FakeOps(fail={"a"})
    sched = scheduler(tmp_path, ops)
    front(sched.board, "a", queued=1)
    assert sched.tick() == [Action("load", "a")]
    entry_a = sched.board.schedule()["models"]["a"]
    assert entry_a["phase"] == OUT and "no such file" in entry_a["last_error"]
    assert sched.tick() == []  # backing off
    assert sched.board.schedule()["events"][-1]["error"]


def test_swap_status_summarises_the_board(tmp_path, monkeypatch):
    monkeypatch.setattr("edgectl.timeslice.swap.board_dir", lambda workdir: tmp_path)
    ops = FakeOps(loaded={"a"})
    sched = scheduler(tmp_path, ops)
    front(sched.board, "a")
    front(sched.board, "b", queued=1)
    sched.tick()  # drain a (idle)
    front(sched.board, "a")
    sched.tick()  # unload a, load b
    status = swap_status(Path("unused"))
    assert status["serving"] == ["b"] and status["swap_ins"] == 1 and status["swap_outs"] == 1
    assert status["last_unload"]["model"] == "a"
    assert status["last_unload"]["rss_before_mb"] - status["last_unload"]["rss_after_mb"] == 400
    rows = {row["name"]: row for row in status["models"]}
    assert rows["b"]["queue_depth"] == 1 and rows["a"]["swap_outs"] == 1


def test_swap_status_without_a_board_says_inactive(tmp_path):
    assert swap_status(tmp_path) == {"active": False}


# -- rendering ------------------------------------------------------------------------------
def test_the_front_has_the_backing_ensembles_io_and_is_decoupled(tmp_path):
    backing = BackingModel("m_backing", "cpu", tmp_path, tmp_path, end_id=2, pad_id=2, front="m")
    p = SwapPlan("p", 1.0, 5.0, 1.0, [SwapModel("m", "m_backing", ["m_backing"], 1.0, 1, 1)])
    out = _render(p, [backing], _config(), tmp_path)
    assert sorted(d.name for d in out.iterdir()) == [
        "m", "m_backing", "m_postprocessing", "m_preprocessing", "m_tensorrt_llm",
        "m_tensorrt_llm_bls",
    ]  # fmt: skip
    front = parse_model_config((out / "m" / "config.pbtxt").read_text(), "front")
    ensemble = parse_model_config((out / "m_backing" / "config.pbtxt").read_text(), "ensemble")
    assert front.model_transaction_policy.decoupled
    assert list(front.input) == list(ensemble.input) and list(front.output) == list(ensemble.output)
    assert front.parameters["backing_name"].string_value == "m_backing"
    steps = [step.model_name for step in ensemble.ensemble_scheduling.step]
    assert steps == ["m_preprocessing", "m_tensorrt_llm", "m_postprocessing"]


def _config():
    from edgectl.config import EdgectlConfig

    return EdgectlConfig(engine=EngineConfig(max_input_len=64))


def test_a_failed_unload_keeps_the_memory_counted_and_is_retried(tmp_path):
    class StuckOps(FakeOps):
        def unload(self, model: SwapModel) -> int:
            self.calls.append(f"unload {model.name}")
            raise RuntimeError("still loaded after 120s: ['a_backing']")

    ops = StuckOps(loaded={"a"})
    sched = scheduler(tmp_path, ops)
    front(sched.board, "a")
    front(sched.board, "b", queued=1)
    assert sched.tick() == [Action("drain", "a")]
    front(sched.board, "a")
    ops.loaded.discard("a")  # not ready any more, but its stub did not exit
    assert sched.tick() == [Action("unload", "a")]  # failed: b is not loaded
    entry_a = sched.board.schedule()["models"]["a"]
    assert entry_a["phase"] == DRAINING and "still loaded" in entry_a["last_error"]
    front(sched.board, "a")
    assert sched.tick() == [Action("unload", "a")]  # retried
    assert ops.calls == ["unload a", "unload a"]


def test_status_table_summarises_swap_mode():
    from edgectl.timeslice.service import _swap_lines

    swap = {
        "active": True,
        "resident": ["swap_a"],
        "swap_ins": 12,
        "swap_outs": 11,
        "failed_swaps": 0,
        "load_s": {"count": 12, "p50": 9.3, "max": 10.4},
        "unload_s": {"count": 11, "p50": 1.5, "max": 1.67},
        "swap_s": None,
        "last_unload": {
            "model": "swap_b",
            "rss_before_mb": 740.0,
            "rss_after_mb": 143.5,
            "stubs_rss_mb": 594.0,
        },
        "models": [
            {"name": "swap_a", "phase": "in", "queue_depth": 2, "timeouts": 0, "wait_s_max": 1.2},
            {"name": "swap_b", "phase": "out"},
        ],
    }
    text = "\n".join(_swap_lines(swap))
    assert "resident swap_a; 12 swap-ins, 11 swap-outs, 0 failed" in text
    assert "load p50 9.3 s, max 10.4 s; unload p50 1.5 s, max 1.67 s" in text
    assert "swap seen by clients -" in text
    assert "server RSS 740 -> 143.5 MB (its stubs held 594 MB)" in text
    assert "swap_a: in, queue 2, timeouts 0" in text
    assert "swap_b: out, queue -" in text
    assert _swap_lines({"active": False}) == ["swap: not active"]
