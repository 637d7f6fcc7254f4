"""Swap mode's front, free of Triton: queueing, dispatch, election and model control.

``model_repository/timeslice_front`` is a thin adapter around ``SwapFront``: it copies
each request's tensors, forwards admitted requests to the backing ensemble (BLS),
sends the error responses and publishes metrics.  Everything else happens here, with
those steps passed in as callables, so the front is tested without a Triton server.
The protocol itself (board, gate, scheduler) is in ``edgectl.runtime.swap``.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import IO, Any, Protocol

import psutil

from edgectl.runtime.processes import Stub, live_stubs, server_rss_bytes
from edgectl.runtime.swap import (
    IN,
    RESIDENT_PHASES,
    Board,
    Demand,
    FrontGate,
    SwapModel,
    SwapOps,
    SwapPlan,
    SwapScheduler,
)

TICK_S = 0.05  # dispatch and scheduler period
ELECT_S = 1.0  # how often a front without the scheduler lock tries to take it
UNLOAD_TIMEOUT_S = 120.0
UNLOAD_POLL_S = 0.1
METRICS_EVERY_S = 0.5
MAX_WORKERS = 128  # concurrent forwarded requests; more wait in the pool, still counted
log = logging.getLogger(__name__)


class StopEvent(Protocol):
    """The part of ``threading.Event`` the loops use (a fake one in tests)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class SwapFront:
    """One served name's front: queue requests, forward them while the model is in.

    ``submit`` only queues.  ``dispatch_loop`` applies the board's schedule every tick:
    while the backing ensemble is in, queued requests go to ``forward`` (on a worker
    thread each, so a long stream never holds up the queue); while it is out they wait,
    at most ``swap.wait_timeout_s``, then go to ``refuse`` with a message saying why.
    ``schedule_loop`` competes for the board's scheduler lock; the front holding it also
    runs the swap scheduler for every model.
    """

    def __init__(
        self,
        name: str,
        board: Board,
        plan: SwapPlan,
        *,
        forward: Callable[[Any], None],
        refuse: Callable[[Any, str], None],
        publish: Callable[[dict[str, float]], None],
        ops: SwapOps,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        executor: Executor | None = None,
    ) -> None:
        self.name = name
        self.board = board
        self.plan = plan
        self.forward = forward
        self.refuse = refuse
        self.publish = publish
        self.ops = ops
        self.clock = clock
        self.wall = wall
        self.gate = FrontGate(name, plan.wait_timeout_s)
        self.lock = threading.Lock()  # around the gate: execute, dispatch and workers
        self.stop = threading.Event()
        if executor is None:
            executor = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="forward")
        self.executor = executor
        self.scheduler: SwapScheduler | None = None
        self.lock_file: IO[str] | None = None
        self.threads: list[threading.Thread] = []
        self._next_metrics = 0.0

    # -- requests -----------------------------------------------------------------
    def submit(self, item: Any, now: float | None = None) -> None:
        """Queue one request; ``now`` lets a batch of requests share one arrival time."""
        now = self.clock() if now is None else now
        with self.lock:
            self.gate.submit(item, now)

    def finished(self) -> None:
        """A forwarded request ended (any outcome): it no longer blocks an unload."""
        with self.lock:
            self.gate.done()

    def _forward(self, item: Any) -> None:
        try:
            self.forward(item)
        except Exception:  # forward reports its own errors; this only keeps the count
            log.exception("swap front %s: forward failed", self.name)
        finally:
            self.finished()

    def timeout_message(self, schedule: dict[str, Any], waited: float) -> str:
        """Why a request is refused: how long it waited and who holds the memory."""
        entry = schedule.get("models", {}).get(self.name) or {}
        resident = [
            name if other["phase"] == IN else f"{name} ({other['phase']})"
            for name, other in schedule.get("models", {}).items()
            if other.get("phase") in RESIDENT_PHASES
        ]
        holders = ", ".join(resident) or "no model"
        message = (
            f"model {self.name} is swapped out: waited {waited:.1f}s "
            f"(swap.wait_timeout_s={self.plan.wait_timeout_s:g}) for it to be swapped in; "
            f"{holders} holds the memory budget ({self.plan.memory_budget_gb:g} GB)"
        )
        if entry.get("last_error"):
            message += f"; its last swap-in failed: {entry['last_error']}"
        return message + "; retry later"

    # -- dispatch -------------------------------------------------------------------
    def dispatch_tick(self) -> None:
        """Apply the schedule once: forward, refuse the expired, report demand."""
        schedule = self.board.schedule()
        entry = schedule.get("models", {}).get(self.name)
        with self.lock:
            forward, expired = self.gate.poll(entry, self.clock())
            self.gate.demand.updated_at = self.wall()
            self.board.write_demand(self.name, self.gate.demand)
            demand = self.gate.demand
        for item in forward:
            self.executor.submit(self._forward, item)
        for item, waited in expired:
            self.refuse(item, self.timeout_message(schedule, waited))
        if self.clock() >= self._next_metrics:
            self._next_metrics = self.clock() + METRICS_EVERY_S
            self.publish(self.metric_values(schedule, entry or {}, demand))

    def dispatch_loop(self, stop: StopEvent) -> None:
        while not stop.wait(TICK_S):
            try:
                self.dispatch_tick()
            except Exception:  # keep serving; the next tick retries
                log.exception("swap front %s: dispatch tick failed", self.name)

    def metric_values(
        self, schedule: dict[str, Any], entry: dict[str, Any], demand: Demand
    ) -> dict[str, float]:
        """The swap metrics (``edgectl.runtime.metrics.SWAP_*``) of this front's model."""
        loads = [
            e for e in schedule.get("events", [])
            if e["model"] == self.name and e["kind"] == "in" and not e.get("error")
        ]  # fmt: skip
        return {
            "requests": demand.requests,
            "ins": entry.get("swap_ins", 0),
            "outs": entry.get("swap_outs", 0),
            "load_seconds": entry.get("load_s_total", 0.0),
            "waited_requests": demand.waited,
            "wait_seconds": demand.wait_s_total,
            "wait_timeouts": demand.timeouts,
            "resident": 1.0 if entry.get("phase") == IN else 0.0,
            "queue_depth": demand.queued,
            "in_flight": demand.in_flight,
            "last_load_seconds": loads[-1]["seconds"] if loads else 0.0,
        }

    # -- the scheduler ------------------------------------------------------------------
    def schedule_loop(self, stop: StopEvent) -> None:
        """Take the scheduler lock when free and schedule until unloaded or told to stop.

        Once ``edgectl`` flags the board as stopping, nothing is loaded or unloaded any
        more (and nobody takes over), so turning swap mode off never races a swap.
        """
        while not stop.is_set():
            if self.board.stopping():
                if self.scheduler is not None:
                    self.scheduler.stop()
                return
            if self.scheduler is None:
                self.scheduler = self.try_elect()
                if self.scheduler is None:
                    stop.wait(ELECT_S)
                continue  # look at the stopping flag again before the first tick
            try:
                self.scheduler.tick()
            except Exception:
                log.exception("swap scheduler tick failed")
            stop.wait(TICK_S)

    def try_elect(self) -> SwapScheduler | None:
        """The scheduler, if this front could take the board's lock (held until close)."""
        handle = open(self.board.lock_path, "a+")  # noqa: SIM115 - held while scheduling
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return None
        self.lock_file = handle
        scheduler = SwapScheduler(self.plan, self.board, self.ops, clock=self.clock, wall=self.wall)
        scheduler.recover()
        log.info("swap front %s now runs the swap scheduler", self.name)
        return scheduler

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        self.threads = [
            threading.Thread(target=self.dispatch_loop, args=(self.stop,), name="dispatch"),
            threading.Thread(target=self.schedule_loop, args=(self.stop,), name="schedule"),
        ]
        for thread in self.threads:
            thread.daemon = True
            thread.start()

    def drain(self) -> int:
        """Refuse everything still queued (the front is being unloaded); how many."""
        with self.lock:
            queued = self.gate.drain_all()
        for item in queued:
            self.refuse(item, f"model {self.name}: swap mode was turned off; retry later")
        return len(queued)

    def close(self) -> None:
        """Stop the threads, refuse the queue, finish forwarded requests, free the lock."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.drain()
        self.executor.shutdown(wait=True)
        if self.lock_file is not None:
            self.lock_file.close()  # releases the scheduler lock for another front
            self.lock_file = None


class ModelControlOps:
    """``SwapOps`` through Triton's model-control calls, passed in as callables by name.

    Triton keeps an ensemble's composing models loaded when the ensemble is unloaded,
    so each step is unloaded on its own, and the unload waits until their stubs have
    exited, so their memory is really returned before another model is loaded.
    """

    def __init__(
        self,
        is_ready: Callable[[str], bool],
        load: Callable[[str], None],
        unload: Callable[[str], None],
        server_pid: int,
        *,
        unload_errors: tuple[type[BaseException], ...] = (Exception,),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        process: Callable[[int], Any] = psutil.Process,
        stubs: Callable[[Any], dict[int, Stub]] = live_stubs,
        server_rss: Callable[[int], int] = server_rss_bytes,
    ) -> None:
        self._is_ready = is_ready
        self._load = load
        self._unload = unload
        self.server_pid = server_pid
        self.unload_errors = unload_errors  # logged and waited out, not raised
        self.clock = clock
        self.sleep = sleep
        self._process = process
        self._stubs = stubs
        self._server_rss = server_rss

    def is_ready(self, model: SwapModel) -> bool:
        return self._is_ready(model.backing)

    def load(self, model: SwapModel) -> None:
        self._load(model.backing)  # its composing models load with it
        if not self._is_ready(model.backing):
            raise RuntimeError(f"{model.backing} is not ready after loading")

    def unload(self, model: SwapModel) -> int:
        """Unload the ensemble and each step; wait for their stubs to exit.

        Returns the stubs' RSS from just before.
        """
        server = self._process(self.server_pid)
        names = set(model.steps)
        stubs_rss = self._stubs_rss(self._stubs(server), names)
        for name in model.steps:
            try:
                self._unload(name)
            except self.unload_errors as err:
                log.warning("unload %s: %s", name, err)
        deadline = self.clock() + UNLOAD_TIMEOUT_S
        while True:
            alive = [s.model for s in self._stubs(server).values() if s.model in names]
            ready = [name for name in model.steps if self._is_ready(name)]
            if not alive and not ready:
                return stubs_rss
            if self.clock() > deadline:
                raise RuntimeError(f"still loaded after {UNLOAD_TIMEOUT_S:g}s: {alive or ready}")
            self.sleep(UNLOAD_POLL_S)

    def _stubs_rss(self, stubs: dict[int, Stub], names: Iterable[str]) -> int:
        total = 0
        for pid, stub in stubs.items():
            if stub.model in names:
                try:
                    total += self._process(pid).memory_info().rss
                except psutil.Error:
                    pass
        return total

    def rss(self) -> int:
        return self._server_rss(self.server_pid)
