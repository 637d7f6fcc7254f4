"""Swap mode's logic, free of Triton: the board, the front models' gate, the scheduler.

Swap mode serves models that do not fit the memory budget together.  Each served name
is a small always-loaded *front* model (``model_repository/timeslice_front``) that holds
requests while its *backing* ensemble is swapped out.  The fronts and the scheduler talk
through a directory (the *board*), because they live in different stub processes:

* ``plan.json``      what to schedule (written once by ``edgectl timeslice apply``);
* ``fronts/<m>.json`` each front's demand: queued, in flight, oldest wait, the schedule
  epoch it has acted on, and its counters (written by that front, ~every 50 ms);
* ``schedule.json``  each model's phase (out, loading, in, draining, unloading) and the
  swap history (written only by the scheduler);
* ``stopping``       present while ``edgectl`` turns swap mode off: nothing more is
  scheduled, and the scheduler acknowledges with ``stopped`` in ``schedule.json``.

Exactly one front runs the scheduler: the one holding ``scheduler.lock`` (``flock``).
If its stub dies the kernel drops the lock and another front takes over, rebuilding the
phases from Triton's own model readiness, so no separate process has to survive.

A front admits requests only while its model's phase is ``in``.  Before unloading, the
scheduler sets ``draining``; it unloads only after the front has acknowledged that epoch
(so it admits nothing new) and reports nothing in flight, so an unload never cuts a
request off.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgectl.runtime.files import write_json_atomic

PLAN_FILE = "plan.json"
SCHEDULE_FILE = "schedule.json"
FRONTS_DIR = "fronts"
LOCK_FILE = "scheduler.lock"
STOPPING_FILE = "stopping"  # swap mode is being turned off: schedule nothing more
# A front that has not written its demand for this long is dead (stub crash); its
# in-flight requests died with it, so it no longer blocks an unload.
STALE_FRONT_S = 10.0
LOAD_RETRY_S = 5.0  # after a failed swap-in, wait this long before trying again
HISTORY = 200  # swap events kept in schedule.json

OUT, LOADING, IN, DRAINING, UNLOADING = "out", "loading", "in", "draining", "unloading"
RESIDENT_PHASES = (LOADING, IN, DRAINING, UNLOADING)  # phases that hold memory


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return default


# -- the plan ------------------------------------------------------------------------
@dataclass(frozen=True)
class SwapModel:
    """One served name in swap mode: its front, its backing ensemble and its steps."""

    name: str  # the front model clients call
    backing: str  # the ensemble that is loaded and unloaded
    steps: list[str]  # backing ensemble first, then its composing models
    memory_gb: float
    share: float
    priority: int


@dataclass(frozen=True)
class SwapPlan:
    policy: str
    memory_budget_gb: float
    wait_timeout_s: float
    min_resident_s: float
    models: list[SwapModel]

    def model(self, name: str) -> SwapModel:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SwapPlan:
        models = [SwapModel(**item) for item in data["models"]]
        return cls(**{**data, "models": models})


class Board:
    """The swap directory shared by the fronts, the scheduler and ``edgectl``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def plan(self) -> SwapPlan:
        data = read_json(self.directory / PLAN_FILE)
        if data is None:
            raise FileNotFoundError(self.directory / PLAN_FILE)
        return SwapPlan.from_dict(data)

    def write_plan(self, plan: SwapPlan) -> None:
        write_json_atomic(self.directory / PLAN_FILE, plan.to_dict())

    def schedule(self) -> dict[str, Any]:
        return read_json(self.directory / SCHEDULE_FILE, {"models": {}, "events": []})

    def write_schedule(self, schedule: dict[str, Any]) -> None:
        write_json_atomic(self.directory / SCHEDULE_FILE, schedule)

    def demand(self, name: str) -> Demand | None:
        data = read_json(self.directory / FRONTS_DIR / f"{name}.json")
        return Demand(**data) if data else None

    def write_demand(self, name: str, demand: Demand) -> None:
        write_json_atomic(self.directory / FRONTS_DIR / f"{name}.json", asdict(demand))

    @property
    def lock_path(self) -> Path:
        return self.directory / LOCK_FILE

    def stopping(self) -> bool:
        return (self.directory / STOPPING_FILE).exists()

    def set_stopping(self) -> None:
        (self.directory / STOPPING_FILE).touch()


