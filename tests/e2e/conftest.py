"""One real tritonserver per test session, on free loopback ports, serving the embedded model.

The model is built once into the edgectl cache (``EDGECTL_CACHE`` or
``~/.cache/edgectl``) and reused by later runs and by ``make demo``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from edgectl.client import TritonClient
from edgectl.config import EdgectlConfig
from edgectl.deploy.local import deploy_local, stop_local
from edgectl.deploy.server import ServerState

MAX_INPUT_LEN = 256
MAX_OUTPUT_LEN = 256
UNUSED_END_ID = 49151  # a vocabulary id the model never emits: generation runs to max_tokens


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def server_config(
    workdir: Path, artifact: Path, gateway: bool = False, **engine: object
) -> EdgectlConfig:
    """Triton on free ports; with ``gateway`` also the OpenAI gateway on a free port."""
    http, grpc, metrics, openai = free_ports(4)
    return EdgectlConfig.model_validate(
        {
            "server": {
                "workdir": str(workdir),
                "http_port": http,
                "grpc_port": grpc,
                "metrics_port": metrics,
                "ready_timeout_s": 120,
                "stop_grace_s": 10,
            },
            "engine": {
                "max_input_len": MAX_INPUT_LEN,
                "max_output_len": MAX_OUTPUT_LEN,
                **engine,
            },
            "model": {"artifact": str(artifact)},
            "openai": {"enabled": gateway, "port": openai},
        }
    )


@dataclass
class LiveServer:
    config: EdgectlConfig
    state: ServerState

    @property
    def client(self) -> TritonClient:
        return TritonClient(self.state.http_url, self.state.grpc_url, timeout_s=60)

    def metric(self, name: str, model: str = "tensorrt_llm") -> float:
        """One sample from Triton's /metrics endpoint (engine metrics carry a model label)."""
        url = f"http://{self.state.host}:{self.state.metrics_port}/metrics"
        for line in httpx.get(url, timeout=10).text.splitlines():
            if line.startswith(f'{name}{{model="{model}"}}'):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"metric {name} for {model} not exported")


@contextmanager
def running_server(config: EdgectlConfig) -> Iterator[LiveServer]:
    """Deploy ``config`` on its own ports, yield the live server, always stop it."""
    state = deploy_local(config, progress=lambda message: None)
    try:
        yield LiveServer(config, state)
    finally:
        stop_local(config)


@pytest.fixture(scope="session")
def live_server(
    built_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with running_server(server_config(tmp_path_factory.mktemp("triton"), built_artifact)) as live:
        yield live
