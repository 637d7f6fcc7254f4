"""Processes of a running tritonserver: its Python stubs, their memory and shared-memory regions.

The stubs hold the models (tokenizer, OpenVINO engine, KV cache), so the server's own
RSS alone would miss most of it; they are the server's child processes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import psutil

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"
STUB_NAME = "triton_python_backend_stub"


def server_processes(pid: int) -> list[psutil.Process]:
    """The server and its descendants (the Python stubs)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def server_rss_bytes(pid: int) -> int:
    """Summed resident set size; 0 when the server is gone."""
    total = 0
    for proc in server_processes(pid):
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


class RssSampler:
    """Samples a server's RSS in a background thread; use as a context manager."""

    def __init__(self, pid: int | None, interval_s: float = 0.5) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            if self.pid is not None:
                rss = server_rss_bytes(self.pid)
                if rss:
                    self.samples.append(rss)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float | None:
        return max(self.samples) / 2**20 if self.samples else None


@dataclass(frozen=True)
class Stub:
    model: str
    shm_region: str


def live_stubs(server: psutil.Process) -> dict[int, Stub]:
    """Python stubs of ``server`` by pid, with their model and shared-memory region.

    A stub runs ``<stub> <repo>/<model>/<version>/model.py <shm region> ...``.
    """
    stubs: dict[int, Stub] = {}
    for child in server.children(recursive=True):
        try:
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        if len(cmdline) > 2 and cmdline[0].endswith(STUB_NAME):
            stubs[child.pid] = Stub(Path(cmdline[1]).parent.parent.name, cmdline[2])
    return stubs


def _shm_in_use() -> set[str]:
    """/dev/shm files some live process still maps or holds open."""
    used: set[str] = set()
    for proc in psutil.process_iter():
        try:
            for mapping in proc.memory_maps(grouped=True):
                if mapping.path.startswith(str(SHM_DIR)):
                    used.add(mapping.path)
            for handle in proc.open_files():
                if handle.path.startswith(str(SHM_DIR)):
                    used.add(handle.path)
        except (psutil.Error, OSError):
            continue
    return used


def clean_stale_shm() -> list[str]:
    """Remove Python-backend shared-memory regions that no process uses (crashed stubs)."""
    candidates = sorted(SHM_DIR.glob(SHM_PREFIX + "*"))
    if not candidates:
        return []
    in_use = _shm_in_use()
    removed = []
    for path in candidates:
        if str(path) not in in_use:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