# -- the front's side ------------------------------------------------------------------
@dataclass
class Demand:
    """What one front reports (its file in ``fronts/``)."""

    queued: int = 0
    in_flight: int = 0
    oldest_wait_s: float = 0.0
    seen_epoch: int = -1  # the schedule epoch of this model the front has acted on
    updated_at: float = 0.0  # wall clock (time.time) of the write
    requests: int = 0  # accepted by the front
    forwarded: int = 0  # admitted to the backing model
    completed: int = 0  # finished on the backing model (any outcome)
    waited: int = 0  # forwarded after waiting for a swap-in
    wait_s_total: float = 0.0
    wait_s_max: float = 0.0
    timeouts: int = 0  # refused after swap.wait_timeout_s


@dataclass
class _Queued:
    item: Any
    since: float  # monotonic


class FrontGate:
    """A front's queue and admission: admit only while the schedule says ``in``.

    Thread-safe callers hold ``lock`` around ``submit``/``poll``/``done``; the gate
    itself has no threads so it can be tested with a fake clock.
    """

    def __init__(self, name: str, wait_timeout_s: float) -> None:
        self.name = name
        self.wait_timeout_s = wait_timeout_s
        self.queue: deque[_Queued] = deque()
        self.demand = Demand()

    def submit(self, item: Any, now: float) -> None:
        self.queue.append(_Queued(item, now))
        self.demand.requests += 1

    def poll(self, entry: dict[str, Any] | None, now: float) -> tuple[list, list]:
        """Apply the schedule entry of this model: (items to forward, (item, waited) expired).

        Requests are admitted while the model is ``in``; any that waited longer than
        the timeout are handed back to be refused.  The epoch is acknowledged only
        here, after admission stopped, which is what lets the scheduler unload.
        """
        entry = entry or {}
        admit = entry.get("phase") == IN
        forward, expired = [], []
        while self.queue:
            head = self.queue[0]
            waited = now - head.since
            if admit:
                self.queue.popleft()
                forward.append(head.item)
                self.demand.forwarded += 1
                self.demand.in_flight += 1
                if waited > 0.05:
                    self.demand.waited += 1
                    self.demand.wait_s_total += waited
                    self.demand.wait_s_max = max(self.demand.wait_s_max, waited)
            elif waited >= self.wait_timeout_s:
                self.queue.popleft()
                expired.append((head.item, waited))
                self.demand.timeouts += 1
            else:
                break  # FIFO: the rest waited less
        self.demand.seen_epoch = int(entry.get("epoch", -1))
        self.demand.queued = len(self.queue)
        self.demand.oldest_wait_s = now - self.queue[0].since if self.queue else 0.0
        return forward, expired

    def done(self) -> None:
        self.demand.in_flight -= 1
        self.demand.completed += 1

    def drain_all(self) -> list:
        """Everything still queued (the front is being unloaded)."""
        items = [queued.item for queued in self.queue]
        self.queue.clear()
        self.demand.queued = 0
        return items


# -- the scheduler -------------------------------------------------------------------
@dataclass(frozen=True)
class Action:
    kind: str  # "drain", "unload" or "load"
    model: str


def _busy(demand: Demand | None) -> bool:
    return demand is not None and demand.queued + demand.in_flight > 0


def _drained(entry: dict[str, Any], demand: Demand | None, wall_now: float) -> bool:
    if demand is None or wall_now - demand.updated_at > STALE_FRONT_S:
        return True  # no live front: nothing can be in flight through it
    return demand.seen_epoch >= entry["epoch"] and demand.in_flight == 0


