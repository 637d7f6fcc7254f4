"""Identical requests in flight share one engine sequence; every client gets the full text."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgectl.client import GenerateRequest
from tests.e2e.conftest import UNUSED_END_ID, LiveServer, running_server, server_config
from tests.e2e.rag_prompts import rag_prompt

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CLIENTS = 4


@pytest.fixture(scope="module")
def live_server(built_artifact: Path, tmp_path_factory) -> Iterator[LiveServer]:
    """A server with coalescing and a small response cache on (both off by default)."""
    config = server_config(
        tmp_path_factory.mktemp("coalesce"), built_artifact, coalesce=True, response_cache_size=8
    )
    with running_server(config) as live:
        yield live


def generate(server: LiveServer, request: GenerateRequest, protocol: str = "grpc") -> str:
    return "".join(server.client.generate("ensemble", request, protocol))


def test_identical_greedy_requests_share_one_sequence(live_server: LiveServer) -> None:
    request = GenerateRequest(
        rag_prompt(5), max_tokens=64, stream=True, end_id=UNUSED_END_ID, apply_chat_template=True
    )
    added = live_server.metric("edgectl_engine_requests_added_total")
    merged = live_server.metric("edgectl_engine_coalesced_requests_total")
    with ThreadPoolExecutor(CLIENTS) as pool:
        texts = list(pool.map(lambda _: generate(live_server, request), range(CLIENTS)))
    assert len(set(texts)) == 1 and texts[0]
    new_sequences = live_server.metric("edgectl_engine_requests_added_total") - added
    joined = live_server.metric("edgectl_engine_coalesced_requests_total") - merged
    assert joined >= 1
    assert new_sequences + joined == CLIENTS


def test_unseeded_sampled_requests_are_not_merged(live_server: LiveServer) -> None:
    request = GenerateRequest(
        "Write a poem.", max_tokens=32, temperature=1.0, end_id=UNUSED_END_ID, stream=True
    )
    merged = live_server.metric("edgectl_engine_coalesced_requests_total")
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: generate(live_server, request), range(3)))
    assert live_server.metric("edgectl_engine_coalesced_requests_total") == merged


def test_response_cache_answers_a_repeated_greedy_request(live_server: LiveServer) -> None:
    request = GenerateRequest(rag_prompt(2), max_tokens=24, apply_chat_template=True)
    first = generate(live_server, request, "http")
    added = live_server.metric("edgectl_engine_requests_added_total")
    hits = live_server.metric("edgectl_engine_response_cache_hits_total")
    assert generate(live_server, request, "http") == first
    assert live_server.metric("edgectl_engine_response_cache_hits_total") == hits + 1
    assert live_server.metric("edgectl_engine_requests_added_total") == added
