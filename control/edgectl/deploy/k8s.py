"""``edgectl deploy/status --target k8s``: edgectl config -> Helm values -> the chart in ``helm/``.

The chart is driven by the same YAML config as the local deploy: this module turns it into a
values file (written under ``server.workdir/k8s/`` so it can be read back), then runs the real
``helm`` binary with argument lists.  Values files apply in this order, later ones winning:
``helm/values-<profile>.yaml``, the generated file, then ``k8s.values_files``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgectl.config import EdgectlConfig
from edgectl.errors import EdgectlError
from edgectl.resources import chart_dir

CHART_DIR = chart_dir()
# The chart's profile and the engine step it serves.
PROFILE_ENGINE = {"cpu": "cpu", "gpu": "trtllm"}
SERVER_SELECTOR = "app.kubernetes.io/component=server"
BUILD_SELECTOR = "app.kubernetes.io/component=engine-build"
TEMPLATE_TIMEOUT_S = 120
STATUS_TIMEOUT_S = 60
# While helm waits: how often the engine-build Job is looked at, and how long one look may take.
BUILD_POLL_S = 15.0
BUILD_LOOK_TIMEOUT_S = 20
# The build Job's deadline ends this long before helm's --timeout, so a build still running
# when helm gives up is never deleted under a retry (helm replaces hook Jobs it re-creates).
BUILD_DEADLINE_MARGIN_S = 60
INSTALL_HINT = "run `make install`, which installs the pinned helm and kubectl into .venv/bin"

# (fragments of a helm/kubectl error, what to do next); the first entry with a match wins.
HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("values don't meet the specifications of the schema",),
        "fix the values named above (helm/values.schema.json says what each accepts) in "
        "k8s.values_files or your edgectl config",
    ),
    (
        ("execution error at (",),
        "the chart refused the combination of values named above; change one of them",
    ),
    (
        ("cluster unreachable", "connection refused", "no configuration has been provided"),
        "no Kubernetes API server answered: check your kubeconfig and k8s.kube_context "
        "(`kubectl config get-contexts`); `--dry-run` renders the manifests without a cluster",
    ),
    (
        ('context "',),
        "k8s.kube_context names a context your kubeconfig does not have "
        "(`kubectl config get-contexts`)",
    ),
    (
        ("another operation (install/upgrade/rollback) is in progress",),
        "another helm operation holds the release: wait for it, or inspect it with "
        "`helm history RELEASE -n NAMESPACE` and roll back",
    ),
    (
        ('no matches for kind "servicemonitor"', 'no matches for kind "podmonitor"'),
        "the Prometheus Operator CRDs are not installed: install them or set "
        "metrics.serviceMonitor.enabled / metrics.podMonitor.enabled to false",
    ),
    (
        ("deadlineexceeded", "active longer than specified deadline"),
        "the engine build ran past its deadline (modelRepository.engineBuild."
        "activeDeadlineSeconds, set from k8s.helm_timeout_s): raise k8s.helm_timeout_s for a "
        "longer build; `kubectl -n NAMESPACE logs job/<release full name>-engine-build` shows "
        "how far it got",
    ),
    (
        ("pre-install", "pre-upgrade"),
        "the engine-build hook Job failed or timed out: `kubectl -n NAMESPACE logs "
        "job/<release full name>-engine-build`, then fix modelRepository.engineBuild or raise "
        "k8s.helm_timeout_s",
    ),
    (
        ('namespaces "',),
        "the namespace does not exist: `kubectl create namespace NAMESPACE`",
    ),
    (
        ("forbidden",),
        "your Kubernetes user lacks the permission named above: ask for it or use another "
        "k8s.kube_context",
    ),
    (
        ("context deadline exceeded", "timed out waiting", "resource not ready"),
        "the rollout did not finish within k8s.helm_timeout_s: see `edgectl status --target "
        "k8s` and `kubectl -n NAMESPACE describe pods -l app.kubernetes.io/instance=RELEASE`; "
        "big engines take minutes to load, so raise k8s.helm_timeout_s and probes.startup",
    ),
    (
        ("release: not found",),
        "nothing is deployed under this release: run `edgectl deploy --target k8s`",
    ),
)


def find_tool(name: str) -> Path:
    """The tool next to this interpreter (where `make install` puts it), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    if found is None:
        raise EdgectlError(f"{name} not found in {beside.parent} or on PATH; {INSTALL_HINT}")
    return Path(found)


