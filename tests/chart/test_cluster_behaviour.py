"""What a real cluster would do with the chart, checked on the rendered objects: eviction sums,
rollout vs access mode, the build's skip/publish, deadlines, autoscaling signals, GPU sharing,
identity egress, shutdown timing, fsGroup, and the OpenAI gateway container."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helpers import (
    CHART,
    TOOLS_BIN,
    VARIANTS,
    Rendered,
    render_error,
    render_with,
)
from tests.chart.test_render import container, pod_spec, volumes_of

FULLNAME = "edge-edgectl"
UNITS = {
    "": 1,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
}


def size(quantity: str | int) -> float:
    text = str(quantity)
    number = text.rstrip("KMGTik")
    return float(number) * UNITS[text[len(number) :]]


def ephemeral(spec: dict[str, Any]) -> tuple[float, float]:
    """(disk-backed emptyDir sizeLimits, the pod's ephemeral-storage limit) of a pod spec."""
    dirs = sum(
        size(volume["emptyDir"]["sizeLimit"])
        for volume in spec["volumes"]
        if "emptyDir" in volume and volume["emptyDir"].get("medium") != "Memory"
    )
    limit = sum(
        size(item["resources"]["limits"]["ephemeral-storage"]) for item in spec["containers"]
    )
    return dirs, limit


# -- emptyDirs fit the pod's ephemeral-storage limit --------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_disk_emptydirs_fit_the_pods_ephemeral_limit(rendered, variant):
    result = rendered[variant]
    for kind in ["Deployment"] + (["Job"] if result.all("Job") else []):
        spec = pod_spec(result, kind)
        dirs, limit = ephemeral(spec)
        logs = 64 * 2**20 * len(spec["containers"])
        assert dirs + logs <= limit, (kind, dirs, limit)


def test_object_storage_copy_counts_against_the_limit(rendered):
    spec = pod_spec(rendered["gpu-gcs"])
    assert volumes_of(spec)["model-data"]["emptyDir"]["sizeLimit"] == "20Gi"
    dirs, limit = ephemeral(spec)
    assert dirs == size("8Gi") + size("256Mi") + size("20Gi")
    assert limit == size("32Gi") + size("512Mi")  # triton + openai


def test_an_emptydir_bigger_than_the_limit_is_refused(helm):
    error = render_error(
        helm,
        VARIANTS["cpu"],
        "modelRepository.source=objectStorage",
        "modelRepository.objectStorage.url=s3://bucket/models",
        "modelRepository.objectStorage.sizeLimit=50Gi",
    )
    assert "the server pod would be evicted" in error
    assert "modelRepository.objectStorage.sizeLimit 50Gi" in error
    assert "sum to 4831838208" in error  # 4Gi + 512Mi
    build = render_error(
        helm,
        VARIANTS["cpu"],
        "modelRepository.source=engineBuild",
        "triton.tmpSize=9Gi",
        "resources.limits.ephemeral-storage=12Gi",
    )
    assert "the engine-build pod would be evicted" in build


def test_a_limit_on_one_container_only_still_counts(helm):
    # Without a limit on triton the pod's limit is the gateway's alone: 512Mi < /tmp.
    error = render_error(helm, VARIANTS["cpu"], "resources.limits.ephemeral-storage=null")
    assert "sum to 536870912" in error


# -- access mode and rollout strategy ---------------------------------------------------


def test_read_write_once_claims_roll_out_with_recreate(rendered):
    assert rendered["cpu"].get("Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert rendered["gpu"].get("Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert rendered["gpu-mig"].get("Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_shared_claims_and_copies_roll(rendered):
    assert rendered["gpu-build"].get("Deployment")["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    assert rendered["cpu-full"].get("Deployment")["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


def test_a_surge_onto_a_read_write_once_claim_is_refused(helm):
    error = render_error(helm, VARIANTS["cpu"], "strategy.type=RollingUpdate")
    assert "maxSurge 25%" in error and "cannot attach it" in error
    error = render_error(
        helm, VARIANTS["cpu"], "strategy.type=RollingUpdate", "strategy.rollingUpdate.maxSurge=1"
    )
    assert "maxSurge 1 starts a second pod" in error
    allowed = render_with(
        helm,
        VARIANTS["cpu"],
        "strategy.type=RollingUpdate",
        "strategy.rollingUpdate.maxSurge=0",
        "strategy.rollingUpdate.maxUnavailable=1",
    )
    assert allowed.get("Deployment")["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_the_build_job_prefers_the_node_holding_a_read_write_once_claim(rendered):
    spec = pod_spec(rendered["gpu-mig"], "Job")
    (term,) = spec["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    server = rendered["gpu-mig"].get("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= server.items()
    assert "podAffinity" not in pod_spec(rendered["gpu-build"], "Job").get("affinity", {})


@pytest.mark.parametrize(
    ("variant", "expected"),
    [("cpu", "Rollout: Recreate, because the model claim is ReadWriteOnce"),
     ("gpu-build", "Rollout: RollingUpdate (maxSurge 0, maxUnavailable 1)")],
)  # fmt: skip
def test_notes_say_how_the_release_rolls_out(helm, variant, expected):
    args = [helm, "install", "edge", CHART, "--namespace", "serving", "--dry-run=client"]
    for path in VARIANTS[variant]:
        args += ["--values", path]
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout.partition("NOTES:")[2]


# -- the build: skipped when live, published as a version, bounded ---------------------


def build_id(result: Rendered) -> str:
    return result.get("Job")["metadata"]["annotations"]["edgectl.io/build-id"]


def test_a_build_already_live_creates_no_job(helm, rendered):
    live = build_id(rendered["gpu-build"])
    skipped = render_with(
        helm, VARIANTS["gpu-build"], f"modelRepository.engineBuild.completedBuildId={live}"
    )
    assert not skipped.all("Job")
    assert skipped.get("Deployment")  # the server still rolls out, on current/
    other = render_with(
        helm, VARIANTS["gpu-build"], "modelRepository.engineBuild.completedBuildId=0123456789ab"
    )
    assert build_id(other) == live


def test_the_build_deadline_ends_before_edgectls_helm_timeout(rendered):
    from edgectl.config import K8sConfig

    job = rendered["gpu-build"].get("Job")
    assert job["spec"]["activeDeadlineSeconds"] < K8sConfig().helm_timeout_s


def job_script(result: Rendered) -> tuple[str, list[str], dict[str, str]]:
    (build,) = pod_spec(result, "Job")["containers"]
    env = {item["name"]: item["value"] for item in build["env"] if "value" in item}
    return build["command"][2], build["args"], env


def run_job(result: Rendered, claim: Path, build: str, extra_env: dict[str, str]) -> str:
    """Run the Job's container command with the claim at a local folder, as sh would."""
    wrapper, args, env = job_script(result)
    local = [arg.replace("/models", str(claim)) for arg in args]
    env = {**env, **extra_env, "EDGECTL_STORE": str(claim), "EDGECTL_BUILD_ID": build}
    env["PATH"] = os.environ["PATH"]
    done = subprocess.run(
        ["/bin/sh", "-ec", wrapper, "engine-build", *local],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_gpu_build_publishes_versions_and_switches_current(helm, tmp_path):
    result = render_with(helm, VARIANTS["gpu"], "modelRepository.source=engineBuild")
    plan = tmp_path / "artifacts" / "p.trtllm"
    (plan / "model_repository" / "ensemble").mkdir(parents=True)
    engine = plan / "rank0.engine"
    (plan / "build_engine.sh").write_text(
        f'#!/bin/sh\necho "$ENGINE_TAG" > {engine}\n', encoding="utf-8"
    )
    (plan / "build_engine.sh").chmod(0o755)
    env = {"EDGECTL_PLAN": "p.trtllm"}

    run_job(result, tmp_path, "aaaaaaaaaaaa", {**env, "ENGINE_TAG": "one"})
    assert os.readlink(tmp_path / "current") == "builds/aaaaaaaaaaaa"
    first = (tmp_path / "current").resolve()  # what a pod started now mounts
    assert (first / "repository" / "ensemble").is_dir()
    assert (first / "artifacts" / "p.trtllm" / "rank0.engine").read_text() == "one\n"

    run_job(result, tmp_path, "bbbbbbbbbbbb", {**env, "ENGINE_TAG": "two"})
    assert os.readlink(tmp_path / "current") == "builds/bbbbbbbbbbbb"
    assert os.readlink(tmp_path / "previous") == "builds/aaaaaaaaaaaa"
    # The running pod's build is untouched by the new one.
    assert (first / "artifacts" / "p.trtllm" / "rank0.engine").read_text() == "one\n"
    current = tmp_path / "current" / "artifacts" / "p.trtllm" / "rank0.engine"
    assert current.read_text() == "two\n"

    again = run_job(result, tmp_path, "bbbbbbbbbbbb", {**env, "ENGINE_TAG": "ignored"})
    assert "already published" in again
    assert current.read_text() == "two\n"

    run_job(result, tmp_path, "cccccccccccc", {**env, "ENGINE_TAG": "three"})
    assert sorted(p.name for p in (tmp_path / "builds").iterdir()) == [
        "bbbbbbbbbbbb",
        "cccccccccccc",
    ]  # current and previous are kept, older builds pruned


def test_a_build_that_leaves_no_repository_fails_and_keeps_current(helm, tmp_path):
    result = render_with(
        helm,
        VARIANTS["cpu"],
        "modelRepository.source=engineBuild",
        json_sets=('modelRepository.engineBuild.command=["/bin/sh", "-ec", "true"]',),
    )
    wrapper, _, env = job_script(result)
    (tmp_path / "builds" / "old" / "repository").mkdir(parents=True)
    os.symlink("builds/old", tmp_path / "current")
    done = subprocess.run(
        ["/bin/sh", "-ec", wrapper, "engine-build", "/bin/sh", "-ec", "true"],
        env={**env, "EDGECTL_STORE": str(tmp_path), "PATH": os.environ["PATH"]},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "left no" in done.stderr
    assert os.readlink(tmp_path / "current") == "builds/old"


# -- autoscaling on the engine's signals -------------------------------------------------


def profile_values(profile: str) -> dict[str, Any]:
    base = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    over = yaml.safe_load((CHART / f"values-{profile}.yaml").read_text(encoding="utf-8"))
    rules = over.get("autoscaling", {}).get("prometheusAdapterRules")
    return {**base["autoscaling"], **({"prometheusAdapterRules": rules} if rules else {})}


ENGINE_SERIES = {
    "cpu": ("edgectl_engine_waiting", "edgectl_engine_kv_cache_usage"),
    "gpu": (
        "nv_trt_llm_request_metrics",
        'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"',
    ),
}


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_adapter_rules_serve_the_engines_waiting_and_kv_cache(profile):
    values = profile_values(profile)
    rules = {rule["name"]["as"]: rule for rule in values["prometheusAdapterRules"]}
    waiting, kv_cache = ENGINE_SERIES[profile]
    wait_rule = rules[values["waitingRequests"]["metricName"]]
    assert waiting in wait_rule["metricsQuery"]
    assert "nv_inference_pending_request_count" in wait_rule["metricsQuery"]
    assert "nv_inference_queue_duration_us" not in str(rules)
    if profile == "gpu":
        assert 'request_type=~"waiting|"' in wait_rule["metricsQuery"]
    assert kv_cache in rules[values["kvCacheUsage"]["metricName"]]["metricsQuery"]
    for rule in rules.values():
        assert "<<.LabelMatchers>>" in rule["metricsQuery"]
        assert "by (<<.GroupBy>>)" in rule["metricsQuery"]
        assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}


def test_cpu_rules_read_gauges_the_cpu_engine_exports():
    from edgectl.runtime.metrics import ENGINE_GAUGES, ENGINE_PREFIX

    exported = {f"{ENGINE_PREFIX}_{name}" for name in ENGINE_GAUGES}
    assert set(ENGINE_SERIES["cpu"]) <= exported


def test_hpa_scales_on_waiting_requests_and_kv_cache(rendered):
    result = rendered["cpu-full"]
    hpa = result.get("HorizontalPodAutoscaler", FULLNAME)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME,
    }  # fmt: skip
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    metrics = {m["pods"]["metric"]["name"]: m["pods"]["target"] for m in hpa["spec"]["metrics"]}
    assert metrics == {
        "edgectl_waiting_requests": {"type": "AverageValue", "averageValue": "4"},
        "edgectl_kv_cache_usage": {"type": "AverageValue", "averageValue": "800m"},
    }
    assert "replicas" not in result.get("Deployment")["spec"]  # the HPA owns it
    assert not result.all("ScaledObject")


def test_keda_replaces_the_hpa_with_the_same_signals(rendered):
    result = rendered["gpu-timeslice"]
    assert not result.all("HorizontalPodAutoscaler")
    scaled = result.get("ScaledObject", FULLNAME)
    assert scaled["spec"]["scaleTargetRef"]["name"] == FULLNAME
    triggers = {t["name"]: t for t in scaled["spec"]["triggers"]}
    waiting = triggers["waiting-requests"]["metadata"]
    assert "nv_trt_llm_request_metrics" in waiting["query"]
    assert 'request_type=~"waiting|"' in waiting["query"]
    assert f'pod=~"{FULLNAME}-[a-z0-9]+-[a-z0-9]+"' in waiting["query"]
    assert waiting["threshold"] == "4"
    kv = triggers["kv-cache-usage"]["metadata"]
    assert 'kv_cache_block_type="fraction"' in kv["query"] and kv["threshold"] == "0.8"
    assert {t["metricType"] for t in triggers.values()} == {"AverageValue"}


def test_hpa_metric_without_an_adapter_rule_is_refused(helm):
    error = render_error(
        helm, VARIANTS["cpu"], "autoscaling.enabled=true",
        "autoscaling.waitingRequests.metricName=queue_depth",
    )  # fmt: skip
    assert "no rule in autoscaling.prometheusAdapterRules serves queue_depth" in error


def test_custom_resources_match_their_crd_schemas(manifests_dir, rendered):
    python = TOOLS_BIN / "python"
    checker = Path(__file__).parent / "validate_crds.py"
    files = sorted(manifests_dir.glob("*.yaml"))
    done = subprocess.run(
        [str(python), str(checker), *map(str, files)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    kinds = {"ServiceMonitor", "PodMonitor", "ScaledObject"}
    expected = sum(1 for r in rendered.values() for doc in r.docs if doc["kind"] in kinds)
    assert done.stdout.count("PASS ") == expected >= 4


def test_the_crd_check_refuses_unknown_fields(tmp_path):
    bad = {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [], "maxReplicas": 3},
    }  # fmt: skip
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad), encoding="utf-8")
    done = subprocess.run(
        [str(TOOLS_BIN / "python"), str(Path(__file__).parent / "validate_crds.py"),
         str(tmp_path / "bad.yaml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "maxReplicas" in done.stdout


# -- GPU sharing --------------------------------------------------------------------------


def node_terms(result: Rendered, kind: str = "Deployment") -> list[dict[str, Any]]:
    affinity = pod_spec(result, kind)["affinity"]["nodeAffinity"]
    (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return term["matchExpressions"]


def test_time_sliced_replica_is_requested_by_its_shared_name(rendered):
    result = rendered["gpu-timeslice"]
    resources = container(result, "triton")["resources"]
    assert resources["limits"]["nvidia.com/gpu.shared"] == 1
    assert "nvidia.com/gpu" not in resources["limits"]
    assert node_terms(result) == [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["Tesla-T4"]}
    ]


def test_time_slicing_without_rename_matches_the_shared_product_label(helm):
    result = render_with(
        helm, VARIANTS["gpu"], "gpu.sharing=timeSlicing", "gpu.products={Tesla-T4}"
    )
    assert container(result, "triton")["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert node_terms(result) == [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["Tesla-T4-SHARED"]}
    ]


def test_mig_slice_is_requested_for_server_and_build(rendered):
    result = rendered["gpu-mig"]
    assert container(result, "triton")["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == 1
    (build,) = pod_spec(result, "Job")["containers"]
    assert build["resources"]["requests"]["nvidia.com/mig-1g.10gb"] == 1
    assert node_terms(result, "Job")[0]["values"] == ["NVIDIA-A100-SXM4-80GB"]


def test_the_example_device_plugin_config_matches_the_timeslice_variant(rendered):
    example = yaml.safe_load(
        (CHART / "examples" / "nvidia-device-plugin-time-slicing.yaml").read_text("utf-8")
    )
    assert example["kind"] == "ConfigMap"
    (config_text,) = example["data"].values()
    config = yaml.safe_load(config_text)
    assert config["version"] == "v1"
    slicing = config["sharing"]["timeSlicing"]
    assert slicing["renameByDefault"] is True  # -> nvidia.com/gpu.shared
    assert slicing["failRequestsGreaterThanOne"] is True  # -> one replica per container
    assert slicing["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]
    variant = yaml.safe_load((Path(VARIANTS["gpu-timeslice"][1])).read_text("utf-8"))
    assert variant["gpu"]["resource"] == slicing["resources"][0]["name"] + ".shared"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["gpu.resource=nvidia.com/gpu.shared"], "needs gpu.sharing timeSlicing"),
        (["gpu.sharing=mig"], "gpu.sharing mig needs gpu.resource nvidia.com/mig-"),
        (["gpu.sharing=timeSlicing", "gpu.resource=nvidia.com/mig-1g.10gb"],
         "gpu.sharing timeSlicing hands out"),
        (["gpu.sharing=timeSlicing", "gpu.tensorParallel=2"], "must be 1, got 2"),
        (["resources.limits.nvidia\\.com/mig-1g\\.10gb=1"], "GPUs come from gpu.resource"),
    ],
)  # fmt: skip
def test_inconsistent_gpu_sharing_is_refused(helm, sets, message):
    assert message in render_error(helm, VARIANTS["gpu"], *sets)


# -- workload identity egress -------------------------------------------------------------


def egress(result: Rendered, name: str = FULLNAME) -> list[dict[str, Any]]:
    return result.get("NetworkPolicy", name)["spec"]["egress"]


def test_gke_metadata_server_is_reachable_when_asked(rendered):
    rules = egress(rendered["gpu-gcs"])
    assert {"to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}],
            "ports": [{"port": 80, "protocol": "TCP"}]} in rules  # fmt: skip
    assert {"to": [{"ipBlock": {"cidr": "169.254.169.252/32"}}],
            "ports": [{"port": 988, "protocol": "TCP"}]} in rules  # fmt: skip


def test_eks_pod_identity_agent_is_reachable_when_asked(rendered):
    rules = egress(rendered["cpu-full"])
    agent = {
        "to": [
            {"ipBlock": {"cidr": "169.254.170.23/32"}},
            {"ipBlock": {"cidr": "fd00:ec2::23/128"}},
        ],
        "ports": [{"port": 80, "protocol": "TCP"}],
    }
    assert agent in rules


def test_identity_egress_is_off_by_default_and_reaches_the_build(rendered, helm):
    assert "169.254" not in str(egress(rendered["cpu"]))
    result = render_with(helm, VARIANTS["gpu-build"], "networkPolicy.workloadIdentity=gke")
    assert "169.254.169.254/32" in str(egress(result, f"{FULLNAME}-engine-build"))


# -- shutdown ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_containers_pause_before_sigterm_within_the_grace_period(rendered, variant):
    result = rendered[variant]
    spec = pod_spec(result)
    values = {}
    for path in VARIANTS[variant]:
        values.update(yaml.safe_load(Path(path).read_text("utf-8")).get("triton", {}))
    longest = values.get("longestRequestSeconds", 40)
    for item in spec["containers"]:
        pause = int(item["lifecycle"]["preStop"]["exec"]["command"][1])
        assert pause >= 5
    args = container(result, "triton")["args"]
    (exit_timeout,) = [int(a.split("=")[1]) for a in args if a.startswith("--exit-timeout-secs")]
    assert exit_timeout >= longest
    assert spec["terminationGracePeriodSeconds"] >= pause + exit_timeout


def test_a_grace_period_shorter_than_the_longest_request_is_refused(helm):
    error = render_error(helm, VARIANTS["cpu"], "triton.longestRequestSeconds=50")
    assert "Triton would get only 45 s after SIGTERM to finish a 50 s request" in error


# -- fsGroup ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["cpu", "gpu-build", "gpu-mig"])
def test_fsgroup_is_applied_only_on_root_mismatch(rendered, variant):
    result = rendered[variant]
    for kind in ["Deployment"] + (["Job"] if result.all("Job") else []):
        assert pod_spec(result, kind)["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    # The server mounts the claim read-only, which the kubelet skips for fsGroup anyway.
    claim = volumes_of(pod_spec(result))["model-data"]["persistentVolumeClaim"]
    assert claim["readOnly"] is True


# -- comments describe what the templates do ---------------------------------------------------


def test_no_template_or_value_mentions_a_build_wait_init_container():
    for path in [*CHART.glob("*.yaml"), *(CHART / "templates").glob("*")]:
        text = path.read_text(encoding="utf-8").lower()
        assert "wait for the engine build" not in text, path
        assert "waits for its marker" not in text, path


# -- the OpenAI-compatible gateway ------------------------------------------------------------


def test_gateway_runs_beside_triton_with_its_own_probes_and_port(rendered):
    result = rendered["cpu"]
    gateway = container(result, "openai")
    assert gateway["command"] == [
        "edgectl", "openai", "serve", "--host", "0.0.0.0", "--port", "9000",
        "--triton-grpc", "127.0.0.1:8001",
    ]  # fmt: skip
    for probe in ("livenessProbe", "readinessProbe"):
        assert gateway[probe]["httpGet"] == {"path": "/health/ready", "port": "openai"}
    assert gateway["ports"] == [{"name": "openai", "containerPort": 9000, "protocol": "TCP"}]
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert gateway["image"] == container(result, "triton")["image"]
    assert "lifecycle" in gateway
    assert "EDGECTL_OPENAI_API_KEY" not in str(gateway)


def test_gateway_reads_its_api_key_from_the_secret(rendered):
    gateway = container(rendered["cpu-full"], "openai")
    assert gateway["command"][-2:] == ["--api-key-env", "EDGECTL_OPENAI_API_KEY"]
    (key,) = [item for item in gateway["env"] if item["name"] == "EDGECTL_OPENAI_API_KEY"]
    assert key["valueFrom"] == {"secretKeyRef": {"name": "openai-api-key", "key": "api-key"}}


def test_gpu_gateway_uses_an_image_with_edgectl(rendered):
    gateway = container(rendered["gpu"], "openai")
    assert gateway["image"] == "edgectl/triton-cpu:0.1.0"


def test_gateway_can_be_turned_off(helm):
    result = render_with(helm, VARIANTS["cpu"], "openai.enabled=false")
    assert [c["name"] for c in pod_spec(result)["containers"]] == ["triton"]
    ports = [p["name"] for p in result.get("Service")["spec"]["ports"]]
    assert "openai" not in ports
    rules = result.get("NetworkPolicy", FULLNAME)["spec"]["ingress"]
    assert "openai" not in str(rules)


# -- the live build's lookup, against a stand-in API server -----------------------------------

JOB_PATH = f"/apis/batch/v1/namespaces/serving/jobs/{FULLNAME}-engine-build"


def server_render(
    helm: Path, tmp_path: Path, job: dict[str, Any] | None, objects: dict | None = None
) -> tuple[Rendered, list]:
    """`helm template --dry-run=server` (so `lookup` asks the server) with a previous Job."""
    from tests.chart.fake_apiserver import FakeApiServer

    server = FakeApiServer({**(objects or {}), **({JOB_PATH: job} if job else {})})
    try:
        args = [str(helm), "template", "edge", str(CHART), "--namespace", "serving",
                "--values", str(CHART / "values-gpu.yaml"),
                "--set", "modelRepository.source=engineBuild",
                "--dry-run=server", "--disable-openapi-validation"]  # fmt: skip
        env = {**os.environ, "KUBECONFIG": str(server.kubeconfig(tmp_path, "serving"))}
        done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    return Rendered(done.stdout, docs), server.requests


def previous_job(build: str, succeeded: int) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{FULLNAME}-engine-build",
            "namespace": "serving",
            "annotations": {"edgectl.io/build-id": build},
        },
        "status": {"succeeded": succeeded} if succeeded else {"active": 1},
    }


def test_helm_skips_the_job_when_the_same_build_succeeded(helm, tmp_path):
    first, requests = server_render(helm, tmp_path, None)
    assert JOB_PATH in requests  # the chart asked the API server
    live = build_id(first)
    again, _ = server_render(helm, tmp_path, previous_job(live, succeeded=1))
    assert not again.all("Job")
    assert again.get("Deployment")


@pytest.mark.parametrize(("same_id", "succeeded"), [(False, 1), (True, 0)])
def test_helm_runs_the_job_for_a_new_or_unfinished_build(helm, tmp_path, same_id, succeeded):
    first, _ = server_render(helm, tmp_path, None)
    build = build_id(first) if same_id else "0123456789ab"
    again, _ = server_render(helm, tmp_path, previous_job(build, succeeded))
    assert build_id(again) == build_id(first)


def test_an_existing_claim_is_not_created_again(helm, tmp_path):
    claim_path = f"/api/v1/namespaces/serving/persistentvolumeclaims/{FULLNAME}-models"
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": f"{FULLNAME}-models", "namespace": "serving"}}  # fmt: skip
    fresh, requests = server_render(helm, tmp_path, None)
    assert claim_path in requests and fresh.all("PersistentVolumeClaim")
    kept, _ = server_render(helm, tmp_path, None, {claim_path: claim})
    assert not kept.all("PersistentVolumeClaim")
