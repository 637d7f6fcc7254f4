"""Faults on the real stack: a crashed engine stub is restarted, a killed server is explained."""

from __future__ import annotations

import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from edgectl.client import GenerateRequest
from edgectl.config import EdgectlConfig
from edgectl.deploy.local import deploy_local
from edgectl.deploy.server import LocalTriton
from edgectl.errors import EdgectlError
from tests.e2e.conftest import LiveServer, running_server, server_config
from tests.e2e.test_lifecycle import shm_regions, stub_processes

pytestmark = pytest.mark.e2e
QUESTION = GenerateRequest("What is the capital of France?", 16, apply_chat_template=True)


@pytest.fixture(scope="module")
def fault_config(built_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> EdgectlConfig:
    return server_config(tmp_path_factory.mktemp("faults"), built_artifact)


@pytest.fixture(scope="module")
def fault_server(fault_config: EdgectlConfig) -> Iterator[LiveServer]:
    with running_server(fault_config) as live:
        yield live


def engine_stub(workdir: Path, model: str = "tensorrt_llm") -> psutil.Process:
    stubs = [p for p in stub_processes(workdir) if f"/{model}/" in p.cmdline()[1]]
    assert len(stubs) == 1, stubs
    return stubs[0]


def answers(server: LiveServer) -> bool:
    try:
        return "Paris" in "".join(server.client.generate("ensemble", QUESTION, "grpc"))
    except EdgectlError:
        return False


def test_a_user_unload_is_not_mistaken_for_a_crash(fault_server: LiveServer) -> None:
    # The step is unloaded by name as well: after a supervisor reload (the crash test) it
    # is loaded explicitly, and unloading the ensemble no longer takes it along.
    client = fault_server.client
    client.unload_model("ensemble")
    client.unload_model("tensorrt_llm")
    time.sleep(1.5)  # three supervisor polls
    states = {m["name"]: m.get("state") for m in client.list_models()}
    assert states["tensorrt_llm"] == "UNAVAILABLE"
    client.load_model("ensemble")
    assert answers(fault_server)


def test_a_model_that_fails_to_load_leaves_the_others_serving(fault_server: LiveServer) -> None:
    repository = Path(fault_server.state.repository)
    broken = repository / "broken_engine"
    shutil.copytree(repository / "tensorrt_llm", broken)
    config = (broken / "config.pbtxt").read_text(encoding="utf-8")
    config = config.replace('name: "tensorrt_llm"', 'name: "broken_engine"')
    config = re.sub(r'(key: "model_dir" value: \{ string_value: ")[^"]*', r"\1/nonexistent", config)
    (broken / "config.pbtxt").write_text(config, encoding="utf-8")
    with pytest.raises(EdgectlError, match="not a built CPU engine artifact: missing"):
        fault_server.client.load_model("broken_engine")
    assert answers(fault_server)


def test_a_killed_engine_stub_serves_again_within_ten_seconds(fault_server: LiveServer) -> None:
    workdir = Path(fault_server.config.server.workdir)
    assert answers(fault_server)
    engine_stub(workdir).send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    while not answers(fault_server):
        assert time.monotonic() - killed_at < 10, "the model did not serve again within 10 s"
        time.sleep(0.2)
    recovery = LocalTriton(fault_server.config.server).recovery_summary()
    assert recovery and recovery[0].startswith("tensorrt_llm: stub restarted 1x")


def test_a_killed_engine_stub_behind_the_unary_fronts_serves_again(
    unary_server: LiveServer,
) -> None:
    """Unary mode: the decoupled engine is restarted and the fronts forward to it again."""
    assert answers(unary_server)
    workdir = Path(unary_server.config.server.workdir)
    engine_stub(workdir, unary_server.engine_model).send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    # The server is shared: wait until it serves again before judging the time it took.
    while True:
        attempt = time.monotonic()
        if answers(unary_server) or attempt - killed_at > 60:
            break
        time.sleep(0.2)
    assert attempt - killed_at < 10, "the model did not serve again within 10 s"
    recovery = LocalTriton(unary_server.config.server).recovery_summary()
    assert recovery and recovery[0].startswith("tensorrt_llm_decoupled: stub restarted 1x")


def test_a_killed_server_is_reported_and_redeploys_cleanly(
    fault_server: LiveServer, fault_config: EdgectlConfig
) -> None:
    server = LocalTriton(fault_config.server)
    shm_before = shm_regions()
    psutil.Process(fault_server.state.pid).send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while server.running() is not None or "SIGKILL" not in server.down_reason(server.read_state()):
        assert time.monotonic() < deadline, "the server kill was not noticed"
        time.sleep(0.2)
    assert "killed by SIGKILL" in server.down_reason(server.read_state())
    state = deploy_local(fault_config, progress=lambda message: None)
    assert state.pid != fault_server.state.pid
    assert answers(LiveServer(fault_config, state))
    assert server.stop()
    assert not stub_processes(Path(fault_config.server.workdir))
    assert shm_regions() <= shm_before


@pytest.fixture(scope="module")
def restarting_server(
    built_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    config = server_config(tmp_path_factory.mktemp("restart"), built_artifact)
    config.server.on_stub_crash = "restart"
    with running_server(config) as live:
        yield live


def test_restart_policy_fails_in_flight_requests_at_once(restarting_server: LiveServer) -> None:
    server = LocalTriton(restarting_server.config.server)
    outcome: dict = {}

    def long_stream() -> None:
        request = GenerateRequest("Tell me a long story.", 250, stream=True, end_id=49151)
        try:
            for _ in restarting_server.client.generate("ensemble", request, "grpc"):
                outcome.setdefault("streaming", time.monotonic())
            outcome["result"] = "completed"
        except EdgectlError as err:
            outcome["result"] = str(err)
        outcome["ended"] = time.monotonic()

    thread = threading.Thread(target=long_stream)
    thread.start()
    deadline = time.monotonic() + 30
    while "streaming" not in outcome:
        assert time.monotonic() < deadline, "the stream never started"
        time.sleep(0.05)
    engine_stub(Path(restarting_server.config.server.workdir)).send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    thread.join(timeout=30)
    assert outcome["result"] != "completed"
    assert "within client.timeout_s" not in outcome["result"]  # an error, not a timeout
    assert outcome["ended"] - killed_at < 5
    state = server.running()
    deadline = killed_at + 30
    while state is None or not answers(LiveServer(restarting_server.config, state)):
        assert time.monotonic() < deadline, "the server did not come back"
        time.sleep(0.2)
        state = server.running()
    assert state.pid != restarting_server.state.pid
    assert server.recovery_summary()[0].startswith("tritonserver restarted 1x")
