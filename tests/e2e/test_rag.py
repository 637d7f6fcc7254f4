"""RAG inputs through the real ensemble: template, budget, dropped counts, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from tests.e2e.conftest import MAX_INPUT_LEN, LiveServer
from tests.e2e.helpers import stream_infer
from tests.e2e.rag_prompts import CORPUS

pytestmark = pytest.mark.e2e
PASSAGES = list(CORPUS["passages"].values())


def rag_request(passages: list[str], question: str, max_tokens: int = 16, **extra) -> dict:
    return {
        "text_input": np.asarray([[question]], dtype=object),
        "max_tokens": np.asarray([[max_tokens]], dtype=np.int32),
        "rag_passages": np.asarray([passages], dtype=object),
        "rag_question": np.asarray([[question]], dtype=object),
        **extra,
    }


def ask(server: LiveServer, inputs: dict):
    results, error = stream_infer(server.state.grpc_url, "ensemble", inputs)
    assert error is None, error
    text = "".join(
        piece.decode()
        for r in results
        if (o := r.as_numpy("text_output")) is not None
        for piece in o.reshape(-1)
    )
    counts = next(
        (int(r.as_numpy("rag_passages_dropped")[0][0]), int(r.as_numpy("rag_tokens_dropped")[0][0]))
        for r in results
        if r.as_numpy("rag_passages_dropped") is not None
    )
    return text, counts


def test_passages_that_fit_are_all_kept(live_server: LiveServer) -> None:
    item = CORPUS["questions"][0]
    passages = [CORPUS["passages"][key] for key in item["passages"]]
    text, counts = ask(live_server, rag_request(passages, item["q"], max_tokens=24))
    assert counts == (0, 0)
    assert text.strip()


def test_budget_drops_whole_passages_from_the_end(
    live_server: LiveServer, built_artifact: Path
) -> None:
    tokenizer = Tokenizer.from_file(str(built_artifact / "tokenizer.json"))
    max_tokens = 64
    text, (dropped, tokens) = ask(
        live_server, rag_request(PASSAGES, "Which passage is about birds?", max_tokens)
    )
    assert 0 < dropped < len(PASSAGES)
    expected = sum(
        len(tokenizer.encode(p, add_special_tokens=False).ids) for p in PASSAGES[-dropped:]
    )
    assert tokens == expected


def test_question_that_cannot_fit_is_refused_with_the_numbers(live_server: LiveServer) -> None:
    question = "Why is the sky blue? " * 60
    _, error = stream_infer(
        live_server.state.grpc_url, "ensemble", rag_request(PASSAGES[:1], question, 32)
    )
    assert error is not None
    message = error.message()
    assert "rag_question" in message and f"max_input_len {MAX_INPUT_LEN}" in message
    assert "max_tokens 32" in message and "reserve 8" in message


def test_passages_of_the_wrong_type_are_refused_naming_the_input(live_server: LiveServer) -> None:
    inputs = rag_request([], "Anything?")
    inputs["rag_passages"] = np.asarray([[1, 2]], dtype=np.int32)
    _, error = stream_infer(live_server.state.grpc_url, "ensemble", inputs)
    assert error is not None and "rag_passages" in error.message()


def test_two_questions_are_refused(live_server: LiveServer) -> None:
    inputs = rag_request(PASSAGES[:1], "One?")
    inputs["rag_question"] = np.asarray([["One?", "Two?"]], dtype=object)
    _, error = stream_infer(live_server.state.grpc_url, "ensemble", inputs)
    assert error is not None and "rag_question" in error.message()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_generate_with_a_context_file(live_server: LiveServer, tmp_path: Path, protocol) -> None:
    from click.testing import CliRunner

    from edgectl.cli import cli

    context = tmp_path / "passages.txt"
    context.write_text("\n\n".join(PASSAGES[:2]), encoding="utf-8")
    state = live_server.state
    result = CliRunner().invoke(
        cli,
        [
            "--set", f"server.http_port={state.http_port}",
            "--set", f"server.grpc_port={state.grpc_port}",
            "--set", f"server.metrics_port={state.metrics_port}",
            "generate", "--protocol", protocol, "--max-tokens", "24",
            "--context", str(context), "How much water does the Harwick reservoir hold?",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "4.2 million" in result.output
