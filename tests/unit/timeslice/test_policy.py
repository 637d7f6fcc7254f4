"""The time-slicing policy file: validation errors name the field; the mode follows memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edgectl.config import EdgectlConfig
from edgectl.errors import EdgectlError
from edgectl.timeslice.policy import (
    ENGINE_OVERHEAD_GB,
    estimate_memory_gb,
    load_policy,
    plan_models,
    resolved_mode,
)


def fake_artifact(path: Path, weights_bytes: int) -> Path:
    """The files deploy's served_model reads: a manifest and the weights."""
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"serving": {"end_id": 2, "pad_id": 2}}))
    (path / "openvino_model.bin").write_bytes(b"\0" * weights_bytes)
    return path


def policy_data(**overrides):
    data = {
        "name": "edge-pair",
        "memory_budget_gb": 4.0,
        "models": [
            {"name": "model_a", "artifact": "a", "share": 30, "slot_ms": 100, "priority": 1},
            {"name": "model_b", "artifact": "b", "share": 70, "slot_ms": 300, "priority": 2},
        ],
    }
    data.update(overrides)
    return data


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_valid_policy_loads_with_paths_relative_to_the_file(tmp_path):
    policy = load_policy(write(tmp_path, policy_data()))
    assert [m.artifact for m in policy.models] == [tmp_path / "a", tmp_path / "b"]
    assert policy.mode == "auto" and policy.swap.wait_timeout_s == 30
    assert policy.configured_shares() == {"model_a": 0.3, "model_b": 0.7}
    assert policy.slot_ms(policy.models[1]) == 300


def test_slot_ms_defaults_to_default_slot_ms(tmp_path):
    data = policy_data(default_slot_ms=250)
    del data["models"][0]["slot_ms"]
    policy = load_policy(write(tmp_path, data))
    assert policy.slot_ms(policy.models[0]) == 250


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["models"][1].update(share=0),
            "models.1.share: Input should be greater than 0",
        ),
        (lambda d: d["models"][0].update(slot_ms=5), "models.0.slot_ms: Input should be greater"),
        (lambda d: d["models"][0].update(priority=0), "models.0.priority: Input should be greater"),
        (lambda d: d["models"][0].update(weight=2), "models.0.weight: unknown key"),
        (lambda d: d["models"][1].update(name="model_a"), "model 'model_a' is listed twice"),
        (lambda d: d["models"].pop(), "models: List should have at least 2 items"),
        (lambda d: d["models"][0].update(recipe="r.yaml"), "set exactly one of recipe or artifact"),
        (lambda d: d["models"][0].pop("artifact"), "set exactly one of recipe or artifact"),
        (lambda d: d.update(memory_budget_gb=0), "memory_budget_gb: Input should be greater"),
        (lambda d: d.update(mode="shared"), "mode: Input should be 'auto', 'coresident' or 'swap'"),
        (lambda d: d.update(name="bad name"), "name: String should match pattern"),
        (lambda d: d["swap"].update(wait_timeout_s=-1), "swap.wait_timeout_s: Input should be"),
    ],
)
def test_bad_policies_are_refused_naming_the_field(tmp_path, change, message):
    data = policy_data(swap={"wait_timeout_s": 30})
    change(data)
    with pytest.raises(EdgectlError) as err:
        load_policy(write(tmp_path, data))
    assert message in str(err.value)
    assert str(tmp_path / "policy.yaml") in str(err.value)


def test_a_missing_policy_file_is_a_clear_error(tmp_path):
    with pytest.raises(EdgectlError, match="does not exist"):
        load_policy(tmp_path / "nope.yaml")


def test_memory_estimate_is_weights_plus_kv_cache_plus_overhead(tmp_path):
    artifact = fake_artifact(tmp_path / "a", 200_000_000)
    assert estimate_memory_gb(artifact, kv_cache_gb=1.0) == pytest.approx(
        0.2 + 1 + ENGINE_OVERHEAD_GB
    )


def planned_for(tmp_path, **overrides):
    fake_artifact(tmp_path / "a", 100_000_000)
    fake_artifact(tmp_path / "b", 100_000_000)
    policy = load_policy(write(tmp_path, policy_data(**overrides)))
    return policy, plan_models(policy, EdgectlConfig())


def test_auto_is_coresident_when_the_estimates_fit_and_swap_when_not(tmp_path):
    policy, planned = planned_for(tmp_path, memory_budget_gb=4.0)  # 2 x 1.6 GB
    assert [p.memory_source for p in planned] == ["estimate", "estimate"]
    assert resolved_mode(policy, planned) == "coresident"
    policy.memory_budget_gb = 2.0
    assert resolved_mode(policy, planned) == "swap"


def test_coresident_over_budget_is_refused_with_the_numbers(tmp_path):
    policy, planned = planned_for(tmp_path, mode="coresident", memory_budget_gb=2.0)
    with pytest.raises(EdgectlError, match=r"need 3\.20 GB together .* memory_budget_gb is 2"):
        resolved_mode(policy, planned)


def test_a_model_larger_than_the_budget_is_refused_in_any_mode(tmp_path):
    data = policy_data(mode="swap", memory_budget_gb=2.0)
    data["models"][0]["memory_gb"] = 3.0
    fake_artifact(tmp_path / "a", 1000)
    fake_artifact(tmp_path / "b", 1000)
    policy = load_policy(write(tmp_path, data))
    planned = plan_models(policy, EdgectlConfig())
    assert planned[0].memory_source == "policy"
    with pytest.raises(EdgectlError, match="model_a alone needs 3 GB"):
        resolved_mode(policy, planned)


def test_an_unbuilt_artifact_names_the_model(tmp_path):
    policy = load_policy(write(tmp_path, policy_data()))
    with pytest.raises(EdgectlError, match="model model_a: model.artifact .* does not exist"):
        plan_models(policy, EdgectlConfig())


# -- the CLI -------------------------------------------------------------------------------------


def run_cli(monkeypatch, capsys, tmp_path, *args) -> tuple[int, str, str]:
    import sys

    from edgectl import cli as cli_module

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["edgectl", "--set", f"server.workdir={tmp_path}", *args])
    code = 0
    try:
        cli_module.main()
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_status_without_a_policy_exits_3(monkeypatch, capsys, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, tmp_path, "timeslice", "status")
    assert (code, out.strip()) == (3, "no time-slicing policy in force")


def test_cli_apply_refuses_a_bad_policy_naming_the_field(monkeypatch, capsys, tmp_path):
    data = policy_data()
    data["models"][1]["share"] = -1
    path = write(tmp_path, data)
    code, _, err = run_cli(monkeypatch, capsys, tmp_path, "timeslice", "apply", str(path))
    assert code == 1
    assert "models.1.share" in err and "Traceback" not in err


def test_cli_off_without_a_policy_is_not_an_error(monkeypatch, capsys, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, tmp_path, "timeslice", "off")
    assert (code, out.strip()) == (0, "no time-slicing policy was in force")
