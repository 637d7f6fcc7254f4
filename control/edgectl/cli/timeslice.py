"""``edgectl timeslice``: share one device among several models."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgectl.cli.context import Context, pass_context, progress


@click.group()
def timeslice() -> None:
    """Share one device among several models: weighted slots, or swapping."""


@timeslice.command("apply")
@click.argument("policy_path", metavar="POLICY", type=click.Path(path_type=Path, dir_okay=False))
@pass_context
def timeslice_apply(ctx: Context, policy_path: Path) -> None:
    """Put the time-slicing POLICY (YAML) in force on the local server (started if down)."""
    from edgectl.timeslice import service
    from edgectl.timeslice.policy import load_policy

    record = service.apply(load_policy(policy_path), ctx.config, progress)
    click.echo(
        f"policy {record['policy']['name']} in force ({record['mode']}): "
        + ", ".join(record["models"])
    )


@timeslice.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the full status as JSON.")
@pass_context
def timeslice_status(ctx: Context, as_json: bool) -> None:
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
def timeslice_off(ctx: Context) -> None:
    """Lift the policy: every model runs freely again; models it unloaded come back."""
    from edgectl.timeslice import service

    result = service.off(ctx.config, progress)
    if result["policy"] is None:
        click.echo("no time-slicing policy was in force")
        return
    reloaded = f"; reloaded {', '.join(result['reloaded'])}" if result["reloaded"] else ""
    click.echo(f"policy {result['policy']} ({result['mode']}) lifted{reloaded}")
