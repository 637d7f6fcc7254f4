"""``edgectl generate``: one completion through the ensemble, streamed or whole."""

from __future__ import annotations

import sys

import click

from edgectl.cli.context import Context, pass_context


@click.command()
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
    ctx: Context,
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
