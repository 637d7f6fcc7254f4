"""The gateway's own Prometheus metrics, measured where the client sees them.

Time to first token and inter-token latency are taken at the moment each piece of
text is handed to the HTTP response, so they include the gateway's own cost.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds: fine steps below 100 ms, where TTFT and inter-token latency live on CPU.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2,
                    0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)  # fmt: skip


class GatewayMetrics:
    """One registry per app, so tests can build several apps in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "edgectl_openai_requests", "Finished HTTP requests by endpoint and status.",
            ["endpoint", "status"], registry=self.registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "edgectl_openai_requests_in_flight", "Generation requests being served.",
            registry=self.registry,
        )  # fmt: skip
        self.ttft = Histogram(
            "edgectl_openai_time_to_first_token_seconds",
            "From the request's arrival to its first generated text.",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.itl = Histogram(
            "edgectl_openai_inter_token_latency_seconds",
            "Between consecutive pieces of streamed text of one choice.",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "edgectl_openai_prompt_tokens", "Prompt tokens, as counted by the ensemble.",
            registry=self.registry,
        )  # fmt: skip
        self.completion_tokens = Counter(
            "edgectl_openai_completion_tokens", "Generated tokens, as counted by the ensemble.",
            registry=self.registry,
        )  # fmt: skip

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
