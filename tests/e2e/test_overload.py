"""Overload: past the queue limit, requests are refused at once with UNAVAILABLE, none hang."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgectl.client import GenerateRequest
from edgectl.errors import EdgectlError
from tests.e2e.conftest import UNUSED_END_ID, LiveServer, running_server, server_config

pytestmark = pytest.mark.e2e
SLOTS, QUEUE = 2, 2


def small_config(root: Path, artifact: Path, **engine: object):
    return server_config(
        root, artifact, max_num_seqs=SLOTS, max_queue_size=QUEUE, queue_timeout_s=30, **engine
    )


@pytest.fixture(scope="module")
def small_server(
    built_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    config = small_config(tmp_path_factory.mktemp("overload"), built_artifact, gateway=True)
    with running_server(config) as live:
        yield live


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_requests_beyond_the_queue_are_refused_not_lost(
    small_server: LiveServer, protocol: str
) -> None:
    assert_refused_not_lost(small_server, protocol)


def test_unary_fronts_pass_the_engine_queue_refusal_on(
    built_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Unary mode: requests reach the engine's queue at once and its refusal comes back."""
    config = small_config(
        tmp_path_factory.mktemp("overload-unary"), built_artifact, decoupled=False
    )
    with running_server(config) as small_unary_server:
        assert_refused_not_lost(small_unary_server, "grpc")


def assert_refused_not_lost(small_server: LiveServer, protocol: str) -> None:
    sent = 10
    outcomes: list[str] = []
    lock = threading.Lock()
    request = GenerateRequest("Count to one hundred.", max_tokens=48, end_id=UNUSED_END_ID)

    def one() -> None:
        try:
            text = "".join(small_server.client.generate("ensemble", request, protocol))
            outcome = "completed" if text else "empty"
        except EdgectlError as err:
            outcome = str(err)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(sent)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(outcomes) == sent  # nothing hung or vanished
    completed = outcomes.count("completed")
    refused = [o for o in outcomes if o != "completed"]
    assert completed >= SLOTS + QUEUE - 1
    assert refused, "10 concurrent requests against 2 slots + 2 queue places were all accepted"
    for message in refused:
        assert "engine queue is full (max_queue_size=2" in message and "retry later" in message
        if protocol == "http":
            # The engine answers UNAVAILABLE; Triton's generate endpoint reports errors raised
            # inside an ensemble as HTTP 400, so the reason is in the message.
            assert "HTTP 400" in message or "HTTP 503" in message
    assert small_server.metric("edgectl_engine_requests_rejected_total") >= len(refused)
    # and the server serves normally right after
    answer = GenerateRequest("What is the capital of France?", 16, apply_chat_template=True)
    assert "Paris" in "".join(small_server.client.generate("ensemble", answer, protocol))


@pytest.mark.parametrize("stream", [False, True])
def test_the_openai_gateway_answers_a_refusal_with_503_and_retry_after(
    small_server: LiveServer, stream: bool
) -> None:
    url = f"http://127.0.0.1:{small_server.config.openai.port}/v1/completions"
    body = {"model": "ensemble", "prompt": "Count to one hundred.", "max_tokens": 48,
            "ignore_eos": True, "stream": stream}  # fmt: skip
    replies: list[httpx.Response] = []
    lock = threading.Lock()

    def one() -> None:
        reply = httpx.post(url, json=body, timeout=120)
        with lock:
            replies.append(reply)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=150)
    statuses = sorted(reply.status_code for reply in replies)
    assert len(statuses) == 10 and set(statuses) <= {200, 503}, statuses
    refused = [reply for reply in replies if reply.status_code == 503]
    assert refused and statuses.count(200) >= SLOTS + QUEUE - 1, statuses
    for reply in refused:
        assert reply.headers["retry-after"] == "1"
        assert "retry later" in reply.json()["error"]["message"]
