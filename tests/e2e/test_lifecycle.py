"""The control plane on the real stack: the CLI end to end, start/stop hygiene, failures."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from edgectl.config import EdgectlConfig
from edgectl.deploy.server import LocalTriton
from edgectl.errors import EdgectlError
from edgectl.runtime.processes import SHM_DIR, SHM_PREFIX
from tests.e2e.conftest import server_config

pytestmark = pytest.mark.e2e
EDGECTL = [sys.executable, "-m", "edgectl.cli"]


def shm_regions() -> set[str]:
    return {path.name for path in SHM_DIR.glob(SHM_PREFIX + "*")}


def stub_processes(workdir: Path) -> list[psutil.Process]:
    stub = str(workdir.resolve() / "backends" / "python" / "triton_python_backend_stub")
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if cmdline and cmdline[0] == stub:
            found.append(proc)
    return found


class Cli:
    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [*EDGECTL, "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=240,
            env={**os.environ, "NO_COLOR": "1"},
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result


@pytest.fixture(scope="module")
def cli_config(built_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> EdgectlConfig:
    return server_config(tmp_path_factory.mktemp("cli"), built_artifact)


@pytest.fixture(scope="module")
def cli(cli_config: EdgectlConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    path = tmp_path_factory.mktemp("cli-config") / "edgectl.yaml"
    path.write_text(yaml.safe_dump(cli_config.model_dump(mode="json")), encoding="utf-8")
    shm_before = shm_regions()
    runner = Cli(path)
    deployed = runner("deploy")
    assert "serving ensemble" in deployed.stdout
    try:
        yield runner
    finally:
        LocalTriton(cli_config.server).stop()
        assert shm_regions() <= shm_before


def test_cli_generate_streams_the_answer(cli: Cli) -> None:
    result = cli("generate", "--stream", "--max-tokens", "32", "What is the capital of France?")
    assert "Paris" in result.stdout
    http = cli(
        "generate", "--protocol", "http", "--max-tokens", "32", "What is the capital of France?"
    )
    assert "Paris" in http.stdout


def test_cli_reports_bad_input_without_a_traceback(cli: Cli) -> None:
    result = cli("generate", "--top-p", "2", "Hello", check=False)
    assert result.returncode == 1
    assert "top_p must be in (0, 1]" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_models_unload_and_load(cli: Cli) -> None:
    listed = cli("models", "list").stdout
    assert "ensemble\t1\tREADY" in listed and "tensorrt_llm\t1\tREADY" in listed
    cli("models", "unload", "ensemble")
    after_unload = cli("models", "list").stdout
    assert "ensemble\t1\tUNAVAILABLE" in after_unload
    assert "tensorrt_llm\t1\tUNAVAILABLE" in after_unload  # dependents unloaded too
    cli("models", "load", "ensemble")
    assert "Paris" in cli("generate", "What is the capital of France?").stdout


def test_cli_status_and_second_deploy(cli: Cli) -> None:
    status = cli("status").stdout
    assert "server: up" in status and "ensemble: READY" in status
    again = cli("deploy", check=False)
    assert again.returncode == 1 and "already running" in again.stderr


def test_cli_stop_leaves_nothing_behind(cli: Cli, cli_config: EdgectlConfig) -> None:
    workdir = Path(cli_config.server.workdir)
    pid = LocalTriton(cli_config.server).read_state().pid
    assert stub_processes(workdir)
    assert "server stopped" in cli("stop").stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not stub_processes(workdir)
    assert "no server was running" in cli("stop").stdout
    down = cli("status", check=False)
    assert down.returncode == 3 and "server: down" in down.stdout


def test_port_in_use_is_named(built_artifact: Path, tmp_path: Path) -> None:
    config = server_config(tmp_path, built_artifact)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", config.server.grpc_port))
        busy.listen()
        with pytest.raises(EdgectlError, match=r"server\.grpc_port=\d+ is already in use"):
            LocalTriton(config.server).start(tmp_path, ["ensemble"])
    assert LocalTriton(config.server).running() is None


SLEEPY_CONFIG = """
name: "sleepy"
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""
SLEEPY_MODEL = """
import time


class TritonPythonModel:
    def initialize(self, args):
        time.sleep(600)
"""


def test_hung_model_load_times_out_and_cleans_up(built_artifact: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    (repository / "sleepy" / "1").mkdir(parents=True)
    (repository / "sleepy" / "config.pbtxt").write_text(SLEEPY_CONFIG, encoding="utf-8")
    (repository / "sleepy" / "1" / "model.py").write_text(SLEEPY_MODEL, encoding="utf-8")
    config = server_config(tmp_path / "work", built_artifact)
    config.server.ready_timeout_s = 8
    server = LocalTriton(config.server)
    with pytest.raises(EdgectlError, match=r"not ready within server\.ready_timeout_s=8s"):
        server.start(repository, ["sleepy"])
    assert server.running() is None
    assert not stub_processes(Path(config.server.workdir))
