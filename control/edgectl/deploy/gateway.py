"""The local OpenAI-compatible gateway: a process beside tritonserver, like it recorded.

Started by ``deploy --local`` once Triton is ready, as ``python -m edgectl.cli openai
serve ...`` (the same command the chart runs) in its own process group; its pid and
address go to ``<workdir>/openai.json``.  ``edgectl status`` reads it back and
``edgectl stop`` ends the group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

from edgectl.config import OpenAIGatewayConfig
from edgectl.deploy.server import port_in_use
from edgectl.errors import EdgectlError

STATE_FILE = "openai.json"


@dataclass
class GatewayState:
    pid: int
    host: str
    port: int
    triton_grpc: str
    log_path: str
    started_at: float

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class LocalGateway:
    """The gateway of one work dir."""

    def __init__(
        self, config: OpenAIGatewayConfig, workdir: Path, stop_grace_s: float = 10
    ) -> None:
        self.config = config
        self.workdir = Path(workdir).resolve()
        self.state_path = self.workdir / STATE_FILE
        self.log_path = self.workdir / "logs" / "openai.log"
        self.stop_grace_s = stop_grace_s

    def command(self, triton_grpc: str) -> list[str]:
        c = self.config
        command = [
            sys.executable, "-m", "edgectl.cli", "openai", "serve", "--host", c.host,
            "--port", str(c.port), "--triton-grpc", triton_grpc,
            "--max-body-bytes", str(c.max_body_bytes),
        ]  # fmt: skip
        if c.api_key_env:
            command += ["--api-key-env", c.api_key_env]
        return command

    def read_state(self) -> GatewayState | None:
        try:
            return GatewayState(**json.loads(self.state_path.read_text(encoding="utf-8")))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def running(self) -> GatewayState | None:
        state = self.read_state()
        if state is None:
            return None
        try:
            proc = psutil.Process(state.pid)
            if proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= state.started_at:
                return state
        except psutil.Error:
            pass
        return None

    def start(self, triton_grpc: str, progress=lambda message: None) -> GatewayState:
        c = self.config
        self.stop()  # a stale gateway of this work dir
        if port_in_use(c.host, c.port):
            raise EdgectlError(
                f"openai.port={c.port} is already in use on {c.host}; free it or pick another "
                "with --set openai.port=PORT (or --set openai.enabled=false)"
            )
        if c.api_key_env and not os.environ.get(c.api_key_env):
            raise EdgectlError(f"openai.api_key_env={c.api_key_env}: that variable is not set")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - an argument list, never a shell
                self.command(triton_grpc), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.workdir, start_new_session=True,
            )  # fmt: skip
        state = GatewayState(
            pid=proc.pid, host=c.host, port=c.port, triton_grpc=triton_grpc,
            log_path=str(self.log_path), started_at=time.time(),
        )  # fmt: skip
        self.state_path.write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
        progress(f"openai gateway pid {proc.pid}; waiting for {state.url}/health/ready")
        try:
            self._wait_ready(proc, state)
        except BaseException:
            self.stop()
            raise
        return state

    def _wait_ready(self, proc: subprocess.Popen, state: GatewayState) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise EdgectlError(
                        f"the openai gateway exited with code {proc.returncode}:\n"
                        + self.log_tail()
                    )
                try:
                    if client.get(f"{state.url}/health/ready").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        raise EdgectlError(
            f"the openai gateway was not ready within openai.ready_timeout_s="
            f"{self.config.ready_timeout_s:g}s; it was stopped.\n" + self.log_tail()
        )

    def log_tail(self, lines: int = 15) -> str:
        if not self.log_path.is_file():
            return "(no gateway log)"
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> bool:
        """End the gateway's process group; False when none was running."""
        state = self.running()
        self.state_path.unlink(missing_ok=True)
        if state is None:
            return False
        try:
            os.killpg(state.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return False
        try:
            proc = psutil.Process(state.pid)
            proc.wait(timeout=self.stop_grace_s)
        except psutil.TimeoutExpired:
            os.killpg(state.pid, signal.SIGKILL)
        except psutil.Error:
            pass
        return True
