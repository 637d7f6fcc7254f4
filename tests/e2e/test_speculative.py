"""Speculative decoding through the real server: lossless greedy output, counters, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgectl.client import GenerateRequest
from tests.e2e.conftest import LiveServer, running_server, server_config
from tests.e2e.helpers import stream_infer
from tests.e2e.rag_prompts import rag_prompt

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MAX_TOKENS = 48
PROMPTS = [rag_prompt(i) for i in range(4)]


def answers(server: LiveServer) -> list[str]:
    """Greedy answers one at a time (batch 1, so batch composition cannot change them)."""
    out = []
    for prompt in PROMPTS:
        request = GenerateRequest(prompt, max_tokens=MAX_TOKENS, apply_chat_template=True)
        out.append("".join(server.client.generate("ensemble", request, "grpc")))
    return out


def serve(tmp_path: Path, artifact: Path, name: str, **speculative) -> Iterator[LiveServer]:
    engine = {"dynamic_quantization_group_size": 0}
    if speculative:
        engine["speculative"] = speculative
    config = server_config(tmp_path / name, artifact, **engine)
    with running_server(config) as live:
        yield live


@pytest.fixture(scope="module")
def plain_answers(built_artifact: Path, tmp_path_factory) -> list[str]:
    for live in serve(tmp_path_factory.mktemp("spec"), built_artifact, "plain"):
        return answers(live)
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def lookup_server(built_artifact: Path, tmp_path_factory) -> Iterator[LiveServer]:
    yield from serve(
        tmp_path_factory.mktemp("spec"), built_artifact, "lookup", mode="prompt_lookup"
    )


def test_prompt_lookup_is_lossless_and_counts_acceptance(
    plain_answers: list[str], lookup_server: LiveServer
) -> None:
    assert answers(lookup_server) == plain_answers
    drafted = lookup_server.metric("edgectl_engine_total_draft_tokens_total")
    accepted = lookup_server.metric("edgectl_engine_total_accepted_draft_tokens_total")
    assert drafted > 0 and 0 < accepted <= drafted
    rate = lookup_server.metric("edgectl_engine_acceptance_rate")
    assert rate == pytest.approx(accepted / drafted, rel=0.02)


def test_beams_are_refused_while_speculating(lookup_server: LiveServer) -> None:
    inputs = {
        "text_input": np.asarray([["Hello"]], dtype=object),
        "max_tokens": np.asarray([[4]], dtype=np.int32),
        "beam_width": np.asarray([[2]], dtype=np.int32),
    }
    _, error = stream_infer(lookup_server.state.grpc_url, "ensemble", inputs)
    assert error is not None
    assert "beam_width must be 1 while speculative decoding (prompt_lookup)" in error.message()


def test_model_as_its_own_draft_accepts_almost_everything(
    plain_answers: list[str], built_artifact: Path, tmp_path: Path
) -> None:
    """No smaller model of the family is available offline: the draft path is proven with
    the target as its own draft (acceptance near 100 %, no speed-up expected)."""
    for live in serve(tmp_path, built_artifact, "draft", mode="draft", draft=str(built_artifact)):
        assert answers(live) == plain_answers
        rate = live.metric("edgectl_engine_acceptance_rate")
        assert rate > 0.9
