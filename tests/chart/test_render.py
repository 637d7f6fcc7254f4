"""`helm template` output, parsed and checked: what each profile and option must render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helpers import CHART, NAMESPACE, RELEASE, VARIANTS, Rendered, render_with, run

FULLNAME = f"{RELEASE}-edgectl"


def pod_spec(result: Rendered, kind: str = "Deployment") -> dict[str, Any]:
    return result.get(kind)["spec"]["template"]["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec.get("initContainers", []) + spec["containers"]


def container(result: Rendered, name: str, kind: str = "Deployment") -> dict[str, Any]:
    (found,) = [c for c in pod_spec(result, kind)["containers"] if c["name"] == name]
    return found


def triton(result: Rendered) -> dict[str, Any]:
    return container(result, "triton")


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


def mounts_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {mount["mountPath"]: mount for mount in container["volumeMounts"]}


def volumes_of(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {volume["name"]: volume for volume in spec["volumes"]}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_resource_is_namespaced_and_labelled(rendered, variant):
    for doc in rendered[variant].docs:
        meta = doc["metadata"]
        assert meta["namespace"] == NAMESPACE, (doc["kind"], meta["name"])
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert len(meta["name"]) <= 63


def test_default_profiles_render_only_the_core_resources(rendered):
    core = {
        "Deployment",
        "Service",
        "ServiceAccount",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    assert rendered["cpu"].kinds == core
    assert rendered["gpu"].kinds == core


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_service_exposes_http_grpc_and_metrics(rendered, variant):
    service = rendered[variant].get("Service", FULLNAME)
    ports = {port["name"]: (port["port"], port["targetPort"]) for port in service["spec"]["ports"]}
    assert ports == {
        "http": (8000, "http"),
        "grpc": (8001, "grpc"),
        "metrics": (8002, "metrics"),
        "openai": (9000, "openai"),
    }
    container_ports = {
        port["name"]: port["containerPort"]
        for item in pod_spec(rendered[variant])["containers"]
        for port in item["ports"]
    }
    assert container_ports == {"http": 8000, "grpc": 8001, "metrics": 8002, "openai": 9000}
    labels = rendered[variant].get("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize(("variant", "min_startup_s"), [("cpu", 600), ("gpu", 1800)])
def test_probes_use_triton_health_and_allow_for_engine_load(rendered, variant, min_startup_s):
    container = triton(rendered[variant])
    paths = {
        kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")
    }
    assert paths["startup"] == {"path": "/v2/health/ready", "port": "http"}
    assert paths["liveness"] == {"path": "/v2/health/live", "port": "http"}
    assert paths["readiness"] == {"path": "/v2/health/ready", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= min_startup_s


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_triton_runs_the_repository_with_explicit_model_control(rendered, variant):
    result = rendered[variant]
    args = triton(result)["args"]
    assert "--model-repository=/models/repository" in args
    assert "--model-control-mode=explicit" in args
    assert "--load-model=ensemble" in args
    assert {"--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"} <= set(args)
    grace = pod_spec(result)["terminationGracePeriodSeconds"]
    pause = int(triton(result)["lifecycle"]["preStop"]["exec"]["command"][1])
    assert f"--exit-timeout-secs={grace - pause - 5}" in args


def test_cpu_profile_requests_no_gpu_and_uses_cpu_flags(rendered):
    container = triton(rendered["cpu"])
    for section in ("requests", "limits"):
        assert "nvidia.com/gpu" not in container["resources"][section]
    assert "--backend-directory=/opt/edgectl/backends" in container["args"]
    assert "--allow-gpu-metrics=false" in container["args"]
    assert "tolerations" not in pod_spec(rendered["cpu"])


def test_gpu_profile_requests_one_gpu_on_a_gpu_node(rendered):
    container = triton(rendered["gpu"])
    assert container["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert container["image"].endswith("-trtllm-python-py3")
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "TRTLLM_ORCHESTRATOR" not in env_of(container)
    spec = pod_spec(rendered["gpu"])
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]


def test_gpus_are_tensor_times_pipeline_parallel_with_product_affinity(rendered):
    result = rendered["gpu-build"]
    container = triton(result)
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 4
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert env_of(container)["TRTLLM_ORCHESTRATOR"] == "1"
    spec = pod_spec(result)
    (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchExpressions"] == [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]},
        {
            "key": "nvidia.com/gpu.sharing-strategy",
            "operator": "NotIn",
            "values": ["mps", "time-slicing"],
        },
    ]
    assert spec["runtimeClassName"] == "nvidia"
    assert container["image"] == (
        "nvcr.io/nvidia/tritonserver@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pods_run_non_root_read_only_without_privilege_escalation(rendered, variant):
    result = rendered[variant]
    kinds = ["Deployment"] + (["Job"] if result.all("Job") else [])
    for kind in kinds:
        spec = pod_spec(result, kind)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] > 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for container in containers(spec):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["privileged"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys()
            assert "memory" in resources["limits"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_writable_paths_are_emptydirs_and_the_store_is_read_only(rendered, variant):
    result = rendered[variant]
    spec = pod_spec(result)
    volumes = volumes_of(spec)
    mounts = mounts_of(triton(result))
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"]["sizeLimit"]
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
    assert "emptyDir" in volumes[mounts["/models"]["name"]]  # per-pod /models/run
    built = result.all("Job")  # engine builds publish versions: the pod reads current/
    prefix = "current/" if built else ""
    for path, sub in (("/models/repository", "repository"), ("/models/artifacts", "artifacts")):
        assert mounts[path]["readOnly"] is True
        assert mounts[path]["subPath"] == prefix + sub
        assert mounts[path]["name"] == "model-data"
    assert env_of(triton(result))["HOME"] == "/tmp"
    assert result.get("ServiceAccount")["automountServiceAccountToken"] is False


def test_pvc_source_creates_the_claim_once_as_a_kept_hook(rendered, helm):
    claim = rendered["cpu"].get("PersistentVolumeClaim", f"{FULLNAME}-models")
    assert claim["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "helm.sh/hook-delete-policy" not in claim["metadata"]["annotations"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    data = volumes_of(pod_spec(rendered["cpu"]))["model-data"]
    assert data["persistentVolumeClaim"] == {"claimName": f"{FULLNAME}-models", "readOnly": True}
    existing = render_with(helm, VARIANTS["cpu"], "modelRepository.pvc.existingClaim=shared-models")
    assert not existing.all("PersistentVolumeClaim")
    data = volumes_of(pod_spec(existing))["model-data"]
    assert data["persistentVolumeClaim"]["claimName"] == "shared-models"


def test_s3_store_is_fetched_by_an_init_container_with_file_credentials(rendered):
    result = rendered["cpu-full"]
    spec = pod_spec(result)
    fetch = spec["initContainers"][0]  # before the time-slicing board (test_timeslice.py)
    assert fetch["name"] == "fetch-model-store"
    assert fetch["image"].startswith("amazon/aws-cli:")
    assert fetch["command"][:5] == ["aws", "s3", "sync", "s3://edge-models/smollm2", "/store"]
    assert fetch["command"][-2:] == ["--endpoint-url", "https://minio.storage.svc:9000"]
    env = env_of(fetch)
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/var/run/secrets/edgectl/storage/credentials"
    assert env["AWS_REGION"] == "eu-west-1"
    assert mounts_of(fetch)["/var/run/secrets/edgectl/storage"]["readOnly"] is True
    volumes = volumes_of(spec)
    assert volumes["storage-credentials"]["secret"]["secretName"] == "edge-models-s3"
    assert volumes["model-data"]["emptyDir"]["sizeLimit"] == "10Gi"
    assert not result.all("PersistentVolumeClaim")


# The one secret in an environment variable: the gateway's API key, by reference only.
GATEWAY_KEY = {
    "name": "EDGECTL_OPENAI_API_KEY",
    "valueFrom": {"secretKeyRef": {"name": "openai-api-key", "key": "api-key"}},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_secret_reaches_an_environment_variable(rendered, variant):
    result = rendered[variant]
    for kind in ("Deployment", "Job"):
        for doc in result.all(kind):
            for item_container in containers(doc["spec"]["template"]["spec"]):
                for item in item_container.get("env", []):
                    if item_container["name"] == "openai" and item == GATEWAY_KEY:
                        continue
                    assert "valueFrom" not in item, (item_container["name"], item)
                    assert "SECRET" not in item["name"] and "KEY" not in item["name"]


def test_gcs_store_uses_gcloud_and_a_service_account_key_file(rendered):
    (fetch,) = pod_spec(rendered["gpu-gcs"])["initContainers"]
    assert fetch["image"].startswith("google/cloud-sdk:")
    url = "gs://edge-engines/llama-3.1-8b-int4"
    assert fetch["command"] == ["gcloud", "storage", "rsync", "--recursive", url, "/store"]
    env = env_of(fetch)
    assert (
        env["CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE"] == "/var/run/secrets/edgectl/storage/key.json"
    )
    assert env["CLOUDSDK_CONFIG"] == "/tmp/gcloud"


def test_engine_build_runs_as_hook_job_before_the_server(rendered):
    result = rendered["gpu-build"]
    job = result.get("Job", f"{FULLNAME}-engine-build")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    weights = {
        doc["kind"]: int(doc["metadata"]["annotations"]["helm.sh/hook-weight"])
        for doc in result.docs
        if "helm.sh/hook-weight" in doc["metadata"].get("annotations", {})
    }
    # claim and build NetworkPolicy, then the config the Job mounts, then the Job
    assert weights["PersistentVolumeClaim"] < weights["ConfigMap"] < weights["Job"]
    assert weights["NetworkPolicy"] < weights["Job"]
    spec = job["spec"]["template"]["spec"]
    (build,) = spec["containers"]
    plan = "trtllm-build --checkpoint_dir /models/checkpoints/llama"
    assert build["args"][:2] == ["/bin/sh", "-ec"]
    assert f"{plan} --output_dir /models/artifacts/llama" in build["args"][2]
    assert build["command"][:2] == ["/bin/sh", "-ec"]
    assert env_of(build)["EDGECTL_BUILD_ID"] == annotations["edgectl.io/build-id"]
    assert env_of(build)["EDGECTL_CACHE"] == "/models/artifacts"
    assert build["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert "readOnly" not in mounts_of(build)["/models"]
    assert spec["restartPolicy"] == "Never"
    assert "serviceAccountName" not in spec  # the chart's account is created after hooks
    claim = result.get("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == "fast-rwx"


def test_cpu_engine_build_runs_edgectl_with_the_edgectl_config(helm):
    result = render_with(
        helm,
        VARIANTS["cpu"],
        "modelRepository.source=engineBuild",
        "edgectlConfig.model.recipe=build/smollm2-135m-int4.yaml",
    )
    (build,) = pod_spec(result, "Job")["containers"]
    script = build["args"][2]
    assert 'edgectl --config /etc/edgectl/edgectl.yaml build "$EDGECTL_RECIPE"' in script
    assert "render --out /models/repository" in script
    assert env_of(build)["EDGECTL_RECIPE"] == "build/smollm2-135m-int4.yaml"
    assert build["workingDir"] == "/opt/edgectl"
    config = result.get("ConfigMap", f"{FULLNAME}-edgectl-config")
    assert yaml.safe_load(config["data"]["edgectl.yaml"]) == {
        "model": {"recipe": "build/smollm2-135m-int4.yaml"}
    }


def test_build_id_follows_the_build_inputs(helm):
    def build_id(*sets: str) -> str:
        job = render_with(helm, VARIANTS["gpu-build"], *sets).get("Job")
        return job["metadata"]["annotations"]["edgectl.io/build-id"]

    same = build_id()
    assert build_id() == same
    assert build_id("replicaCount=3") == same
    assert build_id("modelRepository.engineBuild.image.tag=26.01-trtllm-python-py3") != same
    assert build_id("edgectlConfig.engine.max_input_len=2048") != same
    assert build_id("gpu.tensorParallel=4") != same


def test_pdb_protects_the_server_pods(rendered):
    labels = rendered["cpu"].get("Deployment")["spec"]["template"]["metadata"]["labels"]
    default = rendered["cpu"].get("PodDisruptionBudget")
    assert default["apiVersion"] == "policy/v1"
    assert default["spec"]["maxUnavailable"] == 1
    assert default["spec"]["selector"]["matchLabels"].items() <= labels.items()
    full = rendered["cpu-full"].get("PodDisruptionBudget")["spec"]
    assert full["minAvailable"] == 1 and "maxUnavailable" not in full


def test_network_policy_admits_inference_and_metrics_and_limits_egress(rendered):
    default = rendered["cpu"].get("NetworkPolicy", FULLNAME)["spec"]
    assert default["policyTypes"] == ["Ingress", "Egress"]
    assert [rule["ports"] for rule in default["ingress"]] == [
        [{"port": "http", "protocol": "TCP"}, {"port": "grpc", "protocol": "TCP"}],
        [{"port": "metrics", "protocol": "TCP"}],
        [{"port": "openai", "protocol": "TCP"}],
    ]
    assert default["egress"] == [
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    ]
    full = rendered["cpu-full"].get("NetworkPolicy", FULLNAME)["spec"]
    namespaces = [
        rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in full["ingress"]
    ]
    assert namespaces == ["gateway", "monitoring", "apps"]
    assert full["egress"][1] == {
        "ports": [{"port": 9000, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
    }
    build = rendered["gpu-build"].get("NetworkPolicy", f"{FULLNAME}-engine-build")["spec"]
    assert build["ingress"] == []
    assert build["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "engine-build"


def test_ingress_routes_http_with_tls(rendered):
    ingress = rendered["cpu-full"].get("Ingress", FULLNAME)
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "triton.edge.example"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": FULLNAME,
        "port": {"name": "http"},
    }
    assert ingress["spec"]["tls"] == [
        {"secretName": "triton-tls", "hosts": ["triton.edge.example"]}
    ]


def test_monitor_toggles_scrape_the_metrics_port(rendered):
    service_monitor = rendered["cpu-full"].get("ServiceMonitor", FULLNAME)
    assert service_monitor["metadata"]["labels"]["release"] == "prometheus"
    assert service_monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s"}
    ]
    assert not rendered["cpu-full"].all("PodMonitor")
    pod_monitor = rendered["gpu-build"].get("PodMonitor", FULLNAME)
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert not rendered["gpu-build"].all("ServiceMonitor")


def test_timeslice_policy_is_rendered_into_a_mounted_configmap(rendered):
    result = rendered["cpu-full"]
    config_map = result.get("ConfigMap", f"{FULLNAME}-timeslice")
    policy = yaml.safe_load(config_map["data"]["policy.yaml"])
    values = yaml.safe_load((Path(__file__).parent / "values" / "cpu-full.yaml").read_text())
    assert policy == values["timeslice"]["policy"]
    assert [model["share"] for model in policy["models"]] == [30, 70]
    init = {c["name"]: c for c in pod_spec(result)["initContainers"]}["timeslice-board"]
    assert mounts_of(init)["/etc/edgectl/timeslice"]["name"] == "timeslice"
    mount = mounts_of(triton(result))["/etc/edgectl/timeslice"]
    assert mount["readOnly"] is True
    volume = volumes_of(pod_spec(result))[mount["name"]]
    assert volume["configMap"]["name"] == f"{FULLNAME}-timeslice"
    template = result.get("Deployment")["spec"]["template"]
    assert "checksum/timeslice" in template["metadata"]["annotations"]
    args = triton(result)["args"]
    assert "--load-model=ensemble" in args and "--load-model=small" in args


def test_kube_version_below_the_supported_range_is_refused(helm):
    args = ["template", RELEASE, str(CHART), "--values", str(CHART / "values-cpu.yaml")]
    too_old = run([helm, *args, "--kube-version", "1.24.0"])
    assert too_old.returncode != 0
    assert "kubeVersion" in too_old.stderr
    assert run([helm, *args, "--kube-version", "1.25.0"]).returncode == 0


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ("values-cpu.yaml", "(cpu profile)"),
        ("values-gpu.yaml", "(gpu profile, 1 GPU(s) per pod)"),
    ],
)
def test_notes_tell_how_to_reach_the_endpoints(helm, values, expected):
    result = run(
        [helm, "install", RELEASE, CHART, "--namespace", NAMESPACE, "--dry-run=client",
         "--values", CHART / values]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = result.stdout.partition("NOTES:")[2]
    assert expected in notes
    assert (
        f"kubectl -n {NAMESPACE} port-forward service/{FULLNAME} 8000:8000 8001:8001 8002:8002"
        in notes
    )
    assert "/v2/models/ensemble/generate" in notes
    assert f"http://{FULLNAME}.{NAMESPACE}.svc:8000" in notes
    assert "no authentication" in notes
