"""The ``edgectl`` command line.  It parses and prints; the work lives in the service modules.

Heavy libraries (torch, openvino, transformers) are imported inside commands, so
``edgectl --help`` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgectl.config import EdgectlConfig, load_config
from edgectl.errors import EdgectlError


def _console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def _progress(message: str) -> None:
    _console().print(f"[cyan]>[/cyan] {message}")


class _Context:
    def __init__(self, config_path: Path | None, overrides: tuple[str, ...]) -> None:
        self._path = config_path
        self._overrides = overrides
        self._config: EdgectlConfig | None = None

    @property
    def config(self) -> EdgectlConfig:
        if self._config is None:
            self._config = load_config(self._path, self._overrides)
        return self._config

    def client(self):
        from edgectl.client import TritonClient

        server = self.config.server
        return TritonClient(
            f"http://{server.host}:{server.http_port}",
            f"{server.host}:{server.grpc_port}",
            timeout_s=self.config.client.timeout_s,
        )


pass_context = click.make_pass_decorator(_Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path),
    help="YAML config file (default: ./edgectl.yaml when present, else built-in defaults).",
)  # fmt: skip
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override one config key, e.g. --set server.http_port=9000 (repeatable).",
)  # fmt: skip
@click.version_option(package_name="edgectl")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Build, deploy and drive LLM serving on NVIDIA Triton at edge sites.

    Typical flow: `edgectl build build/smollm2-135m-int8.yaml`, `edgectl deploy --local`,
    `edgectl generate --stream "What is the capital of France?"`, `edgectl stop`.
    """
    ctx.obj = _Context(config_path, overrides)


REPORT_RECIPES = Path("build/report")


@cli.command()
@click.argument("recipes", nargs=-1, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--target", "targets", multiple=True, type=click.Choice(["cpu", "trtllm"]),
    help="Build only this target of the recipe (repeatable; default: the recipe's targets).",
)  # fmt: skip
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Parent directory for the artifacts (default: the edgectl cache).",
)
@click.option("--force", is_flag=True, help="Rebuild even if the same recipe was built before.")
@click.option(
    "--report", is_flag=True,
    help="Build every recipe (default: build/report/*.yaml) and write the size/quality table.",
)  # fmt: skip
@click.option(
    "--report-out", type=click.Path(path_type=Path, file_okay=False),
    default=REPORT_RECIPES / "results", show_default=True,
    help="Where --report writes report.md, report.csv and report.png.",
)  # fmt: skip
def build(
    recipes: tuple[Path, ...],
    targets: tuple[str, ...],
    out: Path | None,
    force: bool,
    report: bool,
    report_out: Path,
) -> None:
    """Build RECIPE (a build/*.yaml file) for each of its targets.

    cpu: the OpenVINO model the CPU engine step serves (NNCF quantization).
    trtllm: a TensorRT-LLM checkpoint quantized here with NVIDIA Model Optimizer,
    then `trtllm-build` -- run when TensorRT-LLM is installed, otherwise written as
    an executable plan (build_engine.sh and a Kubernetes Job) for a GPU node.
    Each target gets a manifest (tool versions, hashes) and a rendered Triton
    repository. A finished build of the same recipe is reused unless --force;
    an interrupted build leaves nothing a deploy would pick up.
    """
    if report:
        from edgectl.report import generate_report

        chosen = list(recipes) or sorted(REPORT_RECIPES.glob("*.yaml"))
        if not chosen:
            raise click.UsageError(f"--report: no recipes given and none in {REPORT_RECIPES}/")
        with _console().status("building and measuring the report recipes…"):
            path = generate_report(chosen, report_out, _progress)
        click.echo(f"report written to {path}")
        return
    if not recipes:
        raise click.UsageError("give a RECIPE (e.g. build/smollm2-135m-int8.yaml) or --report")
    from edgectl.builder import build_targets
    from edgectl.recipe import load_recipe

    for recipe_path in recipes:
        recipe = load_recipe(recipe_path)
        with _console().status(f"building {recipe.name}…"):
            results = build_targets(
                recipe, list(targets) or None, out=out, force=force, progress=_progress
            )
        for target, result in results.items():
            size = sum(item["bytes"] for item in result.manifest["artifacts"].values())
            verb = "reused" if result.reused else "built"
            click.echo(f"{verb} {target}: {result.artifact} ({size / 1e6:.1f} MB)")
            engine_build = result.manifest.get("engine_build")
            if engine_build and engine_build["status"] != "built":
                click.echo(
                    "  TensorRT-LLM is not installed here: the engine compile is pending a GPU.\n"
                    f"  run {result.artifact}/build_engine.sh in the TensorRT-LLM container, or\n"
                    f"  kubectl apply -f {result.artifact}/engine-build-job.yaml"
                )


_TARGET = click.option(
    "--target", type=click.Choice(["local", "k8s"]), default="local", show_default=True,
    help="local: the tritonserver on this machine; k8s: the Helm release (config section k8s).",
)  # fmt: skip