def check_profile(config: EdgectlConfig) -> None:
    """The chart profile and the model's engine step must agree."""
    profile, engine = config.k8s.profile, config.model.engine
    if PROFILE_ENGINE[profile] != engine:
        wanted = PROFILE_ENGINE[profile]
        raise EdgectlError(
            f"k8s.profile {profile} serves model.engine {wanted}, but model.engine is {engine}: "
            "set both to match (cpu/cpu or gpu/trtllm)"
        )


def in_cluster_config(config: EdgectlConfig) -> dict[str, Any]:
    """The edgectl config the chart's engine-build Job runs with.

    ``model.artifact`` is a path on this machine, so it is dropped: inside the Job the
    artifact is the recipe's build in the store.  The ``k8s`` section means nothing there.
    """
    data = config.model_dump(mode="json", exclude={"k8s"})
    data["model"]["artifact"] = None
    return data


def build_deadline_s(config: EdgectlConfig) -> int:
    """The engine-build Job's activeDeadlineSeconds: within helm's --timeout."""
    return max(60, config.k8s.helm_timeout_s - BUILD_DEADLINE_MARGIN_S)


def chart_values(config: EdgectlConfig) -> dict[str, Any]:
    """Values the edgectl config decides; everything else comes from the values files."""
    check_profile(config)
    return {
        "profile": config.k8s.profile,
        "triton": {"models": [config.model.name], "logVerbose": config.server.log_verbose},
        "edgectlConfig": in_cluster_config(config),
        "modelRepository": {"engineBuild": {"activeDeadlineSeconds": build_deadline_s(config)}},
    }


def values_path(config: EdgectlConfig) -> Path:
    return Path(config.server.workdir) / "k8s" / f"{config.k8s.release}.values.yaml"


def write_values(config: EdgectlConfig) -> Path:
    """Write the generated values file (kept, so what was deployed can be read back)."""
    path = values_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Generated by edgectl from its config; edit the config, not this file.\n"
    path.write_text(header + yaml.safe_dump(chart_values(config), sort_keys=True), "utf-8")
    return path


def values_files(config: EdgectlConfig, generated: Path) -> list[Path]:
    """Every values file in the order Helm applies them; missing files are named."""
    profile_file = CHART_DIR / f"values-{config.k8s.profile}.yaml"
    if not profile_file.is_file():
        raise EdgectlError(
            f"{profile_file} is missing: the chart must sit in helm/ beside this edgectl "
            "checkout (install edgectl from its source tree)"
        )
    for user_file in config.k8s.values_files:
        if not Path(user_file).is_file():
            raise EdgectlError(f"k8s.values_files: {user_file} does not exist")
    return [profile_file, generated, *config.k8s.values_files]


def _release_args(config: EdgectlConfig, generated: Path) -> list[str]:
    args = [config.k8s.release, str(CHART_DIR), "--namespace", config.k8s.namespace]
    for path in values_files(config, generated):
        args += ["--values", str(path)]
    return args


def _context_args(config: EdgectlConfig) -> list[str]:
    return ["--kube-context", config.k8s.kube_context] if config.k8s.kube_context else []


def template_command(config: EdgectlConfig, generated: Path) -> list[str]:
    """``helm template``: the manifests, rendered offline."""
    return [str(find_tool("helm")), "template", *_release_args(config, generated)]


def upgrade_command(config: EdgectlConfig, generated: Path) -> list[str]:
    """``helm upgrade --install --wait``: hooks (the engine build) and the rollout, bounded."""
    return [
        str(find_tool("helm")), "upgrade", "--install", *_release_args(config, generated),
        "--wait", "--timeout", f"{config.k8s.helm_timeout_s}s", *_context_args(config),
    ]  # fmt: skip


def explain(stderr: str, config: EdgectlConfig) -> str:
    """What to do next about a helm/kubectl error, with the release's own names filled in."""
    lowered = stderr.lower()
    for fragments, hint in HINTS:
        if any(fragment.lower() in lowered for fragment in fragments):
            return hint.replace("NAMESPACE", config.k8s.namespace).replace(
                "RELEASE", config.k8s.release
            )
    return "see the message above; `--dry-run` shows the manifests helm was given"


