"""In-flight batching and cancellation, proven from the engine's own counters."""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from edgectl.client import GenerateRequest
from tests.e2e.conftest import BOTH_MODES, UNUSED_END_ID, LiveServer
from tests.e2e.helpers import infer_input, wait_for

pytestmark = pytest.mark.e2e


def long_request(max_tokens: int, stream: bool = True) -> GenerateRequest:
    return GenerateRequest(
        "Tell me a long story about a lighthouse keeper.",
        max_tokens=max_tokens,
        stream=stream,
        end_id=UNUSED_END_ID,
        apply_chat_template=True,
    )


def run_timed(server: LiveServer, request: GenerateRequest, record: dict) -> None:
    """Generate, recording when the first piece and the end arrived."""
    record["start"] = time.monotonic()
    for piece in server.client.generate("ensemble", request, "grpc"):
        record.setdefault("first", time.monotonic())
        record.setdefault("text", "")
        record["text"] += piece
    record["end"] = time.monotonic()


def start_thread(server: LiveServer, request: GenerateRequest) -> tuple[threading.Thread, dict]:
    record: dict = {}
    thread = threading.Thread(target=run_timed, args=(server, request, record), daemon=True)
    thread.start()
    return thread, record


@BOTH_MODES
def test_concurrent_requests_share_engine_steps(server: LiveServer) -> None:
    steps_before = server.metric("edgectl_engine_steps_total")
    scheduled_before = server.metric("edgectl_engine_scheduled_sequences_total")
    workers = [start_thread(server, long_request(32, stream=False)) for _ in range(8)]
    for thread, _ in workers:
        thread.join(timeout=120)
    assert all(record.get("text") for _, record in workers)
    wait_for(lambda: server.metric("edgectl_engine_active") == 0, 10, "engine idle")
    steps = server.metric("edgectl_engine_steps_total") - steps_before
    scheduled = server.metric("edgectl_engine_scheduled_sequences_total") - scheduled_before
    # 8 x 32 tokens one after another would take >= 256 steps with 1 sequence each.
    assert scheduled / steps >= 4, (scheduled, steps)
    assert steps < 8 * 32 / 2
    assert server.metric("edgectl_engine_peak_scheduled") >= 8


@BOTH_MODES
def test_late_request_joins_the_running_batch(server: LiveServer) -> None:
    """Unary mode sends whole results: the engine's counter shows the 4 running."""
    stream = server.decoupled
    running = [start_thread(server, long_request(160, stream)) for _ in range(4)]
    if stream:
        wait_for(lambda: all("first" in r for _, r in running), 60, "4 streams to start")
    else:
        wait_for(lambda: server.metric("edgectl_engine_active") >= 4, 60, "4 to start")
    late_thread, late = start_thread(server, long_request(8, stream))
    late_thread.join(timeout=60)
    for thread, _ in running:
        thread.join(timeout=120)
    first_finish = min(record["end"] for _, record in running)
    assert late["first"] < first_finish
    assert late["end"] < first_finish  # it did not wait for the long ones to drain


def test_client_cancellation_stops_the_engine_sequence(live_server: LiveServer) -> None:
    """Decoupled only: it cancels a gRPC stream, which a unary deployment refuses."""
    cancelled_before = live_server.metric("edgectl_engine_requests_cancelled_total")
    steps_before = live_server.metric("edgectl_engine_steps_total")
    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(live_server.state.grpc_url)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    client.async_stream_infer(
        "ensemble",
        [
            infer_input("text_input", np.array([[b"Tell me a very long story."]], dtype=object)),
            infer_input("max_tokens", np.array([[MAX_TOKENS := 250]], dtype=np.int32)),
            infer_input("end_id", np.array([[UNUSED_END_ID]], dtype=np.int32)),
            infer_input("stream", np.array([[True]])),
        ],
    )
    for _ in range(3):
        _, error = responses.get(timeout=30)
        assert error is None
    client.stop_stream(cancel_requests=True)
    client.close()
    wait_for(
        lambda: live_server.metric("edgectl_engine_requests_cancelled_total") > cancelled_before,
        10,
        "the engine to count the cancellation",
    )
    wait_for(lambda: live_server.metric("edgectl_engine_active") == 0, 10, "engine idle")
    # The sequence stopped early: far fewer steps than the 250 tokens asked for.
    assert live_server.metric("edgectl_engine_steps_total") - steps_before < MAX_TOKENS / 2
