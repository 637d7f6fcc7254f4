"""Serving commands: deploy, stop, status, render, and the models group."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgectl.cli.context import TARGET, Context, console, pass_context, progress
from edgectl.config import EdgectlConfig


@click.command()
@click.option("--local", "local", is_flag=True, help="Same as --target local (the default).")
@TARGET
@click.option(
    "--dry-run", is_flag=True,
    help="With --target k8s: print the manifests `helm template` renders; needs no cluster.",
)  # fmt: skip
@pass_context
def deploy(ctx: Context, local: bool, target: str, dry_run: bool) -> None:
    """Render the model repository and start tritonserver; wait until models are ready.

    Binds to server.host (127.0.0.1 by default). Logs and state go to
    server.workdir. A model that does not load within server.ready_timeout_s
    stops the server and prints the log tail.

    With --target k8s: render Helm values from this config and run `helm upgrade
    --install --wait` on the chart in helm/ (k8s.release, k8s.namespace, k8s.profile,
    k8s.values_files, k8s.helm_timeout_s, k8s.kube_context).  While helm waits, the
    engine-build Job's progress is printed (scheduling, running, done or failed).
    """
    if local and target != "local":
        raise click.UsageError("--local and --target k8s contradict each other")
    if target == "k8s":
        _deploy_k8s(ctx.config, dry_run)
        return
    if dry_run:
        raise click.UsageError("--dry-run needs --target k8s")
    from edgectl.deploy.local import deploy_local

    config = ctx.config
    if config.server.host not in ("127.0.0.1", "localhost", "::1"):
        console().print(
            f"[yellow]warning:[/yellow] binding to {config.server.host} exposes an "
            "unauthenticated inference API beyond this machine"
        )
    state = deploy_local(config, progress)
    click.echo(
        f"serving {', '.join(state.models)}: http {state.http_url}  grpc {state.grpc_url}  "
        f"metrics http://{state.host}:{state.metrics_port}/metrics  (pid {state.pid})"
    )


def _deploy_k8s(config: EdgectlConfig, dry_run: bool) -> None:
    from edgectl.deploy import k8s

    if dry_run:
        click.echo(k8s.render(config), nl=False)
        return
    click.echo(k8s.deploy(config, progress), nl=False)


def _status_k8s(config: EdgectlConfig) -> None:
    """Print the Helm release and the server rollout; exit 3 unless fully rolled out."""
    from edgectl.deploy import k8s

    report = k8s.status(config)
    click.echo(
        f"release {report.release} (namespace {report.namespace}): {report.state}, "
        f"revision {report.revision}, {report.updated}  {report.description}"
    )
    for rollout in report.rollouts:
        click.echo(
            f"  deployment {rollout.name}: {rollout.ready}/{rollout.desired} ready, "
            f"{rollout.updated} updated, {rollout.available} available"
        )
    for pod in report.pods:
        ready = "ready" if pod.ready else "not ready"
        reason = f" ({pod.reason})" if pod.reason else ""
        click.echo(f"    pod {pod.name}: {pod.phase}, {ready}, {pod.restarts} restarts{reason}")
    if report.rollout_note:
        click.echo(f"  {report.rollout_note}")
    if not report.healthy:
        sys.exit(3)


@click.command()
@pass_context
def stop(ctx: Context) -> None:
    """Stop the local server, its Python stubs, and clean their shared memory."""
    from edgectl.deploy.server import LocalTriton

    if LocalTriton(ctx.config.server).stop():
        click.echo("server stopped")
    else:
        click.echo("no server was running (stale state cleaned up)")


@click.command()
@click.option(
    "--breakdown", is_flag=True,
    help="Also print the per-stage latency breakdown (Triton statistics since start).",
)  # fmt: skip
@TARGET
@pass_context
def status(ctx: Context, breakdown: bool, target: str) -> None:
    """Show whether the local server runs, its endpoints, and each model's state.

    With --target k8s: the Helm release's state and the server Deployment's rollout
    (helm status, kubectl get); exit 3 until every replica is ready.
    """
    if target == "k8s":
        if breakdown:
            raise click.UsageError("--breakdown reads the local server; not with --target k8s")
        _status_k8s(ctx.config)
        return
    from edgectl.deploy.server import LocalTriton

    server = LocalTriton(ctx.config.server)
    state = server.running()
    if state is None:
        click.echo("server: down")
        recorded = server.read_state()
        if recorded is not None:
            click.echo(f"  {server.down_reason(recorded)}; last log lines:")
            click.echo(server.log_tail(recorded, lines=10))
        sys.exit(3)
    click.echo(f"server: up (pid {state.pid})  http {state.http_url}  grpc {state.grpc_url}")
    for line in server.recovery_summary():
        click.echo(f"  {line}")
    for model in ctx.client().list_models():
        click.echo(f"  {model.get('name')}: {model.get('state', '?')} {model.get('reason', '')}")
    if breakdown:
        _print_breakdown(ctx)


@click.group()
def models() -> None:
    """List, load and unload models over Triton's repository API."""


@models.command("list")
@pass_context
def models_list(ctx: Context) -> None:
    """List every model in the repository with its state."""
    for model in ctx.client().list_models():
        version = model.get("version", "-")
        click.echo(
            f"{model['name']}\t{version}\t{model.get('state', 'UNAVAILABLE')}\t"
            f"{model.get('reason', '')}"
        )


@models.command("load")
@click.argument("name")
@pass_context
def models_load(ctx: Context, name: str) -> None:
    """Load NAME (an ensemble loads its steps too)."""
    ctx.client().load_model(name)
    click.echo(f"loaded {name}")


@models.command("unload")
@click.argument("name")
@pass_context
def models_unload(ctx: Context, name: str) -> None:
    """Unload NAME and the models only it depends on."""
    ctx.client().unload_model(name)
    click.echo(f"unloaded {name}")


@click.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to write it (default: <server.workdir>/model_repository).",
)
@pass_context
def render(ctx: Context, out: Path | None) -> None:
    """Render the Triton model repository for the configured model without starting it."""
    from edgectl.deploy.artifacts import served_model
    from edgectl.deploy.repository import render_repository
    from edgectl.deploy.server import LocalTriton

    target = out or LocalTriton(ctx.config.server).workdir / "model_repository"
    click.echo(render_repository([served_model(ctx.config)], ctx.config.engine, target))


def _print_breakdown(ctx: Context) -> None:
    from edgectl.loadtest.breakdown import TritonStats, format_breakdown

    model = ctx.config.model.name
    click.echo(format_breakdown(TritonStats(ctx.client().http_url).breakdown(model)))
