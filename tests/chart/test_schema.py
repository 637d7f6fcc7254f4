"""Bad values are refused before anything renders, with a message naming the value.

Types, ranges and patterns come from values.schema.json (Helm's validator prints the path);
combinations the schema cannot express are refused by templates/_validate.tpl.
"""

from __future__ import annotations

import json

import pytest

from tests.chart.helpers import VARIANTS, render_error

SCHEMA_CASES = [
    ("profile=tpu", "at '/profile': value must be one of 'cpu', 'gpu'"),
    ("gpu.tensorParallel=0", "at '/gpu/tensorParallel': minimum: got 0, want 1"),
    ("replicas=2", "additional properties 'replicas' not allowed"),
    ("podSecurityContext.runAsNonRoot=false", "at '/podSecurityContext/runAsNonRoot'"),
    ("podSecurityContext.runAsUser=0", "at '/podSecurityContext/runAsUser': minimum"),
    (
        "containerSecurityContext.allowPrivilegeEscalation=true",
        "at '/containerSecurityContext/allowPrivilegeEscalation': value must be false",
    ),
    (
        "containerSecurityContext.readOnlyRootFilesystem=false",
        "at '/containerSecurityContext/readOnlyRootFilesystem': value must be true",
    ),
    ("modelRepository.source=git", "at '/modelRepository/source'"),
    (
        "modelRepository.source=objectStorage",
        "at '/modelRepository/objectStorage/url': minLength: got 0, want 1",
    ),
    (
        "modelRepository.objectStorage.url=https://bucket.example/models",
        "at '/modelRepository/objectStorage/url': 'https://bucket.example/models' does not match",
    ),
    (
        "modelRepository.objectStorage.secretAccessKey=AKIA",
        "at '/modelRepository/objectStorage': additional properties 'secretAccessKey' not allowed",
    ),
    ("modelRepository.pvc.size=lots", "at '/modelRepository/pvc/size': 'lots' does not match"),
    ("probes.startup.path=/healthz", "at '/probes/startup/path': '/healthz' does not match"),
    ("service.ports.http=70000", "at '/service/ports/http': maximum: got 70,000, want 65,535"),
    ("image.digest=latest", "at '/image/digest': 'latest' does not match"),
    ("timeslice.enabled=true", "at '/timeslice/policy/models': minItems: got 0, want 1"),
    ("triton.logVerbose=9", "at '/triton/logVerbose': maximum: got 9, want 3"),
    ("autoscaling.targetAverageValue=half", "at '/autoscaling/targetAverageValue'"),
]

JSON_CASES = [
    ("triton.models=[]", "at '/triton/models': minItems: got 0, want 1"),
    (
        'timeslice.policy.models=[{"name": "a", "share": 0}]',
        "at '/timeslice/policy/models/0/share': minimum: got 0, want 1",
    ),
    (
        'timeslice.policy.models=[{"name": "a", "share": 50, "weight": 2}]',
        "at '/timeslice/policy/models/0': additional properties 'weight' not allowed",
    ),
]

TEMPLATE_CASES = [
    (
        ["resources.limits.nvidia\\.com/gpu=2"],
        "resources.limits must not set nvidia.com/gpu: it is gpu.tensorParallel x "
        "gpu.pipelineParallel",
    ),
    (
        ["service.ports.grpc=8000"],
        "service.ports http, grpc and metrics must differ, got 8000, 8000, 8002",
    ),
    (
        ["autoscaling.enabled=true", "autoscaling.minReplicas=5", "autoscaling.maxReplicas=2"],
        "autoscaling.minReplicas (5) must not exceed autoscaling.maxReplicas (2)",
    ),
    (
        ["autoscaling.enabled=true", "autoscaling.metricName=queue_ratio"],
        "autoscaling.prometheusAdapterRule.name.as (triton_queue_compute_ratio) must equal "
        "autoscaling.metricName (queue_ratio)",
    ),
    (
        ["metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true"],
        "enable metrics.serviceMonitor or metrics.podMonitor, not both",
    ),
    (
        ["podDisruptionBudget.minAvailable=1", "podDisruptionBudget.maxUnavailable=1"],
        "podDisruptionBudget: set minAvailable or maxUnavailable, not both",
    ),
]

TIMESLICE_CASES = [
    (
        [{"name": "ensemble", "share": 60}, {"name": "small", "share": 30}],
        "coresident",
        0,
        "shares are percentages and must total 100, got 90",
    ),
    (
        [{"name": "ensemble", "share": 50}, {"name": "ensemble", "share": 50}],
        "coresident",
        0,
        "timeslice.policy.models: ensemble is listed twice",
    ),
    (
        [
            {"name": "ensemble", "share": 50, "memory_mb": 5000},
            {"name": "small", "share": 50, "memory_mb": 4000},
        ],
        "coresident",
        8000,
        "models need 9000 MB together but memory_budget_mb is 8000; use mode swap",
    ),
    (
        [{"name": "ensemble", "share": 50}, {"name": "other", "share": 50}],
        "coresident",
        0,
        "other is not in triton.models; mode coresident keeps every policy model loaded",
    ),
]


@pytest.mark.parametrize(("assignment", "message"), SCHEMA_CASES)
def test_schema_rejects_bad_values(helm, assignment, message):
    error = render_error(helm, VARIANTS["cpu"], assignment)
    assert "values don't meet the specifications of the schema" in error
    assert message in error


@pytest.mark.parametrize(("assignment", "message"), JSON_CASES)
def test_schema_rejects_bad_lists(helm, assignment, message):
    error = render_error(helm, VARIANTS["cpu"], json_sets=(assignment,))
    assert message in error


def test_engine_build_without_a_command_is_refused_on_gpu(helm):
    error = render_error(
        helm,
        VARIANTS["gpu"],
        "modelRepository.source=engineBuild",
        json_sets=("modelRepository.engineBuild.command=[]",),
    )
    assert "at '/modelRepository/engineBuild/command': minItems: got 0, want 1" in error


def test_gpu_products_and_node_affinity_are_exclusive(helm):
    affinity = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    error = render_error(
        helm,
        VARIANTS["gpu"],
        "gpu.products={NVIDIA-L4}",
        json_sets=(f"affinity={json.dumps(affinity)}",),
    )
    assert "set either gpu.products or affinity.nodeAffinity, not both" in error


@pytest.mark.parametrize(("sets", "message"), TEMPLATE_CASES)
def test_chart_rejects_contradicting_values(helm, sets, message):
    error = render_error(helm, VARIANTS["cpu"], *sets)
    assert message in error


@pytest.mark.parametrize(("models", "mode", "budget", "message"), TIMESLICE_CASES)
def test_timeslice_policy_is_checked(helm, models, mode, budget, message):
    error = render_error(
        helm,
        VARIANTS["cpu"],
        "timeslice.enabled=true",
        f"timeslice.policy.mode={mode}",
        f"timeslice.policy.memory_budget_mb={budget}",
        "triton.models={ensemble,small}",
        json_sets=(f"timeslice.policy.models={json.dumps(models)}",),
    )
    assert message in error
