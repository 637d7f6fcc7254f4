"""The chart through the real checkers, offline: helm lint, kubernetes-validate, checkov."""

from __future__ import annotations

import json
import re

import pytest

from tests.chart.helpers import CHART, VARIANTS, run

# The oldest and newest Kubernetes versions the chart supports (Chart.yaml kubeVersion: >=1.25;
# 1.37 is the newest schema set kubernetes-validate 1.37.0 bundles).
KUBERNETES_VERSIONS = ["1.25.0", "1.37.0"]
# Custom resources have no schema in kubernetes-validate's bundle: test_cluster_behaviour.py
# checks them against their CRD schemas (tests/chart/crds/).
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "ScaledObject"}
# Checkov findings the chart accepts, each skipped in the templates with its reason
# (CKV_K8S_35, secrets as environment variables: only the gateway's API key, by secretKeyRef).
ACCEPTED_FINDINGS = {"CKV_K8S_15", "CKV_K8S_35", "CKV_K8S_40", "CKV_K8S_43"}
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_strict(helm, variant):
    args = [helm, "lint", "--strict", CHART]
    for path in VARIANTS[variant]:
        args += ["--values", path]
    result = run(args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_rendered_variants_are_what_the_validators_see(rendered):
    # cpu-full, gpu-build and gpu-timeslice carry the CRDs; the others must not need them.
    assert rendered["cpu-full"].kinds & CRD_KINDS == {"ServiceMonitor"}
    assert rendered["gpu-build"].kinds & CRD_KINDS == {"PodMonitor"}
    assert rendered["gpu-timeslice"].kinds & CRD_KINDS == {"ServiceMonitor", "ScaledObject"}
    assert not rendered["cpu"].kinds & CRD_KINDS


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_validate_strict(kubernetes_validate, manifests_dir, rendered, version):
    files = sorted(manifests_dir.glob("*.yaml")) + EXAMPLES
    result = run([kubernetes_validate, "--strict", "--kubernetes-version", version, *files])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.findall(r"passed for resource (\S+) against version", output)
    expected = len(EXAMPLES) + sum(
        1 for variant in rendered.values() for doc in variant.docs if doc["kind"] not in CRD_KINDS
    )
    assert len(passed) == expected, output
    for line in output.splitlines():
        if not line.startswith("INFO"):
            assert re.search(
                r"Couldn't find schema for kind (ServiceMonitor|PodMonitor|ScaledObject)", line
            ), line


def test_checkov_finds_nothing_unexplained(checkov, manifests_dir):
    result = run(
        [checkov, "--framework", "kubernetes", "--skip-download", "--directory", manifests_dir,
         "--output", "json"],
        timeout=300,
    )  # fmt: skip
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    summary = report["summary"]
    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for check in report["results"]["failed_checks"]
    ]
    assert failed == [], "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 100
    skipped = report["results"]["skipped_checks"]
    assert {check["check_id"] for check in skipped} == ACCEPTED_FINDINGS
    for check in skipped:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) > 40, f"{check['check_id']} is skipped without a reason"
