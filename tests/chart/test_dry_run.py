"""`edgectl deploy --target k8s --dry-run` prints exactly what `helm template` renders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.chart.helpers import CHART, run

K8S = "k8s:\n  release: edge\n  namespace: serving\n  values_files: [extra.yaml]\n"
CONFIGS = {
    "cpu": "model:\n  name: smol\n" + K8S,
    "gpu": "model:\n  engine: trtllm\n  name: llama\n" + K8S + "  profile: gpu\n",
}


def edgectl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgectl.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("profile", sorted(CONFIGS))
def test_dry_run_equals_helm_template(helm, tmp_path, profile):
    (tmp_path / "extra.yaml").write_text("replicaCount: 2\n", encoding="utf-8")
    (tmp_path / "edgectl.yaml").write_text(CONFIGS[profile], encoding="utf-8")

    result = edgectl(tmp_path, "deploy", "--target", "k8s", "--dry-run")
    assert result.returncode == 0, result.stderr

    generated = tmp_path / ".edgectl" / "k8s" / "edge.values.yaml"
    values = yaml.safe_load(generated.read_text(encoding="utf-8"))
    assert values["profile"] == profile
    assert values["triton"]["models"] == [yaml.safe_load(CONFIGS[profile])["model"]["name"]]
    expected = run(
        [helm, "template", "edge", CHART, "--namespace", "serving",
         "--values", CHART / f"values-{profile}.yaml", "--values", generated,
         "--values", tmp_path / "extra.yaml"]
    )  # fmt: skip
    assert expected.returncode == 0, expected.stderr
    assert result.stdout == expected.stdout
    deployment = next(
        doc for doc in yaml.safe_load_all(result.stdout) if doc and doc["kind"] == "Deployment"
    )
    assert deployment["spec"]["replicas"] == 2  # k8s.values_files win over the profile file


def test_dry_run_reports_schema_errors_with_the_next_step(helm, tmp_path):
    (tmp_path / "bad.yaml").write_text("gpu:\n  tensorParallel: 0\n", encoding="utf-8")
    result = edgectl(
        tmp_path, "--set", "k8s.values_files=[bad.yaml]", "deploy", "--target", "k8s", "--dry-run"
    )
    assert result.returncode == 1
    assert "at '/gpu/tensorParallel': minimum: got 0, want 1" in result.stderr
    assert "next: fix the values named above" in result.stderr
    assert "Traceback" not in result.stderr