def decide(
    plan: SwapPlan,
    models: dict[str, dict[str, Any]],
    demand: dict[str, Demand | None],
    now: float,
    wall_now: float,
) -> list[Action]:
    """What to do next, given each model's phase and demand (pure, so it is unit-tested).

    * A draining model whose front has acknowledged and has nothing in flight is unloaded.
    * Of the swapped-out models with queued requests, the one with the best priority
      (1 first) and then the longest wait times share goes next.  It is loaded if it fits
      the budget next to the resident ones; otherwise resident models are drained,
      idle ones first, then the longest resident; a model with work is never drained
      before it has been in for ``min_resident_s`` (no thrashing).
    * An idle resident model stays loaded until its memory is needed.
    """
    actions = [
        Action("unload", m.name)
        for m in plan.models
        if models[m.name]["phase"] == DRAINING
        and _drained(models[m.name], demand.get(m.name), wall_now)
    ]
    unloading = {action.model for action in actions}
    resident = [
        m
        for m in plan.models
        if models[m.name]["phase"] in RESIDENT_PHASES and m.name not in unloading
    ]
    waiting = [
        m
        for m in plan.models
        if models[m.name]["phase"] == OUT
        and _busy(demand.get(m.name))
        and demand[m.name].queued > 0
        and now >= models[m.name].get("retry_at", 0.0)
    ]
    if not waiting:
        return actions
    nxt = min(waiting, key=lambda m: (m.priority, -demand[m.name].oldest_wait_s * m.share))
    used = sum(m.memory_gb for m in resident)
    if used + nxt.memory_gb <= plan.memory_budget_gb + 1e-9:
        return [*actions, Action("load", nxt.name)]
    if unloading:
        return actions  # memory is being freed; decide again once it is
    still_draining = sum(m.memory_gb for m in resident if models[m.name]["phase"] == DRAINING)
    need = used + nxt.memory_gb - plan.memory_budget_gb - still_draining
    if need <= 1e-9:
        return actions  # the drains under way will make room
    candidates = [
        m
        for m in resident
        if models[m.name]["phase"] == IN
        and (not _busy(demand.get(m.name)) or now - models[m.name]["since"] >= plan.min_resident_s)
    ]
    candidates.sort(key=lambda m: (_busy(demand.get(m.name)), models[m.name]["since"]))
    chosen = []
    for m in candidates:
        if need <= 1e-9:
            break
        chosen.append(m)
        need -= m.memory_gb
    if need > 1e-9:
        return actions  # not enough can be freed yet (min_resident_s); wait
    return [*actions, *(Action("drain", m.name) for m in chosen)]


class SwapOps(Protocol):
    """What the scheduler needs from Triton (pb_utils in the front; fakes in tests)."""

    def is_ready(self, model: SwapModel) -> bool: ...

    def load(self, model: SwapModel) -> None: ...  # blocks until ready; raises on failure

    def unload(self, model: SwapModel) -> int: ...  # blocks until gone; stubs' RSS; raises

    def rss(self) -> int: ...  # server + stubs, bytes


@dataclass
class SwapEvent:
    kind: str  # "in" or "out"
    model: str
    at: float  # wall clock
    seconds: float  # load time (in) or unload time (out)
    # in: how long its oldest queued request had waited when the model became ready
    # (the other model's drain and unload, then this load): the swap time clients see
    swap_s: float | None = None
    drain_s: float | None = None  # out: from the drain decision until unload started
    rss_before: int | None = None
    rss_after: int | None = None
    stubs_rss: int | None = None  # out: what the backing's stubs held just before
    error: str | None = None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else repr(err)


