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
    (
        "timeslice.policy.default_slot_ms=5",
        "at '/timeslice/policy/default_slot_ms': minimum: got 5, want 10",
    ),
    (
        "timeslice.policy.mode=rotate",
        "at '/timeslice/policy/mode': value must be one of 'auto', 'coresident', 'swap'",
    ),
    ("timeslice.policy.memory_budget_mb=6000", "additional properties 'memory_budget_mb'"),
    ("triton.logVerbose=9", "at '/triton/logVerbose': maximum: got 9, want 3"),
    (
        "autoscaling.kvCacheUsage.target=2",
        "at '/autoscaling/kvCacheUsage/target': maximum: got 2, want 1",
    ),
    ("gpu.resource=amd.com/gpu", "at '/gpu/resource': 'amd.com/gpu' does not match"),
    ("gpu.sharing=mps", "at '/gpu/sharing': value must be one of"),
    ("networkPolicy.workloadIdentity=azure", "at '/networkPolicy/workloadIdentity'"),
    ("openai.apiKeySecret.name=only-a-name", "at '/openai/apiKeySecret'"),
    (
        "autoscaling.prometheusAdapterRules[0].resources.overides.pod.resource=pod",
        "at '/autoscaling/prometheusAdapterRules/0/resources': additional properties 'overides'",
    ),
]

JSON_CASES = [
    ("triton.models=[]", "at '/triton/models': minItems: got 0, want 1"),
    (
        'timeslice.policy.models=[{"name": "a", "share": 0}, {"name": "b", "share": 1}]',
        "at '/timeslice/policy/models/0/share': exclusiveMinimum: got 0, want 0",
    ),
    (
        'timeslice.policy.models=[{"name": "a", "share": 1, "priority": 0}, {"name": "b", '
        '"share": 1}]',
        "at '/timeslice/policy/models/0/priority': minimum: got 0, want 1",
    ),
    (
        'timeslice.policy.models=[{"name": "a", "share": 50, "weight": 2}, {"name": "b", '
        '"share": 1}]',
        "at '/timeslice/policy/models/0': additional properties 'weight' not allowed",
    ),
    (
        'timeslice.policy.models=[{"name": "a", "share": 1}]',
        "at '/timeslice/policy/models': minItems: got 1, want 2",
    ),
]

TEMPLATE_CASES = [
    (
        ["resources.limits.nvidia\\.com/gpu=2"],
        "resources.limits must not set nvidia.com/gpu: GPUs come from gpu.resource "
        "(nvidia.com/gpu) x gpu.tensorParallel x gpu.pipelineParallel",
    ),
    (["openai.port=8001"], "openai.port (8001) must differ from service.ports"),
    (
        ["service.ports.grpc=8000"],
        "service.ports http, grpc and metrics must differ, got 8000, 8000, 8002",
    ),
    (
        ["autoscaling.enabled=true", "autoscaling.minReplicas=5", "autoscaling.maxReplicas=2"],
        "autoscaling.minReplicas (5) must not exceed autoscaling.maxReplicas (2)",
    ),
    (
        ["autoscaling.enabled=true", "autoscaling.kvCacheUsage.metricName=kv_used"],
        "no rule in autoscaling.prometheusAdapterRules serves kv_used",
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


def _model(name: str, **fields: object) -> dict[str, object]:
    return {"name": name, "artifact": f"/models/artifacts/models/{name}", "share": 1, **fields}


TIMESLICE_CASES = [
    (
        [_model("ensemble"), _model("ensemble")],
        [],
        "timeslice.policy.models.1 (ensemble): ensemble is listed twice",
    ),
    (
        [_model("ensemble"), _model("other")],
        [],
        "timeslice.policy.models.1 (other): not in triton.models",
    ),
    (
        [
            _model("ensemble"),
            {"name": "small", "recipe": "build/smollm2-135m-int4.yaml", "share": 1},
        ],
        [],
        "timeslice.policy.models.1 (small): set artifact (the built model under /models/artifacts",
    ),
    (
        [_model("ensemble"), _model("small", artifact="models/small")],
        [],
        "artifact models/small must be an absolute path under /models/artifacts/",
    ),
    (
        [_model("ensemble"), _model("small", engine="trtllm")],
        [],
        "timeslice.policy.models.1 (small): engine must be cpu with profile cpu",
    ),
    (
        [_model("ensemble", memory_gb=4), _model("small", memory_gb=2.5)],
        [],
        "the models need 6.5 GB together (memory_gb) but memory_budget_gb is 6",
    ),
    (
        [_model("ensemble"), _model("small")],
        ["timeslice.policy.mode=swap"],
        "timeslice.policy.mode must be coresident in the chart, got swap",
    ),
    (
        [_model("ensemble"), _model("small")],
        ["timeslice.policy.mode=auto"],
        "swapping (mode swap, or auto over budget) needs the edgectl control plane",
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


@pytest.mark.parametrize(("models", "sets", "message"), TIMESLICE_CASES)
def test_timeslice_policy_is_checked(helm, models, sets, message):
    error = render_error(
        helm,
        VARIANTS["cpu"],
        "timeslice.enabled=true",
        "triton.models={ensemble,small}",
        *sets,
        json_sets=(f"timeslice.policy.models={json.dumps(models)}",),
    )
    assert message in error


def test_timeslice_is_refused_on_gpu(helm):
    error = render_error(helm, VARIANTS["gpu"], "timeslice.enabled=true")
    assert "timeslice.enabled needs profile cpu: the tensorrtllm backend has no per-step" in error
