"""Co-resident time-slicing on the real tritonserver: INT8 and INT4 SmolLM2 share the CPU.

One server: deployed normally (the configured model), then `timeslice apply` of a
30/70 policy while it runs (loads both policy models, unloads the other), shares
measured on a short saturated run, a model going idle, status, and `timeslice off`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edgectl.build.builder import build
from edgectl.build.recipe import load_recipe
from edgectl.client import GenerateRequest
from edgectl.config import EdgectlConfig, cache_dir
from edgectl.runtime.slots import SlotBoard
from edgectl.timeslice import service
from edgectl.timeslice.measure import LoadLoop, board_busy_seconds, cpu_seconds
from edgectl.timeslice.policy import load_policy
from tests.e2e.conftest import UNUSED_END_ID, LiveServer, running_server, server_config
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.e2e

ENGINES = {"model_a": "model_a_tensorrt_llm", "model_b": "model_b_tensorrt_llm"}
LONG = GenerateRequest(
    "Tell me a long story about a lighthouse keeper.",
    max_tokens=64,
    stream=True,
    end_id=UNUSED_END_ID,
    apply_chat_template=True,
)
PARIS = GenerateRequest("What is the capital of France?", max_tokens=24, apply_chat_template=True)


def built(recipe_name: str) -> Path:
    """The cached artifact of build/<recipe_name>.yaml (built when missing)."""
    cached = cache_dir() / "models" / recipe_name
    if (cached / "manifest.json").is_file():
        return cached
    return build(load_recipe(REPO_ROOT / "build" / f"{recipe_name}.yaml")).artifact


def write_policy(directory: Path, int8: Path, int4: Path) -> Path:
    path = directory / "pair-30-70.yaml"
    policy = {
        "name": "pair-30-70",
        "mode": "coresident",
        "memory_budget_gb": 8.0,
        "models": [
            {"name": "model_a", "artifact": str(int8), "share": 30, "slot_ms": 100},
            {"name": "model_b", "artifact": str(int4), "share": 70, "slot_ms": 300, "priority": 2},
        ],
    }
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Path]]:
    int8, int4 = built("smollm2-135m-int8"), built("smollm2-135m-int4")
    workdir = tmp_path_factory.mktemp("timeslice")
    config: EdgectlConfig = server_config(workdir, int8)
    with running_server(config) as live:
        yield live, write_policy(workdir, int8, int4)


def window(server: LiveServer, seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    """Board device seconds and stub CPU seconds per engine over ``seconds``."""
    board = service.board_dir(server.config.server.workdir.resolve())
    engines = list(ENGINES.values())
    busy0, cpu0 = board_busy_seconds(board), cpu_seconds(server.state.pid, engines)
    time.sleep(seconds)
    busy1, cpu1 = board_busy_seconds(board), cpu_seconds(server.state.pid, engines)
    return (
        {name: busy1.get(name, 0.0) - busy0.get(name, 0.0) for name in engines},
        {name: cpu1[name] - cpu0[name] for name in engines},
    )


def share(values: dict[str, float], engine: str) -> float:
    return values[engine] / sum(values.values())


def test_apply_loads_the_policy_models_and_unloads_the_others(pair):
    server, policy_path = pair
    record = service.apply(load_policy(policy_path), server.config, lambda message: None)
    assert record["mode"] == "coresident"
    assert record["unloaded"] == ["ensemble"]
    states = {m["name"]: m.get("state") for m in server.client.list_models()}
    assert states["model_a"] == states["model_b"] == "READY"
    assert states["ensemble"] != "READY"
    for model in ENGINES:
        assert "Paris" in "".join(server.client.generate(model, PARIS))


def test_busy_models_share_the_device_as_configured(pair):
    server, _ = pair
    loops = [LoadLoop(server.client, model, LONG, concurrency=6).start() for model in ENGINES]
    try:
        time.sleep(2)  # both engines busy
        busy, cpu = window(server, 10)
    finally:
        for loop in loops:
            loop.stop()
    assert [loop.failures for loop in loops] == [[], []]
    assert all(loop.completed > 0 for loop in loops)
    # Board accounting: within ±5 points of the configured share; the OS's CPU time, a bit wider
    # (on 2 shared cores other processes take CPU from whichever engine holds a slot).
    assert share(busy, ENGINES["model_a"]) == pytest.approx(0.30, abs=0.05)
    assert share(cpu, ENGINES["model_a"]) == pytest.approx(0.30, abs=0.08)


def test_an_idle_model_lends_its_slots(pair):
    server, _ = pair
    loop = LoadLoop(server.client, "model_b", LONG, concurrency=4).start()
    try:
        time.sleep(1)
        seconds = 5.0
        busy, _ = window(server, seconds)
    finally:
        loop.stop()
    assert loop.failures == []
    assert busy[ENGINES["model_a"]] == 0.0
    assert busy[ENGINES["model_b"]] >= 0.9 * seconds


def test_status_reports_configured_and_achieved_shares(pair):
    server, _ = pair
    report = service.status(server.config)
    assert (report["policy"], report["mode"], report["server"]) == (
        "pair-30-70",
        "coresident",
        "up",
    )
    by_name = {m["name"]: m for m in report["models"]}
    assert by_name["model_a"]["configured_share"] == pytest.approx(0.3)
    assert (by_name["model_a"]["slot_ms"], by_name["model_b"]["slot_ms"]) == (100, 300)
    assert by_name["model_a"]["slots"] > 0 and by_name["model_a"]["slot_waits"] > 0
    assert 0 < by_name["model_a"]["achieved_share"] < by_name["model_b"]["achieved_share"]
    assert by_name["model_b"]["queue_waiting"] == 0.0
    assert 0 < by_name["model_a"]["memory_rss_gb"] < by_name["model_a"]["memory_estimate_gb"]
    assert 0 < report["memory_in_use_gb"] < report["memory_budget_gb"]
    assert "model_a" in service.format_status(report)
    # The same accounting on Triton's metrics endpoint, per engine step.
    engine = ENGINES["model_a"]
    assert server.metric("edgectl_timeslice_configured_share", engine) == pytest.approx(0.3)
    assert server.metric("edgectl_timeslice_device_seconds_total", engine) > 1.0
    assert server.metric("edgectl_timeslice_slot_waits_total", engine) > 0


def test_reapplying_changes_shares_without_reloading(pair):
    server, policy_path = pair
    policy = load_policy(policy_path)
    policy.models[0].share, policy.models[1].share = 50, 50
    messages: list[str] = []
    service.apply(policy, server.config, messages.append)
    assert sum("unchanged" in message for message in messages) == 2
    with SlotBoard(service.board_dir(server.config.server.workdir.resolve())).locked() as state:
        assert state["models"][ENGINES["model_a"]]["share"] == 50


def test_off_restores_normal_serving(pair):
    server, _ = pair
    result = service.off(server.config, lambda message: None)
    assert result["reloaded"] == ["ensemble"]
    assert service.status(server.config) == {"policy": None}
    assert not SlotBoard(service.board_dir(server.config.server.workdir.resolve())).active()
    for model in ("ensemble", *ENGINES):
        assert "Paris" in "".join(server.client.generate(model, PARIS))
    assert service.off(server.config, lambda message: None) == {"policy": None, "reloaded": []}
