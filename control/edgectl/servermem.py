"""Memory of a running tritonserver: RSS of the server plus its Python stub processes.

The stubs hold the models (tokenizer, OpenVINO engine, KV cache), so the server's own
RSS alone would miss most of it; they are the server's child processes.
"""

from __future__ import annotations

import threading

import psutil


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
