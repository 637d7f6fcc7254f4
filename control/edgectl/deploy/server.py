"""The local tritonserver process: start, readiness, status, stop and clean-up.

The server is the real Triton 2.51 binary inside the ``nvidia-pytriton`` wheel.
Triton's Python stub finds ``python3`` on ``PATH`` (PYTHONPATH is ignored), so
the venv's ``bin`` goes first; the stub for this interpreter is copied into a
backend directory under the work dir (the installed wheel is never modified).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from importlib import util as import_util
from pathlib import Path

import httpx
import psutil

from edgectl.config import ServerConfig
from edgectl.deploy.supervisor import LaunchSpec, SupervisorStatus
from edgectl.errors import EdgectlError
from edgectl.runtime.processes import clean_stale_shm

STATE_FILE = "server.json"


@dataclass
class ServerState:
    pid: int
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    repository: str
    models: list[str]
    log_path: str
    started_at: float
    supervisor_pid: int = 0  # leader of the process group: supervisor, tritonserver, stubs

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"


def pytriton_root() -> Path:
    spec = import_util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise EdgectlError(
            "tritonserver not found: install nvidia-pytriton==0.7.0 (make demo does)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class LocalTriton:
    """One tritonserver per work dir; its state lives in ``<workdir>/server.json``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.workdir = Path(config.workdir).resolve()
        self.state_path = self.workdir / STATE_FILE
        self.backend_dir = self.workdir / "backends"
        self.log_dir = self.workdir / "logs"
        self.launch_path = self.workdir / "launch.json"
        self.supervisor_path = self.workdir / "supervisor.json"

    # -- files ---------------------------------------------------------------
    def read_state(self) -> ServerState | None:
        if not self.state_path.is_file():
            return None
        try:
            return ServerState(**json.loads(self.state_path.read_text(encoding="utf-8")))
        except (ValueError, TypeError):
            return None

    def _prepare_backend(self) -> Path:
        root = pytriton_root() / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise EdgectlError(
                f"no Triton Python stub for Python {version} in {stub.parent.parent}"
            )
        python_dir = self.backend_dir / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        for source in (
            root / "backends" / "python" / "libtriton_python.so",
            root / "backends" / "python" / "triton_python_backend_utils.py",
            stub,
        ):
            target = python_dir / source.name
            if not target.exists() or target.stat().st_size != source.stat().st_size:
                shutil.copy2(source, target)
        return root / "bin" / "tritonserver"

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        lib_dirs = [str(pytriton_root().parent / "nvidia_pytriton.libs")]
        libdir = sysconfig.get_config_var("LIBDIR")
        if (
            libdir
            and Path(
                libdir, f"libpython{sys.version_info.major}.{sys.version_info.minor}.so"
            ).exists()
        ):
            lib_dirs.insert(0, libdir)  # the stub must embed this interpreter's libpython
        if env.get("LD_LIBRARY_PATH"):
            lib_dirs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_dirs)
        return env

    def command(self, binary: Path, repository: Path, models: list[str]) -> list[str]:
        c = self.config
        command = [
            str(binary),
            f"--model-repository={repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={self.backend_dir}",
            f"--http-address={c.host}", f"--http-port={c.http_port}",
            f"--grpc-address={c.host}", f"--grpc-port={c.grpc_port}",
            f"--metrics-address={c.host}", f"--metrics-port={c.metrics_port}",
            "--allow-metrics=true", "--allow-gpu-metrics=false", "--allow-cpu-metrics=true",
            "--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0",
            f"--exit-timeout-secs={max(1, int(c.stop_grace_s) - 2)}",
            f"--log-verbose={c.log_verbose}",
        ]  # fmt: skip
        command += [f"--load-model={name}" for name in models]
        return command

    # -- lifecycle -------------------------------------------------------------
    def running(self) -> ServerState | None:
        """The recorded server if its process is still alive."""
        state = self.read_state()
        if state is None:
            return None
        status = self.supervisor_status()
        if status is not None and status.triton_pid and status.triton_pid != state.pid:
            state.pid = status.triton_pid  # the supervisor restarted the server
        try:
            proc = psutil.Process(state.pid)
            if proc.status() != psutil.STATUS_ZOMBIE and "tritonserver" in proc.name():
                return state
        except psutil.Error:
            pass
        return None

    def refuse_if_running(self) -> None:
        """A second server on the same work dir would overwrite the first one's state."""
        current = self.running()
        if current is not None:
            raise EdgectlError(
                f"a server is already running (pid {current.pid}, http {current.http_url}); "
                "run `edgectl stop` first"
            )

    def start(
        self, repository: Path, models: list[str], progress=lambda message: None
    ) -> ServerState:
        c = self.config
        self.refuse_if_running()
        self._cleanup(None)  # stale state from a crash
        for name, port in (
            ("http_port", c.http_port),
            ("grpc_port", c.grpc_port),
            ("metrics_port", c.metrics_port),
        ):
            if port_in_use(c.host, port):
                raise EdgectlError(
                    f"server.{name}={port} is already in use on {c.host}; "
                    f"free it or pick another with --set server.{name}=PORT"
                )
        binary = self._prepare_backend()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / "tritonserver.log"
        with log_path.open("ab") as log:
            log.write(f"\n==== edgectl start {time.strftime('%Y-%m-%dT%H:%M:%S')} ====\n".encode())
        self.supervisor_path.unlink(missing_ok=True)
        spec = LaunchSpec(
            command=self.command(binary, repository.resolve(), models),
            env=self._environment(),
            cwd=str(self.workdir),
            log_path=str(log_path),
            http_url=f"http://{c.host}:{c.http_port}",
            status_path=str(self.supervisor_path),
            on_stub_crash=c.on_stub_crash,
        )
        self.launch_path.write_text(json.dumps(asdict(spec), indent=2), encoding="utf-8")
        with (self.log_dir / "supervisor.log").open("ab") as log:
            supervisor = subprocess.Popen(  # noqa: S603 - an argument list, never a shell
                [sys.executable, "-m", "edgectl.deploy.supervisor", str(self.launch_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=spec.env, cwd=self.workdir, start_new_session=True,
            )  # fmt: skip
        state = ServerState(
            pid=self._wait_for_triton_pid(supervisor), host=c.host, http_port=c.http_port,
            grpc_port=c.grpc_port, metrics_port=c.metrics_port,
            repository=str(repository.resolve()), models=models, log_path=str(log_path),
            started_at=time.time(), supervisor_pid=supervisor.pid,
        )  # fmt: skip
        self.state_path.write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
        progress(
            f"tritonserver pid {state.pid}; waiting up to {c.ready_timeout_s:g}s for readiness"
        )
        try:
            self._wait_ready(supervisor, state)
        except BaseException:
            self.stop()
            raise
        return state

    def _wait_for_triton_pid(self, supervisor: subprocess.Popen) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = self.supervisor_status()
            if status is not None and status.triton_pid:
                return status.triton_pid
            if supervisor.poll() is not None:
                break
            time.sleep(0.05)
        self._terminate_group(supervisor.pid)
        raise EdgectlError(
            "the edgectl supervisor did not start tritonserver; see "
            f"{self.log_dir / 'supervisor.log'}"
        )

    def supervisor_status(self) -> SupervisorStatus | None:
        try:
            data = json.loads(self.supervisor_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return SupervisorStatus(**data)

    def _wait_ready(self, proc: subprocess.Popen, state: ServerState) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        with httpx.Client(base_url=state.http_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    status = self.supervisor_status()
                    how = status.exit if status and status.exit else "exited"
                    raise EdgectlError(
                        f"tritonserver {how} while starting:\n" + self.log_tail(state)
                    )
                try:
                    if client.get("/v2/health/ready").status_code == 200 and all(
                        client.get(f"/v2/models/{name}/ready").status_code == 200
                        for name in state.models
                    ):
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.25)
        raise EdgectlError(
            f"tritonserver was not ready within server.ready_timeout_s="
            f"{self.config.ready_timeout_s:g}s (a model load may hang); it was stopped.\n"
            + self.log_tail(state)
        )

    def down_reason(self, state: ServerState) -> str:
        """Why a recorded server is not running, as far as its supervisor saw it."""
        status = self.supervisor_status()
        if status is not None and status.exit:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status.exited_at or 0))
            return f"tritonserver (pid {state.pid}) {status.exit} at {when}"
        return f"tritonserver (pid {state.pid}) is gone (its supervisor is gone too)"

    def recovery_summary(self) -> list[str]:
        """One line per model whose crashed stub the supervisor restarted."""
        status = self.supervisor_status()
        if status is None:
            return []
        lines = []
        for model, count in sorted(status.restarts.items()):
            took = status.last_restart.get(model)
            took_text = f"{took}s" if took is not None else "in progress"
            what = "tritonserver restarted" if model == "server" else f"{model}: stub restarted"
            lines.append(f"{what} {count}x (last recovery {took_text})")
        return lines

    def log_tail(self, state: ServerState | None = None, lines: int = 25) -> str:
        path = Path(state.log_path) if state else self.log_dir / "tritonserver.log"
        if not path.is_file():
            return "(no server log)"
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> bool:
        """Stop the server and its stubs; False when nothing was running."""
        state = self.read_state()
        was_running = self.running() is not None
        self._cleanup(state)
        return was_running

    def _cleanup(self, state: ServerState | None) -> None:
        if state is not None:
            self._terminate_group(state.supervisor_pid)
        self._kill_orphan_stubs()
        clean_stale_shm()
        self.state_path.unlink(missing_ok=True)

    def _terminate_group(self, pgid: int) -> None:
        """SIGTERM the group we created (supervisor, server, stubs), SIGKILL what outlives it.

        Open streams can keep Triton alive past its own exit timeout, so the
        SIGKILL is not optional.  The group is found by id, so a server whose
        supervisor already died is still stopped.
        """
        if pgid <= 1 or pgid == os.getpgid(0):
            return  # never signal our own group
        members = [p for p in psutil.process_iter() if _pgid(p) == pgid]
        for proc in members:
            _signal(proc, signal.SIGTERM)
        _, alive = psutil.wait_procs(members, timeout=self.config.stop_grace_s)
        for proc in alive:
            _signal(proc, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)

    def _kill_orphan_stubs(self) -> None:
        """Stubs of this work dir's backend that outlived their server (parent gone)."""
        stub_path = str(self.backend_dir / "python" / "triton_python_backend_stub")
        orphans = []
        for proc in psutil.process_iter(["exe", "cmdline"]):
            try:
                exe = proc.info.get("exe") or ""
                cmd = proc.info.get("cmdline") or []
                if exe == stub_path or (cmd and cmd[0] == stub_path):
                    orphans.append(proc)
            except psutil.Error:
                continue
        for proc in orphans:
            _signal(proc, signal.SIGKILL)
        psutil.wait_procs(orphans, timeout=5)


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except (ProcessLookupError, PermissionError):
        return None


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    try:
        proc.send_signal(sig)
    except psutil.Error:
        pass
