"""The chart's time-slicing policy is edgectl's own, and the pod puts it in force.

The schema is compared with the pydantic one field by field, the rendered policy files are
loaded with edgectl's ``load_policy``, and the init container's command (``edgectl timeslice
board``) is run against a repository rendered the way the pod's store is laid out, so that
the chart and ``edgectl timeslice`` cannot drift apart again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from edgectl.cli import cli
from edgectl.config import EngineConfig
from edgectl.deploy.repository import ServedModel, render_repository
from edgectl.errors import EdgectlError
from edgectl.runtime.slots import SlotBoard, SlotGate
from edgectl.timeslice.board import install_board
from edgectl.timeslice.policy import TimeslicePolicy, load_policy
from tests.chart.helpers import CHART, NAMESPACE, RELEASE, VARIANTS, Rendered, render_with, run

FULLNAME = f"{RELEASE}-edgectl"
POD_POLICY = "/etc/edgectl/timeslice/policy.yaml"
CONSTRAINTS = {
    "type", "enum", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minItems", "maxItems", "required", "additionalProperties",
}  # fmt: skip


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def constraints(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """What a JSON schema accepts, without titles, defaults and spelling differences."""
    node = _resolve(node, root)
    if "anyOf" in node:  # pydantic's Optional[X]: X or null
        options = [constraints(option, root) for option in node["anyOf"]]
        (value,) = [option for option in options if option != {"type": "null"}]
        return {**value, "type": sorted([value["type"], "null"])}
    out = {key: value for key, value in node.items() if key in CONSTRAINTS}
    if "enum" in out:
        out.pop("type", None)  # pydantic adds the enum's type
    if isinstance(out.get("type"), list):
        out["type"] = sorted(out["type"])
    if "required" in out:
        out["required"] = sorted(out["required"])
    if "properties" in node:
        out["properties"] = {k: constraints(v, root) for k, v in node["properties"].items()}
    if "items" in node:
        out["items"] = constraints(node["items"], root)
    return out


def test_chart_schema_accepts_what_edgectls_policy_schema_accepts():
    chart = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    chart_policy = chart["properties"]["timeslice"]["properties"]["policy"]
    edgectl = TimeslicePolicy.model_json_schema()
    assert constraints(chart_policy, chart) == constraints(edgectl, edgectl)


def policy_file(result: Rendered, path: Path) -> Path:
    """The pod's /etc/edgectl/timeslice/policy.yaml, from the rendered ConfigMap."""
    config_map = result.get("ConfigMap", f"{FULLNAME}-timeslice")
    path.write_text(config_map["data"]["policy.yaml"], encoding="utf-8")
    return path


def test_default_policy_loads_with_edgectl(helm, tmp_path):
    result = render_with(
        helm, VARIANTS["cpu"], "timeslice.enabled=true", "triton.models={ensemble,small}"
    )
    path = policy_file(result, tmp_path / "policy.yaml")
    policy = load_policy(path)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == defaults["timeslice"]["policy"]
    assert policy.mode == "coresident"
    assert [model.name for model in policy.models] == ["ensemble", "small"]
    assert policy.configured_shares() == {"ensemble": 0.3, "small": 0.7}
    assert all(str(model.artifact).startswith("/models/artifacts/") for model in policy.models)


def test_full_variant_policy_loads_with_edgectl(rendered, tmp_path):
    policy = load_policy(policy_file(rendered["cpu-full"], tmp_path / "policy.yaml"))
    assert policy.name == "pair-30-70"
    assert [(policy.slot_ms(m), m.priority, m.memory_gb) for m in policy.models] == [
        (100, 1, 4.0),
        (300, 2, 1.5),
    ]
    assert policy.models[1].artifact == Path("/models/artifacts/models/smollm2-135m-int4")


def test_the_board_init_container_runs_edgectl_on_the_mounted_policy(rendered):
    spec = rendered["cpu-full"].get("Deployment")["spec"]["template"]["spec"]
    names = [container["name"] for container in spec["initContainers"]]
    assert names == ["fetch-model-store", "timeslice-board"]  # the store first
    board = spec["initContainers"][1]
    (server,) = [item for item in spec["containers"] if item["name"] == "triton"]
    assert board["image"] == server["image"]
    assert board["command"] == [
        "edgectl", "timeslice", "board", POD_POLICY, "--repository", "/models/repository"
    ]  # fmt: skip
    mounts = {mount["mountPath"]: mount for mount in board["volumeMounts"]}
    assert mounts["/etc/edgectl/timeslice"]["name"] == "timeslice"
    assert mounts["/models"]["name"] == "model-root" and not mounts["/models"].get("readOnly")
    assert mounts["/models/repository"]["readOnly"] and mounts["/models/artifacts"]["readOnly"]
    assert board["securityContext"]["readOnlyRootFilesystem"] is True
    assert "limits" in board["resources"]


def test_notes_point_at_the_board_container(helm):
    files = [arg for path in VARIANTS["cpu-full"] for arg in ("--values", path)]
    result = run([helm, "install", RELEASE, CHART, "--namespace", NAMESPACE, "--dry-run=client",
                  *files])  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = result.stdout.partition("NOTES:")[2]
    assert "Time-slicing policy pair-30-70 (2 models, coresident)" in notes
    assert f"kubectl -n {NAMESPACE} logs <pod> -c timeslice-board" in notes


