"""``edgectl openai serve``: the OpenAI-compatible gateway in front of Triton's gRPC endpoint."""

from __future__ import annotations

import click

from edgectl.cli.context import console


@click.group()
def openai() -> None:
    """The OpenAI-compatible HTTP API (chat and text completions) over a Triton ensemble."""


@openai.command("serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback prints a warning.",
)
@click.option("--port", default=9000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--triton-grpc",
    default="127.0.0.1:8001",
    show_default=True,
    metavar="HOST:PORT",
    help="Triton's gRPC endpoint.",
)
@click.option(
    "--api-key-env",
    metavar="NAME",
    help="Environment variable holding the API key clients must send "
    "(Authorization: Bearer KEY); unset: no key.",
)
@click.option(
    "--max-body-bytes",
    default=1 << 20,
    show_default=True,
    type=click.IntRange(1024),
    help="Larger request bodies get 413.",
)
def serve(host: str, port: int, triton_grpc: str, api_key_env: str | None,
          max_body_bytes: int) -> None:  # fmt: skip
    """Serve /v1/chat/completions, /v1/completions, /v1/models, /health/ready, /metrics."""
    from edgectl.openai.serve import exposure_warning
    from edgectl.openai.serve import serve as run

    warning = exposure_warning(host, api_key_env)
    if warning:
        console().print(f"[yellow]warning:[/yellow] {warning}")
    run(host, port, triton_grpc, api_key_env, max_body_bytes)
