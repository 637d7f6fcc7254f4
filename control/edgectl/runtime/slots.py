"""Co-resident time-slicing: one device, several engines, weighted slots, work-conserving.

Why not Triton's rate limiter alone: the engine steps are decoupled models whose
``execute`` only queues the request and returns, so the rate limiter (which holds a
resource only while ``execute`` runs) and request priority levels (which order
``execute`` calls) never see the generation itself.  The device time goes to whichever
engine's stepping thread runs, so the arbitration lives there.

Every CPU engine step of a served model asks a :class:`SlotGate` before each
``pipeline.step()``.  The gates of all engines share one small state file (a
:class:`SlotBoard`, under an exclusive ``flock``) in which the policy in force lists
each engine's share, slot length and priority.  The holder keeps the device for its
slot (``slot_ms``, overrun by at most one step); then the engine with the least
*virtual time* that has work gets the next slot (stride scheduling: holding the device
for ``t`` seconds advances an engine's virtual time by ``t / share``), so busy engines
get device time in proportion to their shares.  An engine with no work does not ask:
the others take its slots (work-conserving); when it has work again it starts from the
busy engines' virtual time, so idling banks no credit.  A holder that stops asking for
``STALE_S`` (crashed stub) loses the device.  No policy file, or an engine not named in
it, means no gate at all: one ``stat`` per step.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgectl.runtime.files import write_text_atomic

log = logging.getLogger(__name__)

STATE_FILE = "slots.json"
LOCK_FILE = "slots.lock"
STALE_S = 5.0  # a model that has not asked for this long (dead stub) is passed over
POLL_S = 0.002  # how often a waiting engine looks again (the slot holder is not slowed)
TOUCH_S = 1.0  # a holder re-announces itself this often (well inside STALE_S)
SEEN_EVERY_S = 0.5  # "seen" is refreshed at most this often: a poll alone writes nothing


@dataclass(frozen=True)
class SlotSpec:
    share: float
    slot_ms: int
    priority: int = 1


def new_state(policy: str, models: dict[str, SlotSpec], now: float) -> dict[str, Any]:
    """A fresh board for ``models`` (keyed by engine step name)."""
    return {
        "policy": policy,
        "created": now,
        "holder": None,
        "slot_start": 0.0,
        "slot_end": 0.0,
        "models": {
            name: {
                "share": spec.share,
                "slot_ms": spec.slot_ms,
                "priority": spec.priority,
                "vtime": 0.0,
                "wants": False,
                "seen": 0.0,
                "waiting_since": None,
                "busy_s": 0.0,
                "slots": 0,
                "waits": 0,
                "wait_s": 0.0,
                "max_wait_s": 0.0,
            }
            for name, spec in models.items()
        },
    }


def _fresh(entry: dict[str, Any], now: float) -> bool:
    return entry["wants"] and now - entry["seen"] <= STALE_S


def _release(state: dict[str, Any], now: float) -> None:
    """End the current slot: charge the holder for the time it held the device."""
    name = state["holder"]
    if name is None:
        return
    entry = state["models"][name]
    held = max(0.0, now - state["slot_start"])
    entry["busy_s"] += held
    entry["vtime"] += held / entry["share"]
    entry["slots"] += 1
    if entry["wants"]:
        entry["waiting_since"] = now
    state["holder"] = None


def arbitrate(state: dict[str, Any], name: str, now: float) -> float | None:
    """``name`` has work: the end of its slot if it may step now, else None (wait).

    Mutates ``state``; the caller holds the board's lock.
    """
    models = state["models"]
    me = models[name]
    if not me["wants"]:
        others = [m["vtime"] for n, m in models.items() if n != name and _fresh(m, now)]
        if others:  # no credit for the time spent idle
            me["vtime"] = max(me["vtime"], min(others))
        me["wants"] = True
        me["waiting_since"] = now
        me["seen"] = now
    elif now - me["seen"] >= SEEN_EVERY_S:
        me["seen"] = now
    holder = state["holder"]
    if holder == name and now < state["slot_end"]:
        return state["slot_end"]
    if holder is not None and (holder == name or not _fresh(models[holder], now)):
        _release(state, now)  # our slot is over, or the holder died
    if state["holder"] is not None:
        return None
    candidates = [n for n, m in models.items() if _fresh(m, now)]
    pick = min(candidates, key=lambda n: (models[n]["vtime"], models[n]["priority"], n))
    if pick != name:
        return None
    waited = now - (me["waiting_since"] if me["waiting_since"] is not None else now)
    if waited > 0:
        me["waits"] += 1
        me["wait_s"] += waited
        me["max_wait_s"] = max(me["max_wait_s"], waited)
    me["waiting_since"] = None
    state["holder"] = name
    state["slot_start"] = now
    state["slot_end"] = now + me["slot_ms"] / 1000.0
    return state["slot_end"]


def go_idle(state: dict[str, Any], name: str, now: float) -> None:
    """``name`` has no work left: it stops asking and hands back its slot."""
    me = state["models"][name]
    if state["holder"] == name:
        _release(state, now)
    me["wants"] = False
    me["waiting_since"] = None


class SlotBoard:
    """The shared state file; every read-modify-write happens under an exclusive flock."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.state_path = self.directory / STATE_FILE
        self.lock_path = self.directory / LOCK_FILE
        self.stamp: tuple[int, int] | None = None  # the state file as last left by us

    def current_stamp(self) -> tuple[int, int] | None:
        """Identity of the state file's current version (it is replaced on every write)."""
        try:
            info = os.stat(self.state_path)
        except FileNotFoundError:
            return None
        return info.st_ino, info.st_mtime_ns

    def active(self) -> bool:
        return self.state_path.is_file()

    @contextmanager
    def locked(self) -> Iterator[dict[str, Any] | None]:
        """The state (None when no policy is in force); changes are written back."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                text = self.state_path.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = None
            state = json.loads(text) if text else None
            yield state
            if state is not None:
                updated = json.dumps(state, separators=(",", ":"))
                if updated != text:
                    self._write(updated)
            self.stamp = self.current_stamp()
        finally:
            os.close(fd)  # releases the flock

    def _write(self, text: str) -> None:
        write_text_atomic(self.state_path, text)

    def install(self, policy: str, models: dict[str, SlotSpec]) -> None:
        """Put a policy in force (engines pick it up at their next step)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._write(json.dumps(new_state(policy, models, time.monotonic())))
        finally:
            os.close(fd)

    def remove(self) -> None:
        """No policy: every engine steps freely again."""
        if not self.directory.is_dir():
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.state_path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def snapshot(self) -> dict[str, Any] | None:
        """A copy of the state with ``now`` (monotonic) for computing ages."""
        with self.locked() as state:
            if state is None:
                return None
            return {**json.loads(json.dumps(state)), "now": time.monotonic()}


