"""Measuring co-resident time-slicing from outside: load loops, device time, tokens.

Achieved shares are measured two ways: the slot board's own accounting (how long each
engine held the device) and, independently, the CPU time the OS charged to each engine
step's stub process (OpenVINO's worker threads included).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

import httpx
import psutil

from edgectl.client import GenerateRequest, TritonClient
from edgectl.deploy.server import ServerState
from edgectl.errors import EdgectlError
from edgectl.runtime.processes import server_processes
from edgectl.runtime.slots import SlotBoard

_STUB_MODEL = re.compile(r"/([^/]+)/\d+/model\.py$")


def stub_processes(pid: int) -> dict[str, list[psutil.Process]]:
    """The server's Python stubs, keyed by the model (folder) each one runs."""
    stubs: dict[str, list[psutil.Process]] = {}
    for proc in server_processes(pid)[1:]:
        try:
            args = proc.cmdline()[1:2]
        except psutil.Error:
            continue
        for arg in args:
            match = _STUB_MODEL.search(arg)
            if match:
                stubs.setdefault(match[1], []).append(proc)
    return stubs


def cpu_seconds(pid: int, models: list[str]) -> dict[str, float]:
    """User + system CPU seconds of each named model's stub(s) so far."""
    stubs = stub_processes(pid)
    seconds = {}
    for model in models:
        total = 0.0
        for proc in stubs.get(model, []):
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        seconds[model] = total
    return seconds


def board_busy_seconds(board_directory) -> dict[str, float]:
    """Device seconds each engine held according to the slot board ({} when no policy)."""
    snapshot = SlotBoard(board_directory).snapshot()
    if snapshot is None:
        return {}
    busy = {name: entry["busy_s"] for name, entry in snapshot["models"].items()}
    if snapshot["holder"] is not None:  # the slot in progress counts up to now
        busy[snapshot["holder"]] += max(0.0, snapshot["now"] - snapshot["slot_start"])
    return busy


def engine_counter(state: ServerState, name: str) -> dict[str, float]:
    """One ``edgectl_engine_*`` counter per engine step from Triton's /metrics."""
    url = f"http://{state.host}:{state.metrics_port}/metrics"
    try:
        text = httpx.get(url, timeout=10).text
    except httpx.HTTPError as err:
        raise EdgectlError(f"cannot read {url}: {err}") from None
    pattern = re.compile(rf'^{re.escape(name)}\{{model="([^"]+)"\}} (\S+)$')
    return {m[1]: float(m[2]) for m in map(pattern.match, text.splitlines()) if m}


@dataclass
class LoadLoop:
    """``concurrency`` clients that each send ``request`` to ``model`` back to back.

    Client starts are staggered by ``stagger_s`` so equal-length requests do not all end
    in the same step: otherwise the engine is briefly without work after every round
    (and, work-conserving, lends its slot away), so the model is not saturated.
    """

    client: TritonClient
    model: str
    request: GenerateRequest
    concurrency: int
    stagger_s: float = 0.15
    completed: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, delay: float) -> None:
        if self._stop.wait(delay):
            return
        while not self._stop.is_set():
            try:
                for _ in self.client.generate(self.model, self.request, "grpc"):
                    pass
            except EdgectlError as err:
                with self._lock:
                    self.failures.append(str(err))
                time.sleep(0.05)
                continue
            with self._lock:
                self.completed += 1

    def start(self) -> LoadLoop:
        for index in range(self.concurrency):
            thread = threading.Thread(
                target=self._run, args=(index * self.stagger_s,), name=f"load-{self.model}-{index}"
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 120.0) -> None:
        """Stop sending; requests in flight finish (they are not counted as failures)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