@dataclass
class SwapScheduler:
    """Applies ``decide`` with real operations and records phases and swap events."""

    plan: SwapPlan
    board: Board
    ops: SwapOps
    clock: Callable[[], float]  # monotonic
    wall: Callable[[], float]  # time.time
    schedule: dict[str, Any] = field(default_factory=dict)

    def recover(self) -> None:
        """Start from the board's schedule, corrected by what Triton really has loaded."""
        previous = self.board.schedule()
        now = self.clock()
        models = {}
        for m in self.plan.models:
            entry = dict(previous.get("models", {}).get(m.name) or {})
            ready = self.ops.is_ready(m)
            phase = entry.get("phase", OUT)
            if ready and phase not in (IN, DRAINING):
                phase = IN
            elif not ready:
                phase = OUT
            entry.update(phase=phase, epoch=int(entry.get("epoch", 0)) + 1, since=now)
            entry.setdefault("swap_ins", 0)
            entry.setdefault("swap_outs", 0)
            models[m.name] = entry
        self.schedule = {"models": models, "events": previous.get("events", [])[-HISTORY:]}
        self._save()

    def _save(self) -> None:
        self.schedule["updated_at"] = self.wall()
        self.schedule["scheduler_pid"] = os.getpid()
        self.board.write_schedule(self.schedule)

    def _set(self, name: str, phase: str, **extra: Any) -> None:
        entry = self.schedule["models"][name]
        entry.update(phase=phase, epoch=entry["epoch"] + 1, since=self.clock(), **extra)
        self._save()

    def _record(self, event: SwapEvent) -> None:
        self.schedule["events"] = [*self.schedule["events"], asdict(event)][-HISTORY:]

    def stop(self) -> None:
        """Acknowledge ``Board.stopping``: no tick runs after this."""
        self.schedule["stopped"] = True
        self._save()

    def tick(self) -> list[Action]:
        demand = {m.name: self.board.demand(m.name) for m in self.plan.models}
        actions = decide(self.plan, self.schedule["models"], demand, self.clock(), self.wall())
        done = []
        for action in actions:
            done.append(action)
            if getattr(self, f"_{action.kind}")(self.plan.model(action.model)) is False:
                break  # a failed unload freed nothing: what followed relied on it
        return done

    def _drain(self, model: SwapModel) -> None:
        self._set(model.name, DRAINING)

    def _unload(self, model: SwapModel) -> None:
        drain_s = self.clock() - self.schedule["models"][model.name]["since"]
        self._set(model.name, UNLOADING)
        started = self.clock()
        rss_before = self.ops.rss()
        try:
            stubs_rss = self.ops.unload(model)
        except Exception as err:  # e.g. a stub that does not exit: keep counting its memory
            message = _first_line(err)
            self._record(SwapEvent("out", model.name, self.wall(), 0.0, error=message))
            phase = IN if self.ops.is_ready(model) else DRAINING  # retried next tick
            self._set(model.name, phase, last_error=message)
            return False
        event = SwapEvent(
            "out", model.name, self.wall(), round(self.clock() - started, 3),
            drain_s=round(drain_s, 3), rss_before=rss_before, rss_after=self.ops.rss(),
            stubs_rss=stubs_rss,
        )  # fmt: skip
        self._record(event)
        entry = self.schedule["models"][model.name]
        self._set(model.name, OUT, swap_outs=entry["swap_outs"] + 1)

    def _load(self, model: SwapModel) -> None:
        entry = self.schedule["models"][model.name]
        demand = self.board.demand(model.name)
        waited = demand.oldest_wait_s if demand else 0.0
        self._set(model.name, LOADING)
        started = self.clock()
        rss_before = self.ops.rss()
        try:
            self.ops.load(model)
        except Exception as err:  # a failed load leaves the model out, retried later
            message = _first_line(err)
            self._record(
                SwapEvent(
                    "in",
                    model.name,
                    self.wall(),
                    round(self.clock() - started, 3),
                    error=message,
                )  # fmt: skip
            )
            self._set(model.name, OUT, last_error=message, retry_at=self.clock() + LOAD_RETRY_S)
            return
        seconds = self.clock() - started
        self._record(
            SwapEvent(
                "in",
                model.name,
                self.wall(),
                round(seconds, 3),
                swap_s=round(seconds + waited, 3),
                rss_before=rss_before,
                rss_after=self.ops.rss(),
            )  # fmt: skip
        )
        self._set(
            model.name, IN, swap_ins=entry["swap_ins"] + 1, last_error=None,
            load_s_total=round(entry.get("load_s_total", 0.0) + seconds, 3),
        )  # fmt: skip