def run_tool(
    command: list[str],
    config: EdgectlConfig,
    timeout_s: float,
    while_waiting: Callable[[], None] | None = None,
) -> str:
    """Run helm or kubectl; its stdout, or an EdgectlError with its message and the next step.

    ``while_waiting`` is called every BUILD_POLL_S seconds until the tool exits.
    """
    what = f"{Path(command[0]).name} {command[1]}"
    deadline = time.monotonic() + timeout_s
    process = subprocess.Popen(  # noqa: S603 - an argument list, never a shell
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    while True:
        left = deadline - time.monotonic()
        step = left if while_waiting is None else min(left, BUILD_POLL_S)
        try:
            stdout, stderr = process.communicate(timeout=max(step, 0))
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                process.kill()
                process.communicate()
                raise EdgectlError(
                    f"{what} did not return within {timeout_s:g} s; "
                    + explain("context deadline exceeded", config)
                ) from None
            if while_waiting is not None:
                while_waiting()
    if process.returncode != 0:
        message = stderr.strip() or stdout.strip()
        raise EdgectlError(
            f"{what} failed (exit {process.returncode}):\n{message}\n"
            f"next: {explain(message, config)}"
        )
    return stdout


def _json(command: list[str], config: EdgectlConfig) -> dict[str, Any]:
    output = run_tool(command, config, STATUS_TIMEOUT_S)
    try:
        return json.loads(output)
    except json.JSONDecodeError as err:
        raise EdgectlError(f"{Path(command[0]).name} printed no JSON: {err}") from None


def render(config: EdgectlConfig) -> str:
    """``deploy --target k8s --dry-run``: the manifests ``helm template`` renders; no cluster."""
    return run_tool(template_command(config, write_values(config)), config, TEMPLATE_TIMEOUT_S)


def deploy(config: EdgectlConfig, progress: Callable[[str], None]) -> str:
    """Install or upgrade the release and wait for it; returns helm's report (with NOTES).

    While helm waits, the engine-build Job (if the release runs one) is looked at every
    BUILD_POLL_S seconds and each change is reported: scheduling (and why a pod is Pending,
    e.g. no free GPU), running, succeeded, failed.
    """
    generated = write_values(config)
    progress(f"values from the edgectl config: {generated}")
    k8s = config.k8s
    progress(
        f"helm upgrade --install {k8s.release} (namespace {k8s.namespace}, profile "
        f"{k8s.profile}); waiting up to {k8s.helm_timeout_s} s for the build hook and rollout"
    )
    command = upgrade_command(config, generated)
    watcher = BuildWatcher(config, progress)
    # helm enforces --timeout per phase (hooks, then the rollout): allow both, plus a margin.
    return run_tool(command, config, 2 * k8s.helm_timeout_s + 60, while_waiting=watcher.look)


def describe_build(listing: dict[str, Any]) -> str:
    """One line on the engine-build Job and its pods, from ``kubectl get jobs,pods -o json``."""
    jobs = [item for item in listing.get("items", []) if item.get("kind") == "Job"]
    pods = [item for item in listing.get("items", []) if item.get("kind") == "Pod"]
    if not jobs:
        return ""
    job = jobs[0]
    build = job["metadata"].get("annotations", {}).get("edgectl.io/build-id", "?")
    status = job.get("status", {})
    conditions = {c.get("type"): c for c in status.get("conditions", [])}
    if conditions.get("Complete", {}).get("status") == "True" or status.get("succeeded"):
        return f"engine build {build}: succeeded"
    failed = conditions.get("Failed", {})
    if failed.get("status") == "True":
        reason = failed.get("reason", "")
        return f"engine build {build}: failed ({reason}: {failed.get('message', '')})".rstrip()
    states = []
    for pod in pods:
        pod_status = pod.get("status", {})
        phase = pod_status.get("phase", "Unknown")
        detail = ""
        for condition in pod_status.get("conditions", []):
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                detail = f"{condition.get('reason', '')}: {condition.get('message', '')}"
        waiting = [
            c["state"]["waiting"].get("reason", "")
            for c in pod_status.get("containerStatuses", [])
            if "waiting" in c.get("state", {})
        ]
        detail = detail or ", ".join(filter(None, waiting))
        states.append(f"pod {pod['metadata']['name']} {phase}" + (f" ({detail})" if detail else ""))
    return f"engine build {build}: " + ("; ".join(states) or "waiting for its pod")


class BuildWatcher:
    """Reports the engine-build Job's progress while helm waits; silent when there is none."""

    def __init__(self, config: EdgectlConfig, progress: Callable[[str], None]) -> None:
        self.config = config
        self.progress = progress
        self.last = ""
        self.broken = False

    def look(self) -> None:
        if self.broken:
            return
        k8s = self.config.k8s
        context = ["--context", k8s.kube_context] if k8s.kube_context else []
        selector = f"app.kubernetes.io/instance={k8s.release},{BUILD_SELECTOR}"
        try:
            kubectl = find_tool("kubectl")
            result = subprocess.run(  # noqa: S603 - an argument list, never a shell
                [str(kubectl), "get", "jobs,pods", "--namespace", k8s.namespace,
                 "--selector", selector, "--output", "json", *context],
                capture_output=True, text=True, timeout=BUILD_LOOK_TIMEOUT_S, check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise EdgectlError(result.stderr.strip() or f"exit {result.returncode}")
            line = describe_build(json.loads(result.stdout))
        except (EdgectlError, OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as err:
            self.broken = True
            self.progress(f"engine build progress not available: {err}")
            return
        if line and line != self.last:
            self.last = line
            self.progress(line)


@dataclass
class Rollout:
    """One Deployment's replica counts."""

    name: str
    desired: int
    ready: int
    updated: int
    available: int

    @property
    def complete(self) -> bool:
        return self.desired > 0 and self.desired == self.ready == self.updated == self.available


@dataclass
class PodState:
    name: str
    phase: str
    ready: bool
    restarts: int
    reason: str = ""


@dataclass
class K8sStatus:
    """What ``status --target k8s`` reports: the Helm release and the server rollout."""

    release: str
    namespace: str
    state: str  # helm's: deployed, failed, pending-install, ...
    revision: int
    updated: str
    description: str
    rollouts: list[Rollout] = field(default_factory=list)
    pods: list[PodState] = field(default_factory=list)
    rollout_note: str = ""

    @property
    def healthy(self) -> bool:
        return (
            self.state == "deployed"
            and bool(self.rollouts)
            and all(rollout.complete for rollout in self.rollouts)
        )


def _pod_state(item: dict[str, Any]) -> PodState:
    status = item.get("status", {})
    containers = status.get("initContainerStatuses", []) + status.get("containerStatuses", [])
    waiting = [
        c["state"]["waiting"].get("reason", "")
        for c in containers
        if "waiting" in c.get("state", {})
    ]
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions", [])}
    return PodState(
        name=item["metadata"]["name"],
        phase=status.get("phase", "Unknown"),
        ready=conditions.get("Ready") == "True",
        restarts=sum(int(c.get("restartCount", 0)) for c in containers),
        reason=", ".join(filter(None, waiting)) or status.get("reason", ""),
    )


def parse_rollout(listing: dict[str, Any]) -> tuple[list[Rollout], list[PodState]]:
    """Deployments and pods out of ``kubectl get deployments,pods -o json``."""
    rollouts, pods = [], []
    for item in listing.get("items", []):
        if item.get("kind") == "Deployment":
            spec, status = item.get("spec", {}), item.get("status", {})
            rollouts.append(
                Rollout(
                    name=item["metadata"]["name"],
                    desired=int(spec.get("replicas", 1)),
                    ready=int(status.get("readyReplicas", 0)),
                    updated=int(status.get("updatedReplicas", 0)),
                    available=int(status.get("availableReplicas", 0)),
                )
            )
        elif item.get("kind") == "Pod":
            pods.append(_pod_state(item))
    return rollouts, pods


def status(config: EdgectlConfig) -> K8sStatus:
    """The release as helm records it, and the server Deployment's rollout from kubectl."""
    k8s = config.k8s
    helm = [
        str(find_tool("helm")), "status", k8s.release, "--namespace", k8s.namespace,
        "--output", "json", *_context_args(config),
    ]  # fmt: skip
    release = _json(helm, config)
    info = release.get("info", {})
    result = K8sStatus(
        release=k8s.release,
        namespace=k8s.namespace,
        state=str(info.get("status", "unknown")),
        revision=int(release.get("version", 0)),
        updated=str(info.get("last_deployed", "")),
        description=str(info.get("description", "")),
    )
    try:
        kubectl = find_tool("kubectl")
    except EdgectlError as err:
        result.rollout_note = f"rollout not read: {err}"
        return result
    context = ["--context", k8s.kube_context] if k8s.kube_context else []
    selector = f"app.kubernetes.io/instance={k8s.release},{SERVER_SELECTOR}"
    listing = _json(
        [str(kubectl), "get", "deployments,pods", "--namespace", k8s.namespace,
         "--selector", selector, "--output", "json", *context],
        config,
    )  # fmt: skip
    result.rollouts, result.pods = parse_rollout(listing)
    if not result.rollouts:
        result.rollout_note = f"no Deployment matches {selector} in namespace {k8s.namespace}"
    return result
