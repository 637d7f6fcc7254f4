"""edgectl.k8s and `deploy/status --target k8s` without a cluster: fake helm/kubectl binaries
record their arguments and answer with canned output.  The real helm runs in tests/chart."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgectl.cli import cli
from edgectl.config import EdgectlConfig, load_config
from edgectl.deploy import k8s
from edgectl.errors import EdgectlError


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path, monkeypatch) -> Path:
    """Run every test in an empty directory (the generated values land in .edgectl/k8s)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


class FakeTools:
    """Executable stand-ins for helm/kubectl that log argv and print what they are told."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder = folder / "bin"
        self.folder.mkdir()
        monkeypatch.setattr(k8s, "find_tool", self.find)

    def find(self, name: str) -> Path:
        path = self.folder / name
        if not path.is_file():
            raise EdgectlError(f"{name} not found; {k8s.INSTALL_HINT}")
        return path

    def add(self, name: str, stdout: str = "", stderr: str = "", code: int = 0, sleep: float = 0):
        script = (
            f"#!{sys.executable}\nimport json, sys, time\n"
            f"with open({str(self.log(name))!r}, 'a') as log:\n"
            "    log.write(json.dumps(sys.argv[1:]) + '\\n')\n"
            f"time.sleep({sleep})\n"
            f"sys.stdout.write({stdout!r})\nsys.stderr.write({stderr!r})\nsys.exit({code})\n"
        )
        path = self.folder / name
        path.write_text(script, encoding="utf-8")
        path.chmod(0o755)

    def log(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def calls(self, name: str) -> list[list[str]]:
        lines = self.log(name).read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]


@pytest.fixture
def tools(tmp_path, monkeypatch) -> FakeTools:
    return FakeTools(tmp_path, monkeypatch)


def config(*overrides: str) -> EdgectlConfig:
    return load_config(None, overrides)


def helm_release(state: str = "deployed") -> str:
    return json.dumps(
        {
            "name": "edgectl",
            "version": 3,
            "info": {
                "status": state,
                "last_deployed": "2026-11-26T13:00:00Z",
                "description": "Upgrade complete",
            },
        }
    )


def kubectl_listing(ready: int, desired: int = 2) -> str:
    pods = [
        {
            "kind": "Pod",
            "metadata": {"name": f"edgectl-abc-{index}"},
            "status": {
                "phase": "Running" if index < ready else "Pending",
                "conditions": [{"type": "Ready", "status": "True" if index < ready else "False"}],
                "containerStatuses": [
                    {"restartCount": index, "state": {"running": {}}}
                    if index < ready
                    else {"restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}
                ],
            },
        }
        for index in range(desired)
    ]
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "edgectl"},
        "spec": {"replicas": desired},
        "status": {"readyReplicas": ready, "updatedReplicas": desired, "availableReplicas": ready},
    }
    return json.dumps({"kind": "List", "items": [deployment, *pods]})


# -- values --------------------------------------------------------------------------------


def test_chart_values_come_from_the_edgectl_config():
    values = k8s.chart_values(
        config("model.name=smol", "server.log_verbose=2", "model.artifact=/home/me/smol")
    )
    assert values["profile"] == "cpu"
    assert values["triton"] == {"models": ["smol"], "logVerbose": 2}
    in_cluster = values["edgectlConfig"]
    assert "k8s" not in in_cluster
    assert in_cluster["model"]["artifact"] is None  # a path on this machine means nothing there
    assert in_cluster["model"]["name"] == "smol"
    assert EdgectlConfig.model_validate(in_cluster).engine == EdgectlConfig().engine


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            ("k8s.profile=gpu",),
            "k8s.profile gpu serves model.engine trtllm, but model.engine is cpu",
        ),
        (("model.engine=trtllm",), "k8s.profile cpu serves model.engine cpu"),
    ],
)
def test_profile_and_engine_must_agree(overrides, fragment):
    with pytest.raises(EdgectlError, match="set both to match") as err:
        k8s.chart_values(config(*overrides))
    assert fragment in str(err.value)


def test_gpu_profile_serves_trtllm():
    assert k8s.chart_values(config("k8s.profile=gpu", "model.engine=trtllm"))["profile"] == "gpu"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("k8s.release=Edge_1", "k8s.release"),
        ("k8s.namespace=-bad", "k8s.namespace"),
        ("k8s.profile=tpu", "k8s.profile"),
        ("k8s.helm_timeout_s=0", "k8s.helm_timeout_s"),
        ("k8s.kube_ctx=prod", "k8s.kube_ctx: unknown key"),
    ],
)
def test_bad_k8s_settings_name_the_key(override, key):
    with pytest.raises(EdgectlError) as err:
        config(override)
    assert f"  {key}" in str(err.value)


def test_generated_values_are_written_under_the_workdir(empty_cwd):
    settings = config("k8s.release=edge", "server.workdir=state")
    path = k8s.write_values(settings)
    assert path == Path("state/k8s/edge.values.yaml")
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == k8s.chart_values(settings)


def test_values_files_apply_profile_then_generated_then_user_files(empty_cwd):
    (empty_cwd / "site.yaml").write_text("replicaCount: 2\n", encoding="utf-8")
    settings = config("k8s.values_files=[site.yaml]")
    generated = k8s.write_values(settings)
    assert k8s.values_files(settings, generated) == [
        k8s.CHART_DIR / "values-cpu.yaml",
        generated,
        Path("site.yaml"),
    ]


def test_missing_values_file_is_named():
    settings = config("k8s.values_files=[nope.yaml]")
    with pytest.raises(EdgectlError, match="k8s.values_files: nope.yaml does not exist"):
        k8s.values_files(settings, Path("generated.yaml"))


# -- commands --------------------------------------------------------------------------------


def test_upgrade_waits_with_the_configured_timeout_and_context(tools):
    tools.add("helm")
    settings = config(
        "k8s.release=edge", "k8s.namespace=serving", "k8s.helm_timeout_s=900",
        "k8s.kube_context=edge-site-1",
    )  # fmt: skip
    generated = k8s.write_values(settings)
    command = k8s.upgrade_command(settings, generated)
    assert command == [
        str(tools.folder / "helm"), "upgrade", "--install", "edge", str(k8s.CHART_DIR),
        "--namespace", "serving",
        "--values", str(k8s.CHART_DIR / "values-cpu.yaml"), "--values", str(generated),
        "--wait", "--timeout", "900s", "--kube-context", "edge-site-1",
    ]  # fmt: skip


def test_template_needs_no_cluster(tools):
    tools.add("helm")
    settings = config("k8s.kube_context=edge-site-1")
    command = k8s.template_command(settings, k8s.write_values(settings))
    assert command[1] == "template"
    assert "--wait" not in command and "--kube-context" not in command


def test_deploy_runs_helm_and_returns_its_report(tools):
    tools.add("helm", stdout='Release "edgectl" has been upgraded.\nNOTES:\nport-forward\n')
    messages: list[str] = []
    report = k8s.deploy(config(), messages.append)
    assert "NOTES:" in report
    (call,) = tools.calls("helm")
    assert call[:3] == ["upgrade", "--install", "edgectl"]
    assert "--wait" in call
    assert any("values from the edgectl config" in message for message in messages)


def test_render_returns_helm_template_output(tools):
    tools.add("helm", stdout="---\nkind: Service\n")
    assert k8s.render(config()) == "---\nkind: Service\n"
    assert tools.calls("helm")[0][0] == "template"


@pytest.mark.parametrize(
    ("stderr", "hint"),
    [
        (
            'Error: kubernetes cluster unreachable: Get "http://localhost:8080/version": '
            "dial tcp 127.0.0.1:8080: connect: connection refused",
            "no Kubernetes API server answered",
        ),
        (
            "Error: values don't meet the specifications of the schema(s) in the following "
            "chart(s):\nedgectl:\n- at '/profile': value must be one of 'cpu', 'gpu'",
            "fix the values named above",
        ),
        (
            "Error: execution error at (edgectl/templates/deployment.yaml:1:4): "
            "service.ports http, grpc and metrics must differ",
            "the chart refused the combination of values",
        ),
        (
            "Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress",
            "helm history edgectl -n default",
        ),
        (
            'Error: unable to build kubernetes objects: no matches for kind "ServiceMonitor" '
            'in version "monitoring.coreos.com/v1"',
            "Prometheus Operator CRDs are not installed",
        ),
        (
            "Error: INSTALLATION FAILED: failed pre-install: 1 error occurred:\n"
            "* job edgectl-engine-build failed: BackoffLimitExceeded",
            "engine-build hook Job failed",
        ),
        (
            "Error: UPGRADE FAILED: pre-upgrade hooks failed: 1 error occurred:\n"
            "* job edgectl-engine-build failed: DeadlineExceeded",
            "ran past its deadline",
        ),
        (
            'Error: create: failed to create: namespaces "edge" not found',
            "kubectl create namespace default",
        ),
        (
            "Error: UPGRADE FAILED: context deadline exceeded",
            "raise k8s.helm_timeout_s and probes.startup",
        ),
        ('Error: context "prod" does not exist', "k8s.kube_context names a context"),
        ("Error: release: not found", "run `edgectl deploy --target k8s`"),
        ("Error: something new", "see the message above"),
    ],
)
def test_helm_errors_say_what_to_do_next(tools, stderr, hint):
    tools.add("helm", stderr=stderr, code=1)
    with pytest.raises(EdgectlError) as err:
        k8s.deploy(config(), lambda message: None)
    message = str(err.value)
    assert message.startswith("helm upgrade failed (exit 1):")
    assert stderr in message
    assert hint in message.split("next:")[1]


def test_a_hung_helm_is_bounded(tools, monkeypatch):
    tools.add("helm", sleep=5)
    monkeypatch.setattr(k8s, "TEMPLATE_TIMEOUT_S", 0.5)
    with pytest.raises(EdgectlError, match="helm template did not return within 0.5 s"):
        k8s.render(config())


def test_find_tool_prefers_the_venv_and_names_the_install_step(monkeypatch, tmp_path):
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(EdgectlError, match="helm not found in .*make install"):
        k8s.find_tool("helm")
    (venv_bin / "helm").write_text("#!/bin/sh\n", encoding="utf-8")
    assert k8s.find_tool("helm") == venv_bin / "helm"


# -- status -------------------------------------------------------------------------------------


def test_status_reads_the_release_and_the_rollout(tools):
    tools.add("helm", stdout=helm_release())
    tools.add("kubectl", stdout=kubectl_listing(ready=2))
    report = k8s.status(config("k8s.kube_context=edge-site-1"))
    assert (report.state, report.revision) == ("deployed", 3)
    assert report.healthy
    assert [pod.ready for pod in report.pods] == [True, True]
    assert tools.calls("helm") == [
        ["status", "edgectl", "--namespace", "default", "--output", "json",
         "--kube-context", "edge-site-1"]
    ]  # fmt: skip
    (kubectl,) = tools.calls("kubectl")
    assert kubectl[:2] == ["get", "deployments,pods"]
    selector = kubectl[kubectl.index("--selector") + 1]
    assert selector == "app.kubernetes.io/instance=edgectl,app.kubernetes.io/component=server"
    assert kubectl[-2:] == ["--context", "edge-site-1"]


def test_status_is_unhealthy_while_pods_are_not_ready(tools):
    tools.add("helm", stdout=helm_release())
    tools.add("kubectl", stdout=kubectl_listing(ready=1))
    report = k8s.status(config())
    assert not report.healthy
    assert report.pods[1].reason == "ContainerCreating"
    assert report.pods[0].restarts == 0


def test_status_without_kubectl_still_reports_the_release(tools):
    tools.add("helm", stdout=helm_release("failed"))
    report = k8s.status(config())
    assert report.state == "failed"
    assert "rollout not read: kubectl not found" in report.rollout_note
    assert not report.healthy


def test_status_command_prints_and_exits_3_until_ready(tools):
    tools.add("helm", stdout=helm_release())
    tools.add("kubectl", stdout=kubectl_listing(ready=1))
    result = CliRunner().invoke(cli, ["status", "--target", "k8s"])
    assert result.exit_code == 3
    assert "release edgectl (namespace default): deployed, revision 3" in result.output
    assert "deployment edgectl: 1/2 ready, 2 updated, 1 available" in result.output
    assert "pod edgectl-abc-1: Pending, not ready, 0 restarts (ContainerCreating)" in result.output


def test_status_command_exits_0_when_rolled_out(tools):
    tools.add("helm", stdout=helm_release())
    tools.add("kubectl", stdout=kubectl_listing(ready=2))
    result = CliRunner().invoke(cli, ["status", "--target", "k8s"])
    assert result.exit_code == 0, result.output


# -- CLI ----------------------------------------------------------------------------------------


def test_deploy_target_k8s_prints_helm_report(tools):
    tools.add("helm", stdout="NOTES:\nkubectl port-forward ...\n")
    result = CliRunner().invoke(cli, ["deploy", "--target", "k8s"])
    assert result.exit_code == 0, result.output
    assert "kubectl port-forward" in result.output


def test_dry_run_prints_the_manifests_only(tools):
    tools.add("helm", stdout="---\nkind: Deployment\n")
    result = CliRunner().invoke(cli, ["deploy", "--target", "k8s", "--dry-run"])
    assert result.exit_code == 0
    assert result.stdout == "---\nkind: Deployment\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deploy", "--local", "--target", "k8s"], "--local and --target k8s contradict"),
        (["deploy", "--dry-run"], "--dry-run needs --target k8s"),
        (["deploy", "--target", "cloud"], "'cloud' is not one of 'local', 'k8s'"),
        (["status", "--target", "k8s", "--breakdown"], "--breakdown reads the local server"),
    ],
)
def test_option_mistakes_are_usage_errors(args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert message in result.output


# -- engine-build progress while helm waits -------------------------------------------------------


def build_listing(job_status: dict, pods: list[dict]) -> dict:
    job = {
        "kind": "Job",
        "metadata": {
            "name": "edgectl-engine-build",
            "annotations": {"edgectl.io/build-id": "0123456789ab"},
        },
        "status": job_status,
    }
    return {"kind": "List", "items": [job, *pods]}


def build_pod(phase: str, conditions: list[dict] | None = None, waiting: str = "") -> dict:
    statuses = [{"state": {"waiting": {"reason": waiting}}}] if waiting else []
    return {
        "kind": "Pod",
        "metadata": {"name": "edgectl-engine-build-x7k2p"},
        "status": {"phase": phase, "conditions": conditions or [], "containerStatuses": statuses},
    }


UNSCHEDULABLE = build_listing(
    {"active": 1},
    [
        build_pod(
            "Pending",
            [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
                }
            ],
        )
    ],
)
RUNNING = build_listing({"active": 1}, [build_pod("Running")])
SUCCEEDED = build_listing(
    {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}, []
)


def sequenced_kubectl(tools: FakeTools, answers: list[dict]) -> None:
    """A fake kubectl answering each call with the next listing (the last one repeats)."""
    answers_file = tools.folder / "answers.json"
    answers_file.write_text(json.dumps(answers), encoding="utf-8")
    count = tools.folder / "count"
    script = (
        f"#!{sys.executable}\nimport json, sys\nfrom pathlib import Path\n"
        f"with open({str(tools.log('kubectl'))!r}, 'a') as log:\n"
        "    log.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"count = Path({str(count)!r})\n"
        "n = int(count.read_text()) if count.exists() else 0\n"
        "count.write_text(str(n + 1))\n"
        f"answers = json.loads(Path({str(answers_file)!r}).read_text())\n"
        "print(json.dumps(answers[min(n, len(answers) - 1)]))\n"
    )
    path = tools.folder / "kubectl"
    path.write_text(script, encoding="utf-8")
    path.chmod(0o755)


def test_deploy_reports_the_build_until_it_succeeds(tools, monkeypatch):
    monkeypatch.setattr(k8s, "BUILD_POLL_S", 0.2)
    tools.add("helm", stdout="NOTES:\n", sleep=2.5)
    sequenced_kubectl(tools, [UNSCHEDULABLE, UNSCHEDULABLE, RUNNING, SUCCEEDED])
    messages: list[str] = []
    report = k8s.deploy(config("k8s.kube_context=edge-site-1"), messages.append)
    assert report == "NOTES:\n"
    builds = [message for message in messages if message.startswith("engine build")]
    assert builds == [
        "engine build 0123456789ab: pod edgectl-engine-build-x7k2p Pending (Unschedulable: "
        "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.)",
        "engine build 0123456789ab: pod edgectl-engine-build-x7k2p Running",
        "engine build 0123456789ab: succeeded",
    ]  # each change once
    call = tools.calls("kubectl")[0]
    assert call[:2] == ["get", "jobs,pods"]
    selector = call[call.index("--selector") + 1]
    assert selector == "app.kubernetes.io/instance=edgectl,app.kubernetes.io/component=engine-build"
    assert call[-2:] == ["--context", "edge-site-1"]


def test_deploy_without_a_build_job_reports_nothing_more(tools, monkeypatch):
    monkeypatch.setattr(k8s, "BUILD_POLL_S", 0.2)
    tools.add("helm", stdout="NOTES:\n", sleep=1)
    tools.add("kubectl", stdout=json.dumps({"kind": "List", "items": []}))
    messages: list[str] = []
    k8s.deploy(config(), messages.append)
    assert not [message for message in messages if "engine build" in message]
    assert len(tools.calls("kubectl")) >= 2


def test_build_progress_is_given_up_quietly_once_kubectl_fails(tools, monkeypatch):
    monkeypatch.setattr(k8s, "BUILD_POLL_S", 0.2)
    tools.add("helm", stdout="NOTES:\n", sleep=1)
    tools.add("kubectl", stderr="error: You must be logged in to the server", code=1)
    messages: list[str] = []
    assert k8s.deploy(config(), messages.append) == "NOTES:\n"
    failures = [message for message in messages if "progress not available" in message]
    assert len(failures) == 1 and "logged in" in failures[0]
    assert len(tools.calls("kubectl")) == 1


def test_failed_build_says_why():
    listing = build_listing(
        {
            "failed": 3,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline",
                }
            ],
        },
        [],
    )
    assert k8s.describe_build(listing) == (
        "engine build 0123456789ab: failed (DeadlineExceeded: Job was active longer than "
        "specified deadline)"
    )


# A tiny helm timeout still gets the schema's 60 s floor.
@pytest.mark.parametrize(("timeout", "deadline"), [(1800, 1740), (7200, 7140), (30, 60)])
def test_build_deadline_ends_before_helms_timeout(timeout, deadline):
    values = k8s.chart_values(config(f"k8s.helm_timeout_s={timeout}"))
    assert values["modelRepository"]["engineBuild"]["activeDeadlineSeconds"] == deadline
