"""``edgectl generate``: one completion through the ensemble, streamed or whole."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
@click.option(
    "--context",
    "context_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Passages for a RAG answer: a text file (blank lines separate passages) or a "
    "JSON list of strings; PROMPT is the question. Passages over the token budget are "
    "dropped whole from the end.",
)
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
    context_file: Path | None,
) -> None:
    """Generate a completion for PROMPT through the ensemble."""
    from edgectl.client import GenerateRequest

    request = GenerateRequest(
        text_input=prompt, max_tokens=max_tokens, stream=stream, temperature=temperature,
        top_k=top_k, top_p=top_p, random_seed=seed, stop_words=list(stop_words),
        apply_chat_template=not raw,
        rag_passages=read_passages(context_file) if context_file else [],
    )  # fmt: skip
    pieces = ctx.client().generate(
        model or ctx.config.model.name, request, protocol or ctx.config.client.protocol
    )
    for piece in pieces:
        click.echo(piece, nl=False)
        sys.stdout.flush()
    click.echo()


def read_passages(path: Path) -> list[str]:
    """Passages from a JSON list of strings or from blank-line-separated text."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        passages = json.loads(text)
        if not isinstance(passages, list) or not all(isinstance(p, str) for p in passages):
            raise click.BadParameter(
                f"{path} must hold a JSON list of strings", param_hint="--context"
            )
        return passages
    return [block.strip() for block in text.split("\n\n") if block.strip()]
