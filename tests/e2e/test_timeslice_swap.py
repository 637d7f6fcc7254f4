"""Swap mode on the real tritonserver: two real models (SmolLM2 INT8 and INT4) under a
memory budget that fits one.  Requests for the swapped-out model wait and are served
after the swap; one that waits longer than ``swap.wait_timeout_s`` gets UNAVAILABLE and
the server keeps serving; an unload really returns the memory its stubs held."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgectl.build.builder import build
from edgectl.build.recipe import load_recipe
from edgectl.client import GenerateRequest, TritonClient
from edgectl.deploy.server import LocalTriton, ServerState
from edgectl.errors import EdgectlError
from edgectl.timeslice.policy import TimeslicePolicy
from edgectl.timeslice.swap import start_swap, stop_swap, swap_status
from tests.e2e.conftest import UNUSED_END_ID, server_config
from tests.paths import REPO_ROOT

INT4_RECIPE = REPO_ROOT / "build" / "smollm2-135m-int4.yaml"
# An unload must give back at least this fraction of the RSS the backing model's stubs
# held just before it.  When a process exits its whole RSS leaves the server's sum, so
# the drop is that amount give or take what the other processes (tritonserver, the
# fronts) allocate or free meanwhile: a few MB against ~0.3-0.5 GB of stubs.
RSS_FREED_FRACTION = 0.8


def policy(a: Path, b: Path, wait_timeout_s: float, min_resident_s: float) -> TimeslicePolicy:
    # memory_gb is set so that one model fits the 1.5 GB budget and two do not.
    return TimeslicePolicy.model_validate(
        {
            "name": "swap-test",
            "mode": "swap",
            "memory_budget_gb": 1.5,
            "swap": {"wait_timeout_s": wait_timeout_s, "min_resident_s": min_resident_s},
            "models": [
                {"name": "swap_a", "artifact": str(a), "share": 30, "memory_gb": 1.0},
                {"name": "swap_b", "artifact": str(b), "share": 70, "memory_gb": 1.0},
            ],
        }
    )


class SwapServer:
    def __init__(self, server: LocalTriton, state: ServerState, config, a: Path, b: Path):
        self.server, self.state, self.config, self.a, self.b = server, state, config, a, b
        self.client = TritonClient(state.http_url, state.grpc_url, timeout_s=90)

    @property
    def workdir(self) -> Path:
        return self.server.workdir

    def apply(self, wait_timeout_s: float, min_resident_s: float) -> None:
        stop_swap(self.workdir)
        start_swap(
            policy(self.a, self.b, wait_timeout_s, min_resident_s),
            self.state, self.workdir, lambda message: None, config=self.config,
        )  # fmt: skip

    def generate(
        self, model: str, tokens: int = 8, protocol: str = "grpc", stream: bool = True
    ) -> str:
        request = GenerateRequest(
            "The capital of France is", max_tokens=tokens, end_id=UNUSED_END_ID, stream=stream
        )
        return "".join(self.client.generate(model, request, protocol=protocol))

    def rows_when(self, condition, within_s: float = 5) -> dict[str, dict]:
        """The per-model status rows once ``condition`` holds (fronts report every 50 ms)."""
        deadline = time.monotonic() + within_s
        while True:
            rows = {row["name"]: row for row in swap_status(self.workdir)["models"]}
            if condition(rows) or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def metric_when(self, name: str, model: str, value: float, within_s: float = 5) -> float:
        """A sample from /metrics once it reaches ``value`` (or the last one seen)."""
        url = f"http://{self.state.host}:{self.state.metrics_port}/metrics"
        deadline = time.monotonic() + within_s
        seen = float("nan")
        while True:
            for line in httpx.get(url, timeout=10).text.splitlines():
                if line.startswith(f'{name}{{model="{model}"}}'):
                    seen = float(line.rsplit(" ", 1)[1])
            if seen >= value or time.monotonic() > deadline:
                return seen
            time.sleep(0.2)

    def generate_eventually(self, model: str, within_s: float = 90) -> str:
        """Retry while the model is being swapped in (a short wait_timeout_s may expire)."""
        deadline = time.monotonic() + within_s
        while True:
            try:
                return self.generate(model, 4)
            except EdgectlError as err:
                if "swapped out" not in str(err) or time.monotonic() > deadline:
                    raise


@pytest.fixture(scope="module")
def swap_server(built_artifact: Path, tmp_path_factory) -> Iterator[SwapServer]:
    int4 = build(load_recipe(INT4_RECIPE)).artifact
    workdir = tmp_path_factory.mktemp("swap")
    config = server_config(workdir, built_artifact)
    repository = workdir / "model_repository"
    repository.mkdir()
    server = LocalTriton(config.server)
    state = server.start(repository, [])  # swap mode installs its own models
    try:
        yield SwapServer(server, state, config, built_artifact, int4)
    finally:
        server.stop()


def test_queued_requests_are_served_after_a_swap_and_unload_frees_memory(swap_server):
    swap_server.apply(wait_timeout_s=60, min_resident_s=0.5)
    results: dict[str, list] = {"swap_a": [], "swap_b": []}

    def call(model: str, tokens: int, protocol: str = "grpc", stream: bool = True) -> None:
        try:
            results[model].append(swap_server.generate(model, tokens, protocol, stream))
        except EdgectlError as err:
            results[model].append(err)

    engines = {"swap_a_tensorrt_llm", "swap_b_tensorrt_llm"}
    most_engines_ready = [0]
    watching = threading.Event()

    def watch() -> None:  # Triton's own view: never both engines loaded at once
        while not watching.wait(0.2):
            index = swap_server.client.list_models()
            ready = {m["name"] for m in index if m.get("state") in ("READY", "UNLOADING")}
            most_engines_ready[0] = max(most_engines_ready[0], len(ready & engines))

    watcher = threading.Thread(target=watch)
    watcher.start()
    # Three requests for A, then (while A is in and busy) three for B: B's must wait for
    # A's to finish, A to be unloaded and B to be loaded, and then be served.
    threads = [threading.Thread(target=call, args=("swap_a", 24)) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while swap_status(swap_server.workdir)["serving"] != ["swap_a"]:
        assert time.monotonic() < deadline, "swap_a was never swapped in"
        time.sleep(0.1)
    # Through the front over gRPC streaming, HTTP generate_stream and HTTP generate.
    more = [
        threading.Thread(target=call, args=("swap_b", 8, protocol, stream))
        for protocol, stream in (("grpc", True), ("http", True), ("http", False))
    ]
    for thread in more:
        thread.start()
    for thread in threads + more:
        thread.join(timeout=120)
    watching.set()
    watcher.join()
    assert most_engines_ready[0] == 1

    for model, outputs in results.items():
        assert len(outputs) == 3, (model, outputs)
        for output in outputs:
            assert isinstance(output, str) and output.strip(), (model, output)
    rows = swap_server.rows_when(lambda rows: rows["swap_b"]["completed"] == 3)
    status = swap_status(swap_server.workdir)
    assert rows["swap_b"]["waited"] == 3 and rows["swap_b"]["timeouts"] == 0
    assert rows["swap_a"]["swap_ins"] == 1 and rows["swap_a"]["swap_outs"] == 1
    assert rows["swap_b"]["swap_ins"] == 1 and status["serving"] == ["swap_b"]
    assert status["resident"] == ["swap_b"]

    # The same counters on Triton's /metrics endpoint (the fronts publish every 0.5 s).
    assert swap_server.metric_when("edgectl_timeslice_swap_ins_total", "swap_a", 1) == 1
    assert swap_server.metric_when("edgectl_timeslice_swap_outs_total", "swap_a", 1) == 1
    assert swap_server.metric_when("edgectl_timeslice_swap_waited_requests_total", "swap_b", 3) == 3
    assert swap_server.metric_when("edgectl_timeslice_swap_resident", "swap_b", 1) == 1

    unload = next(e for e in status["recent_events"] if e["kind"] == "out")
    assert unload["model"] == "swap_a"
    assert unload["stubs_rss"] > 100 * 2**20, unload  # the engine's stubs held real memory
    freed = unload["rss_before"] - unload["rss_after"]
    assert freed >= RSS_FREED_FRACTION * unload["stubs_rss"], unload
    loaded = {m["name"] for m in swap_server.client.list_models() if m.get("state") == "READY"}
    assert not loaded & {"swap_a_backing", "swap_a_tensorrt_llm", "swap_a_preprocessing"}


def test_a_request_that_waits_too_long_gets_unavailable_and_serving_goes_on(swap_server):
    # A keeps the budget for min_resident_s while it has work; B may wait only 3 s.
    swap_server.apply(wait_timeout_s=3, min_resident_s=600)
    swap_server.generate_eventually("swap_a")  # A is in (its first load may outlast 3 s)
    busy = threading.Thread(target=swap_server.generate, args=("swap_a", 200))
    busy.start()
    time.sleep(0.5)
    started = time.monotonic()
    with pytest.raises(EdgectlError) as refused:
        swap_server.generate("swap_b", 4)
    waited = time.monotonic() - started
    message = str(refused.value)
    assert "swapped out" in message and "swap.wait_timeout_s=3" in message, message
    assert "UNAVAILABLE" in message or "retry later" in message, message
    assert 2.9 <= waited < 10, waited
    busy.join(timeout=120)
    # A is idle now, so B's next request swaps it in (retried: the 3 s bound may expire
    # while B loads on a busy machine) and the server serves it.
    assert swap_server.generate_eventually("swap_b").strip()
    rows = swap_server.rows_when(lambda rows: rows["swap_b"]["completed"] >= 1)
    assert rows["swap_b"]["timeouts"] >= 1
    assert swap_status(swap_server.workdir)["serving"] == ["swap_b"]

    # Turning swap mode off unloads everything it installed, also after refused requests
    # (a client that cancels its stream after the error would block this: see client.py).
    stop_swap(swap_server.workdir)
    states = {m["name"]: m.get("state") for m in swap_server.client.list_models()}
    assert not [name for name, state in states.items() if state in ("READY", "UNLOADING")]
    assert swap_status(swap_server.workdir) == {"active": False}


@pytest.mark.slow
def test_the_scheduler_survives_its_front_being_killed(swap_server):
    """The front running the scheduler dies: another front takes the lock and swaps, the
    supervisor reloads the dead front, and both models serve again."""
    swap_server.apply(wait_timeout_s=90, min_resident_s=1)
    assert swap_server.generate("swap_a").strip()
    killed = swap_status(swap_server.workdir)["scheduler_pid"]
    os.kill(killed, signal.SIGKILL)
    assert swap_server.generate("swap_b").strip()  # needs a swap: A out, B in
    status = swap_status(swap_server.workdir)
    assert status["scheduler_pid"] != killed and status["serving"] == ["swap_b"]
    deadline = time.monotonic() + 60
    while True:  # the supervisor reloads the front whose stub died
        try:
            assert swap_server.generate("swap_a").strip()
            break
        except EdgectlError:
            assert time.monotonic() < deadline, "swap_a's front did not come back"
            time.sleep(1)
    stop_swap(swap_server.workdir)
