"""The local server's supervisor: the parent of tritonserver, restarter of crashed stubs.

Run as ``python -m edgectl.deploy.supervisor LAUNCH_JSON`` by ``LocalTriton.start``.  It
starts tritonserver as its child, so it learns how the server ended (exit code or
signal) and records that for ``edgectl status``.  Triton does not restart the
Python stub of a decoupled model that dies; the supervisor notices a READY model
whose stub vanished and reloads that model through the repository API.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psutil

from edgectl.runtime.files import write_json_atomic
from edgectl.runtime.processes import SHM_DIR, Stub, clean_stale_shm, live_stubs

POLL_S = 0.5


@dataclass
class LaunchSpec:
    """Everything the supervisor needs, written by LocalTriton.start."""

    command: list[str]
    env: dict[str, str]
    cwd: str
    log_path: str
    http_url: str
    status_path: str  # where the supervisor reports (SupervisorStatus)
    on_stub_crash: str = "reload"  # "reload" the model, or "restart" the whole server


@dataclass
class SupervisorStatus:
    triton_pid: int | None = None
    exit: str | None = None  # how tritonserver ended when nobody asked it to
    exited_at: float | None = None
    restarts: dict[str, int] = field(default_factory=dict)
    last_restart: dict[str, float] = field(default_factory=dict)  # model -> seconds to recover


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class Supervisor:
    def __init__(self, spec: LaunchSpec) -> None:
        self.spec = spec
        self.status = SupervisorStatus()
        self.stopping = False
        self.seen: dict[int, Stub] = {}
        self.suspects: dict[int, tuple[Stub, int]] = {}  # vanished stub -> polls since
        self._restart_started: float | None = None

    def write_status(self) -> None:
        write_json_atomic(Path(self.spec.status_path), asdict(self.status))

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        while True:
            proc = self._spawn()
            if not self._watch(proc):
                break
            self._restart_server(proc)
        if not self.stopping:
            self.status.exit = describe_exit(proc.returncode)
            self.status.exited_at = time.time()
            self.write_status()
        return 0

    def _spawn(self) -> subprocess.Popen:
        with open(self.spec.log_path, "ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - an argument list, never a shell
                self.spec.command, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self.spec.env, cwd=self.spec.cwd,
            )  # fmt: skip
        self.status.triton_pid = proc.pid
        self.write_status()
        self.seen, self.suspects = {}, {}
        return proc

    def _watch(self, proc: subprocess.Popen) -> bool:
        """Watch until the server exits (False) or must be restarted (True)."""
        server = psutil.Process(proc.pid)
        with httpx.Client(base_url=self.spec.http_url, timeout=30.0) as client:
            while proc.poll() is None:
                if not self.stopping:
                    crashed = self._crashed_models(server, client)
                    if crashed and self.spec.on_stub_crash == "restart":
                        return True
                    for model in crashed:
                        self._reload(model, client)
                time.sleep(POLL_S)
        return False

    def _restart_server(self, proc: subprocess.Popen) -> None:
        """Kill the server and its stubs and start it again.

        Requests in flight on a dead stub never get an answer from Triton; dropping
        their connections turns that hang into an immediate error for the client.
        """

        started = time.monotonic()
        print(f"{time.strftime('%H:%M:%S')} a stub died; restarting tritonserver", flush=True)
        members = [psutil.Process(proc.pid)]
        try:
            members += members[0].children(recursive=True)
        except psutil.Error:
            pass
        for member in members:
            try:
                member.kill()
            except psutil.Error:
                pass
        proc.wait()
        psutil.wait_procs(members, timeout=10)
        clean_stale_shm()
        self.status.restarts["server"] = self.status.restarts.get("server", 0) + 1
        self._restart_started = started

    def _on_ready(self, client: httpx.Client) -> None:
        """Record how long a server restart took, once the new server is ready."""
        started = self._restart_started
        if started is None:
            return
        try:
            ready = client.get("/v2/health/ready").status_code == 200
        except httpx.HTTPError:
            ready = False
        if ready:
            self.status.last_restart["server"] = round(time.monotonic() - started, 2)
            self._restart_started = None
            self.write_status()

    def _on_term(self, signum: int, frame: object) -> None:
        self.stopping = True  # the server gets the same signal from the group; wait for it

    def _ready_models(self, client: httpx.Client) -> set[str]:
        try:
            index = client.post("/v2/repository/index", json={}).json()
        except (httpx.HTTPError, ValueError):
            return set()
        return {m["name"] for m in index if m.get("state") == "READY"}

    def _crashed_models(self, server: psutil.Process, client: httpx.Client) -> set[str]:
        """READY models whose stub died: its shm region is left behind.

        When a user unloads a model, Triton finalizes the stub and removes its
        shared-memory region; a killed stub leaves the region in place and the
        model still READY (Triton does not notice until the next request).
        """
        self._on_ready(client)
        try:
            live = live_stubs(server)
        except psutil.Error:
            return set()
        for pid, stub in self.seen.items():
            if pid not in live:
                self.suspects[pid] = (stub, 0)
                kept = (SHM_DIR / stub.shm_region).exists()
                print(
                    f"{time.strftime('%H:%M:%S')} stub {pid} of {stub.model} exited "
                    f"(shm region {'kept' if kept else 'removed'})",
                    flush=True,
                )
        self.seen = live
        crashed: set[str] = set()
        for pid, (stub, polls) in list(self.suspects.items()):
            if not (SHM_DIR / stub.shm_region).exists():
                del self.suspects[pid]  # finalized: an unload, not a crash
            elif polls >= 1:
                del self.suspects[pid]
                crashed.add(stub.model)
            else:
                self.suspects[pid] = (stub, polls + 1)
        return crashed & self._ready_models(client) if crashed else set()

    def _reload(self, model: str, client: httpx.Client) -> None:
        started = time.monotonic()
        print(f"{time.strftime('%H:%M:%S')} stub of {model} died; reloading", flush=True)
        try:
            # Triton keeps the instances of a reloaded model whose config is unchanged, dead
            # stub included; a changed parameter makes it build a fresh instance and stub.
            config = client.get(f"/v2/models/{model}/config").json()
            config.setdefault("parameters", {})["edgectl_restarted_at"] = {
                "string_value": f"{time.time():.3f}"
            }
            response = client.post(
                f"/v2/repository/models/{model}/load",
                json={"parameters": {"config": json.dumps(config)}},
                timeout=120,
            )
            ok = response.status_code == 200
        except (httpx.HTTPError, ValueError):
            ok = False
        seconds = round(time.monotonic() - started, 2)
        print(f"{time.strftime('%H:%M:%S')} reload of {model}: ok={ok} in {seconds}s", flush=True)
        if ok:
            self.status.restarts[model] = self.status.restarts.get(model, 0) + 1
            self.status.last_restart[model] = seconds
            self.write_status()


def main() -> int:
    spec = LaunchSpec(**json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))
    return Supervisor(spec).run()


if __name__ == "__main__":
    sys.exit(main())