class SlotGate:
    """One engine's handle on the board (used only by its stepping thread)."""

    def __init__(
        self,
        directory: Path,
        name: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.board = SlotBoard(directory)
        self.name = name
        self._clock = clock
        self._sleep = sleep
        self._slot_end = 0.0  # while now < this, we hold the device: no file access ...
        self._touched = 0.0  # ... unless the board last heard from us TOUCH_S ago
        self._asking = False

    def acquire(self, stopping: Callable[[], bool] = lambda: False) -> bool:
        """Block until this engine may step; False only when ``stopping()`` turned true.

        A board that cannot be read fails open: the engine keeps serving without shares
        (a failed gate must not fail the requests in flight).
        """
        try:
            return self._acquire(stopping)
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("time-slicing board %s unusable; stepping ungated", self.board.directory,
                        exc_info=True)  # fmt: skip
            self._slot_end = self._clock() + 1.0  # look again in a second, not every step
            self._touched = self._clock()
            return True

    def _acquire(self, stopping: Callable[[], bool]) -> bool:
        now = self._clock()
        if now < self._slot_end and now - self._touched < TOUCH_S:
            return True
        self._slot_end = 0.0
        if not self.board.active():
            return True
        while not stopping():
            with self.board.locked() as state:
                if state is None or self.name not in state["models"]:
                    return True  # no policy (timeslice off) or not governed by it
                self._asking = True
                self._touched = self._clock()
                slot_end = arbitrate(state, self.name, self._touched)
                holder_end = state["slot_end"] if state["holder"] is not None else 0.0
            if slot_end is not None:
                self._slot_end = slot_end
                return True
            self._wait_for_change(holder_end, stopping)
        return False

    def _wait_for_change(self, holder_end: float, stopping: Callable[[], bool]) -> None:
        """Sleep until the board changes, the holder's slot ends, or we must re-announce.

        Only a ``stat`` per poll: a waiting engine costs next to no CPU.
        """
        stamp = self.board.stamp
        while not stopping():
            self._sleep(POLL_S)
            now = self._clock()
            if (
                now >= holder_end
                or now - self._touched >= TOUCH_S
                or self.board.current_stamp() != stamp
            ):
                return

    def counters(self) -> dict[str, float] | None:
        """This engine's slot accounting for the metrics endpoint (None: no policy names it)."""
        if not self.board.active():
            return None
        try:
            with self.board.locked() as state:
                if state is None or self.name not in state["models"]:
                    return None
                me = state["models"][self.name]
                busy = me["busy_s"]
                if state["holder"] == self.name:
                    busy += max(0.0, self._clock() - state["slot_start"])
                total = sum(m["share"] for m in state["models"].values())
                return {
                    "device_seconds": busy,
                    "slots": me["slots"],
                    "slot_waits": me["waits"],
                    "slot_wait_seconds": me["wait_s"],
                    "configured_share": me["share"] / total,
                }
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def idle(self) -> None:
        """No work: hand the slot to the others (cheap when already idle)."""
        if not self._asking:
            return
        self._asking = False
        self._slot_end = 0.0
        try:
            with self.board.locked() as state:
                if state is not None and self.name in state["models"]:
                    go_idle(state, self.name, self._clock())
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("could not hand back the slot on %s", self.board.directory, exc_info=True)