@cli.command()
@click.option("--local", "local", is_flag=True, help="Same as --target local (the default).")
@_TARGET
@click.option(
    "--dry-run", is_flag=True,
    help="With --target k8s: print the manifests `helm template` renders; needs no cluster.",
)  # fmt: skip
@pass_context
def deploy(ctx: _Context, local: bool, target: str, dry_run: bool) -> None:
    """Render the model repository and start tritonserver; wait until models are ready.

    Binds to server.host (127.0.0.1 by default). Logs and state go to
    server.workdir. A model that does not load within server.ready_timeout_s
    stops the server and prints the log tail.

    With --target k8s: render Helm values from this config and run `helm upgrade
    --install --wait` on the chart in helm/ (k8s.release, k8s.namespace, k8s.profile,
    k8s.values_files, k8s.helm_timeout_s, k8s.kube_context).
    """
    if local and target != "local":
        raise click.UsageError("--local and --target k8s contradict each other")
    if target == "k8s":
        _deploy_k8s(ctx.config, dry_run)
        return
    if dry_run:
        raise click.UsageError("--dry-run needs --target k8s")
    from edgectl.deploy import deploy_local

    config = ctx.config
    if config.server.host not in ("127.0.0.1", "localhost", "::1"):
        _console().print(
            f"[yellow]warning:[/yellow] binding to {config.server.host} exposes an "
            "unauthenticated inference API beyond this machine"
        )
    state = deploy_local(config, _progress)
    click.echo(
        f"serving {', '.join(state.models)}: http {state.http_url}  grpc {state.grpc_url}  "
        f"metrics http://{state.host}:{state.metrics_port}/metrics  (pid {state.pid})"
    )


def _deploy_k8s(config: EdgectlConfig, dry_run: bool) -> None:
    from edgectl import k8s

    if dry_run:
        click.echo(k8s.render(config), nl=False)
        return
    click.echo(k8s.deploy(config, _progress), nl=False)


def _status_k8s(config: EdgectlConfig) -> None:
    """Print the Helm release and the server rollout; exit 3 unless fully rolled out."""
    from edgectl import k8s

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


@cli.command()
@pass_context
def stop(ctx: _Context) -> None:
    """Stop the local server, its Python stubs, and clean their shared memory."""
    from edgectl.server import LocalTriton

    if LocalTriton(ctx.config.server).stop():
        click.echo("server stopped")
    else:
        click.echo("no server was running (stale state cleaned up)")


@cli.command()
@click.option(
    "--breakdown", is_flag=True,
    help="Also print the per-stage latency breakdown (Triton statistics since start).",
)  # fmt: skip
@_TARGET
@pass_context
def status(ctx: _Context, breakdown: bool, target: str) -> None:
    """Show whether the local server runs, its endpoints, and each model's state.

    With --target k8s: the Helm release's state and the server Deployment's rollout
    (helm status, kubectl get); exit 3 until every replica is ready.
    """
    if target == "k8s":
        if breakdown:
            raise click.UsageError("--breakdown reads the local server; not with --target k8s")
        _status_k8s(ctx.config)
        return
    from edgectl.server import LocalTriton

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


@cli.group()
def models() -> None:
    """List, load and unload models over Triton's repository API."""


@models.command("list")
@pass_context
def models_list(ctx: _Context) -> None:
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
def models_load(ctx: _Context, name: str) -> None:
    """Load NAME (an ensemble loads its steps too)."""
    ctx.client().load_model(name)
    click.echo(f"loaded {name}")


@models.command("unload")
@click.argument("name")
@pass_context
def models_unload(ctx: _Context, name: str) -> None:
    """Unload NAME and the models only it depends on."""
    ctx.client().unload_model(name)
    click.echo(f"unloaded {name}")


@cli.command()
@click.argument("prompt")
@click.option("--model", help="Ensemble to call (default: model.name from the config).")
@click.option(
    "--protocol",
    type=click.Choice(["http", "grpc"]),
    help="Transport (default: client.protocol, grpc).",
)
@click.option("--stream/--no-stream", default=False, help="Print text as it is generated.")
@click.option("--max-tokens", type=int, default=64, show_default=True)
@click.option("--temperature", type=float, help="0 = greedy; > 0 samples.")
@click.option("--top-k", type=int)
@click.option("--top-p", type=float)
@click.option("--seed", type=int, help="Random seed for sampling.")
@click.option("--stop", "stop_words", multiple=True, help="Stop word (repeatable).")
@click.option("--raw", is_flag=True, help="Send PROMPT as is, without the chat template.")
@pass_context
def generate(
    ctx: _Context,
    prompt: str,
    model: str | None,
    protocol: str | None,
    stream: bool,
    max_tokens: int,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    seed: int | None,
    stop_words: tuple[str, ...],
    raw: bool,
) -> None:
    """Generate a completion for PROMPT through the ensemble."""
    from edgectl.client import GenerateRequest

    request = GenerateRequest(
        text_input=prompt, max_tokens=max_tokens, stream=stream, temperature=temperature,
        top_k=top_k, top_p=top_p, random_seed=seed, stop_words=list(stop_words),
        apply_chat_template=not raw,
    )  # fmt: skip
    pieces = ctx.client().generate(
        model or ctx.config.model.name, request, protocol or ctx.config.client.protocol
    )
    for piece in pieces:
        click.echo(piece, nl=False)
        sys.stdout.flush()
    click.echo()