def test_no_board_container_without_timeslice(rendered):
    spec = rendered["cpu"].get("Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in spec


# -- the init container's command against a pod-shaped store -----------------------------------


def pod_store(root: Path, models: dict[str, str], engine: str = "cpu") -> Path:
    """``root`` plays the pod's /models: artifacts/ (fake weights) and repository/ rendered."""
    served = []
    for name, artifact in models.items():
        folder = root / "artifacts" / "models" / artifact
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "openvino_model.bin").write_bytes(b"\0" * 1000)
        served.append(ServedModel(name, engine, folder, folder, end_id=2, pad_id=2))
    return render_repository(served, EngineConfig(), root / "repository")


def chart_policy_in(result: Rendered, root: Path, tmp_path: Path) -> Path:
    """The chart's rendered policy, with the pod's /models/ mapped to ``root``."""
    text = result.get("ConfigMap", f"{FULLNAME}-timeslice")["data"]["policy.yaml"]
    path = tmp_path / "policy.yaml"
    path.write_text(text.replace(" /models/artifacts/", f" {root}/artifacts/"), encoding="utf-8")
    return path


PAIR = {"ensemble": "smollm2-135m-int8", "small": "smollm2-135m-int4"}


def test_board_command_governs_the_served_cpu_engine_steps(rendered, tmp_path):
    root = tmp_path / "models"
    repository = pod_store(root, PAIR)
    policy = chart_policy_in(rendered["cpu-full"], root, tmp_path)
    result = CliRunner().invoke(
        cli, ["timeslice", "board", str(policy), "--repository", str(repository)]
    )
    assert result.exit_code == 0, result.output
    board_dir = root / "run" / "timeslice"  # beside the repository, as the engines read it
    assert f"slot board {board_dir}" in result.output
    state = SlotBoard(board_dir).snapshot()
    assert state["policy"] == "pair-30-70"
    slots = {name: (m["share"], m["slot_ms"], m["priority"]) for name, m in state["models"].items()}
    assert slots == {"tensorrt_llm": (30, 100, 1), "small_tensorrt_llm": (70, 300, 2)}
    # The engine step's own gate now follows it (no board: counters() is None).
    gate = SlotGate(board_dir, "small_tensorrt_llm")
    assert gate.acquire()
    assert SlotBoard(board_dir).snapshot()["holder"] == "small_tensorrt_llm"
    assert gate.counters()["configured_share"] == pytest.approx(0.7)


def write_policy(tmp_path: Path, root: Path, **changes: Any) -> TimeslicePolicy:
    data: dict[str, Any] = {
        "name": "pair",
        "mode": "coresident",
        "memory_budget_gb": 6,
        "models": [
            {"name": name, "artifact": str(root / "artifacts" / "models" / folder), "share": 1}
            for name, folder in PAIR.items()
        ],
    }
    data.update(changes)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_policy(path)


def test_board_estimates_memory_from_the_served_artifact(tmp_path):
    root = tmp_path / "models"
    repository = pod_store(root, PAIR)
    board = install_board(write_policy(tmp_path, root), repository)
    # Per model: 1000 bytes of weights + the 1 GB KV cache (whole GB) + 0.5 GB overhead.
    assert board.memory_gb == pytest.approx(3.0, abs=0.01)
    assert sorted(board.engines) == ["small_tensorrt_llm", "tensorrt_llm"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "swap"}, "mode swap loads and unloads models, which needs the edgectl"),
        ({"memory_budget_gb": 2}, "the models need 3.00 GB together but memory_budget_gb is 2"),
        ({"mode": "auto", "memory_budget_gb": 2}, "every model stays loaded here"),
    ],
)
def test_board_refuses_what_a_pod_cannot_enforce(tmp_path, changes, message):
    root = tmp_path / "models"
    repository = pod_store(root, PAIR)
    with pytest.raises(EdgectlError, match=message):
        install_board(write_policy(tmp_path, root, **changes), repository)
    assert not SlotBoard(root / "run" / "timeslice").active()


def test_board_refuses_a_model_the_repository_does_not_serve(tmp_path):
    root = tmp_path / "models"
    repository = pod_store(root, {"ensemble": "smollm2-135m-int8"})
    with pytest.raises(EdgectlError, match="policy model 'small' is not in the repository"):
        install_board(write_policy(tmp_path, root), repository)


def test_board_refuses_an_artifact_other_than_the_served_one(tmp_path):
    root = tmp_path / "models"
    repository = pod_store(root, {"ensemble": "smollm2-135m-int8", "small": "other"})
    with pytest.raises(EdgectlError, match="policy model small: artifact .* is not what"):
        install_board(write_policy(tmp_path, root), repository)


def test_board_refuses_gpu_engine_steps(tmp_path):
    root = tmp_path / "models"
    repository = pod_store(root, PAIR, engine="trtllm")
    with pytest.raises(EdgectlError, match="runs on the tensorrtllm backend"):
        install_board(write_policy(tmp_path, root), repository)
