"""Real tritonservers on free loopback ports, serving the embedded model.

One decoupled server (``live_server``) and one unary server (``unary_server``,
``engine.decoupled=false``) per session; a test that takes ``server`` runs against
both (ids ``decoupled`` and ``unary``). The unary server starts only when a test needs it.

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

    @property
    def decoupled(self) -> bool:
        return self.config.engine.decoupled

    @property
    def engine_model(self) -> str:
        """The model that runs the engine: behind the unary fronts it is the decoupled one."""
        return "tensorrt_llm" if self.decoupled else "tensorrt_llm_decoupled"

    def metric(self, name: str, model: str | None = None) -> float:
        """One sample from Triton's /metrics endpoint (engine metrics carry a model label)."""
        model = model or self.engine_model
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


@pytest.fixture(scope="session")
def unary_server(
    built_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    config = server_config(
        tmp_path_factory.mktemp("unary"), built_artifact, gateway=True, decoupled=False
    )
    with running_server(config) as live:
        yield live


BOTH_MODES = pytest.mark.parametrize("server", ["decoupled", "unary"], indirect=True)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> LiveServer:
    """The session server of the mode named by the param (``BOTH_MODES``)."""
    name = {"decoupled": "live_server", "unary": "unary_server"}[request.param]
    return request.getfixturevalue(name)


# The documented refusal of a streaming request by a unary deployment.
STREAMING_REFUSED = "streaming needs the decoupled deployment"