@cli.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to write it (default: <server.workdir>/model_repository).",
)
@pass_context
def render(ctx: _Context, out: Path | None) -> None:
    """Render the Triton model repository for the configured model without starting it."""
    from edgectl.deploy import served_model
    from edgectl.repository import render_repository
    from edgectl.server import LocalTriton

    target = out or LocalTriton(ctx.config.server).workdir / "model_repository"
    click.echo(render_repository([served_model(ctx.config)], ctx.config.engine, target))


def _print_breakdown(ctx: _Context) -> None:
    from edgectl.stats import TritonStats, format_breakdown

    model = ctx.config.model.name
    click.echo(format_breakdown(TritonStats(ctx.client().http_url).breakdown(model)))


@cli.command()
@click.option(
    "--profile",
    "profile_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Load profile YAML (see loadtest/profiles/).",
)
@click.option(
    "--target",
    metavar="URL",
    help="grpc://HOST:PORT or http://HOST:PORT (default: the configured local server).",
)
@click.option("--model", help="Ensemble to load (default: model.name from the config).")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Run directory (default: loadtest/results/<time>-<profile>).",
)
@click.option(
    "--tokenizer",
    type=click.Path(path_type=Path, exists=True),
    help="tokenizer.json or its folder, for prompt and output token counts "
    "(default: the configured model's artifact).",
)
@click.option("--allow-remote", is_flag=True, help="Allow a target that is not loopback.")
@pass_context
def loadtest(
    ctx: _Context,
    profile_path: Path,
    target: str | None,
    model: str | None,
    out: Path | None,
    tokenizer: Path | None,
    allow_remote: bool,
) -> None:
    """Run a locust load profile; write records, summary, report and plots.

    Reports genai-perf's metrics (time to first token, inter-token latency, request
    latency, output token and request throughput) per concurrency or request rate,
    the batch-size table, and the per-stage breakdown.  A profile with variants
    deploys one local server per variant and compares them side by side.
    """
    from edgectl.loadreport import console_table
    from edgectl.loadtest import run

    run_dir, summary = run(
        ctx.config, profile_path, target, model, out, tokenizer, allow_remote, _progress
    )
    click.echo(console_table(summary))
    click.echo(f"report: {run_dir / 'report.md'}")
    if any(step["metrics"]["failure_count"] for step in summary["steps"]):
        sys.exit(1)


@cli.group()
def timeslice() -> None:
    """Share one device among several models: weighted slots, or swapping (issue 5)."""


@timeslice.command("apply")
@click.argument("policy_path", metavar="POLICY", type=click.Path(path_type=Path, dir_okay=False))
@pass_context
def timeslice_apply(ctx: _Context, policy_path: Path) -> None:
    """Put the time-slicing POLICY (YAML) in force on the local server (started if down)."""
    from edgectl.timeslice import service
    from edgectl.timeslice.policy import load_policy

    record = service.apply(load_policy(policy_path), ctx.config, _progress)
    click.echo(
        f"policy {record['policy']['name']} in force ({record['mode']}): "
        + ", ".join(record["models"])
    )


@timeslice.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the full status as JSON.")
@pass_context
def timeslice_status(ctx: _Context, as_json: bool) -> None:
    """Configured vs achieved share, slot length, waits, queue depth and memory per model."""
    import json

    from edgectl.timeslice import service

    report = service.status(ctx.config)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(service.format_status(report))
    if report["policy"] is None:
        sys.exit(3)


@timeslice.command("board")
@click.argument("policy_path", metavar="POLICY", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--repository", required=True, type=click.Path(path_type=Path, file_okay=False),
    help="The rendered model repository the server loads (its engine steps name the board).",
)  # fmt: skip
def timeslice_board(policy_path: Path, repository: Path) -> None:
    """Write a co-resident POLICY's slot board for a server edgectl does not drive.

    Starts and loads nothing (the Helm chart runs it before Triton starts); CPU engine steps
    follow the board at their next step.
    """
    from edgectl.timeslice.board import install_board
    from edgectl.timeslice.policy import load_policy

    board = install_board(load_policy(policy_path), repository)
    click.echo(
        f"slot board {board.board_dir}: "
        + ", ".join(f"{name} share {spec.share:g}" for name, spec in board.engines.items())
    )


@timeslice.command("off")
@pass_context
def timeslice_off(ctx: _Context) -> None:
    """Lift the policy: every model runs freely again; models it unloaded come back."""
    from edgectl.timeslice import service

    result = service.off(ctx.config, _progress)
    if result["policy"] is None:
        click.echo("no time-slicing policy was in force")
        return
    reloaded = f"; reloaded {', '.join(result['reloaded'])}" if result["reloaded"] else ""
    click.echo(f"policy {result['policy']} ({result['mode']}) lifted{reloaded}")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except EdgectlError as err:
        from rich.markup import escape

        _console().print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
