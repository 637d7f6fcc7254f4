"""A short seeded bad-input storm against each shared server (the full one is a benchmark)."""

from __future__ import annotations

import psutil
import pytest

from benchmarks.fuzz_requests import greedy_text, storm
from edgectl.runtime.processes import live_stubs
from tests.e2e.conftest import BOTH_MODES, LiveServer

pytestmark = pytest.mark.e2e


@BOTH_MODES
def test_a_storm_of_bad_requests_is_answered_and_changes_nothing(server: LiveServer) -> None:
    state = server.state
    stubs_before = set(live_stubs(psutil.Process(state.pid)))
    before = greedy_text(state.http_url)
    outcomes = storm(state.http_url, state.grpc_url, count=300, seed=11)
    assert outcomes["timeout"] == 0 and outcomes["transport"] == 0, outcomes
    assert outcomes["refused"] > 200  # it really was a storm of bad input
    assert set(live_stubs(psutil.Process(state.pid))) == stubs_before  # no stub died
    assert greedy_text(state.http_url) == before
