"""Custom metrics on Triton's /metrics endpoint, shared by the Python-backend models.

The metric tables live here, one place, because ``edgectl`` and the end-to-end tests
read these names back from /metrics.  ``pb_utils`` is passed in: it is only importable
inside a Triton stub, and this module must import without one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The CPU engine step (edgectl.runtime.engine.EngineStats), labelled by model name.
ENGINE_PREFIX = "edgectl_engine"
ENGINE_COUNTERS = {
    "steps": "Engine steps (one scheduler iteration each)",
    "scheduled_sequences": "Sum over steps of the sequences scheduled in that step",
    "requests_added": "Requests admitted to the running batch",
    "requests_finished": "Requests that completed",
    "requests_cancelled": "Requests cancelled by their client",
    "requests_failed": "Requests refused or aborted with an error",
    "requests_rejected": "Requests refused for overload (queue full or queue timeout)",
}
ENGINE_GAUGES = {
    "peak_scheduled": "Most sequences scheduled in one step since load",
    "active": "Requests in the running batch now",
    "waiting": "Requests waiting for a slot in the running batch",
    "kv_cache_usage": "Fraction of the paged KV cache in use",
}

# Speculative decoding (edgectl.runtime.speculative), TensorRT-LLM's names; only
# published by a pipeline built with a speculative mode.
SPECULATIVE_COUNTERS = {
    "total_draft_tokens": "Draft token positions the target verified (K per decoding step)",
    "total_accepted_draft_tokens": "Draft tokens the target accepted",
}
SPECULATIVE_GAUGES = {
    "acceptance_rate": "total_accepted_draft_tokens / total_draft_tokens since load",
}

# Request coalescing and the response cache (edgectl.runtime.coalesce).
COALESCE_COUNTERS = {
    "coalesced_requests": "Requests served by an identical request's engine sequence",
    "response_cache_hits": "Requests answered from the response cache",
}
COALESCE_GAUGES = {"response_cache_entries": "Responses held in the response cache"}

# Co-resident time-slicing (edgectl.runtime.slots): achieved share per model is
# rate(edgectl_timeslice_device_seconds_total) over its sum across models.
SLOT_PREFIX = "edgectl_timeslice"
SLOT_COUNTERS = {
    "device_seconds": "Seconds this engine held the device under the time-slicing policy",
    "slots": "Time slots this engine completed",
    "slot_waits": "Times this engine had work but waited for another model's slot",
    "slot_wait_seconds": "Seconds this engine had work but waited for another model's slot",
}
SLOT_GAUGES = {"configured_share": "This engine's configured share of the device (0..1)"}

# Swap mode's front models (edgectl.runtime.swap_front), labelled by the served name.
SWAP_PREFIX = "edgectl_timeslice_swap"
SWAP_COUNTERS = {
    "requests": "Requests the swap front accepted",
    "ins": "Times the model was swapped in (loaded)",
    "outs": "Times the model was swapped out (unloaded)",
    "load_seconds": "Sum of swap-in load times, seconds",
    "waited_requests": "Requests that waited for a swap-in",
    "wait_seconds": "Sum of those waits, seconds",
    "wait_timeouts": "Requests refused after waiting swap.wait_timeout_s",
}
SWAP_GAUGES = {
    "resident": "1 while the model is swapped in",
    "queue_depth": "Requests waiting for the model to be swapped in",
    "in_flight": "Requests forwarded to the model and not finished",
    "last_load_seconds": "Load time of the latest swap-in, seconds",
}


class MetricTable:
    """One labelled series per table key, fed from cumulative values.

    Sources report running totals, while Triton counters only go up by increments, so
    a counter is advanced by the difference to the last published value.  A source
    that restarts from zero (a re-applied time-slicing policy, a recovered scheduler)
    counts on from there instead of going backwards.  Counters get the ``_total``
    suffix; gauges are set to the value as it is.
    """

    def __init__(
        self,
        pb_utils: Any,
        prefix: str,
        counters: Mapping[str, str],
        gauges: Mapping[str, str],
        labels: Mapping[str, str],
    ) -> None:
        counter, gauge = pb_utils.MetricFamily.COUNTER, pb_utils.MetricFamily.GAUGE
        # Each series keeps its family referenced for as long as it is published.
        self._series: dict[str, tuple[bool, Any, Any]] = {}
        for kind, table in ((counter, counters), (gauge, gauges)):
            is_counter = kind == counter
            for key, description in table.items():
                family = pb_utils.MetricFamily(
                    name=f"{prefix}_{key}{'_total' if is_counter else ''}",
                    description=description,
                    kind=kind,
                )
                self._series[key] = (is_counter, family, family.Metric(labels=dict(labels)))
        self._last: dict[str, float] = {}

    def publish(self, values: Mapping[str, float] | Any) -> None:
        """Publish every key of the tables from ``values`` (a mapping or has ``as_dict``)."""
        values = values if isinstance(values, Mapping) else values.as_dict()
        for key, (is_counter, _family, metric) in self._series.items():
            value = values[key]
            if not is_counter:
                metric.set(value)
                continue
            last = self._last.get(key, 0)
            if value < last:
                last = 0  # the source restarted
            if value - last:
                metric.increment(value - last)
            self._last[key] = value
