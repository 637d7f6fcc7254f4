"""``edgectl loadtest``: run a locust load profile and print its summary."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgectl.cli.context import Context, pass_context, progress


@click.command()
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
    help="grpc://HOST:PORT, http://HOST:PORT or openai://HOST:PORT (the OpenAI gateway); "
    "default: the configured local server.",
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
    ctx: Context,
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
    from edgectl.loadtest.report import console_table
    from edgectl.loadtest.runner import run

    run_dir, summary = run(
        ctx.config, profile_path, target, model, out, tokenizer, allow_remote, progress
    )
    click.echo(console_table(summary.as_json()))
    click.echo(f"report: {run_dir / 'report.md'}")
    if summary.failures:
        sys.exit(1)
