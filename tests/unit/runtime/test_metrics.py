"""MetricTable against a fake pb_utils: names, labels, counter deltas, restarts, gauges."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from edgectl.runtime.engine import EngineStats
from edgectl.runtime.metrics import (
    ENGINE_COUNTERS,
    ENGINE_GAUGES,
    ENGINE_PREFIX,
    SLOT_COUNTERS,
    SLOT_GAUGES,
    SLOT_PREFIX,
    SWAP_COUNTERS,
    SWAP_GAUGES,
    SWAP_PREFIX,
    MetricTable,
)


@dataclass
class FakeMetric:
    labels: dict[str, str]
    increments: list[float] = field(default_factory=list)
    sets: list[float] = field(default_factory=list)

    def increment(self, value: float) -> None:
        self.increments.append(value)

    def set(self, value: float) -> None:
        self.sets.append(value)


class FakeFamily:
    """pb_utils.MetricFamily: records every family and series created."""

    COUNTER = "counter"
    GAUGE = "gauge"
    created: list[FakeFamily] = []

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name, self.description, self.kind = name, description, kind
        self.metrics: list[FakeMetric] = []
        FakeFamily.created.append(self)

    def Metric(self, labels: dict[str, str]) -> FakeMetric:  # noqa: N802 - pb_utils' name
        metric = FakeMetric(dict(labels))
        self.metrics.append(metric)
        return metric


@pytest.fixture
def pb_utils():
    FakeFamily.created = []
    return SimpleNamespace(MetricFamily=FakeFamily)


def families(pb_utils) -> dict[str, FakeFamily]:
    return {family.name: family for family in pb_utils.MetricFamily.created}


def series(pb_utils, name: str) -> FakeMetric:
    (metric,) = families(pb_utils)[name].metrics
    return metric


def test_counters_get_the_total_suffix_and_gauges_do_not(pb_utils):
    MetricTable(pb_utils, "p", {"hits": "Hits"}, {"depth": "Depth"}, {"model": "m"})
    made = families(pb_utils)
    assert set(made) == {"p_hits_total", "p_depth"}
    assert (made["p_hits_total"].kind, made["p_hits_total"].description) == ("counter", "Hits")
    assert (made["p_depth"].kind, made["p_depth"].description) == ("gauge", "Depth")
    assert series(pb_utils, "p_hits_total").labels == {"model": "m"}
    assert series(pb_utils, "p_depth").labels == {"model": "m"}


def test_counters_increment_by_the_difference_to_the_last_value(pb_utils):
    table = MetricTable(pb_utils, "p", {"hits": "Hits"}, {}, {"model": "m"})
    for value in (3, 3, 5, 9.5):
        table.publish({"hits": value})
    assert series(pb_utils, "p_hits_total").increments == [3, 2, 4.5]


def test_a_counter_whose_source_restarts_counts_on_from_zero(pb_utils):
    table = MetricTable(pb_utils, "p", {"hits": "Hits"}, {}, {"model": "m"})
    for value in (10, 0, 4, 2, 2, 7):
        table.publish({"hits": value})
    # 10, then a restart to 0 (nothing), 4 more, a restart at 2 (counts 2), then 5
    assert series(pb_utils, "p_hits_total").increments == [10, 4, 2, 5]
    assert sum(series(pb_utils, "p_hits_total").increments) == 21  # never goes backwards


def test_gauges_are_set_to_each_value_as_it_is(pb_utils):
    table = MetricTable(pb_utils, "p", {}, {"depth": "Depth"}, {"model": "m"})
    for value in (3, 0, 1.5):
        table.publish({"depth": value})
    assert series(pb_utils, "p_depth").sets == [3, 0, 1.5]


def test_an_object_with_as_dict_is_published_like_its_dict(pb_utils):
    table = MetricTable(pb_utils, ENGINE_PREFIX, ENGINE_COUNTERS, ENGINE_GAUGES, {"model": "m"})
    table.publish(EngineStats(steps=4, active=2, kv_cache_usage=0.25))
    assert series(pb_utils, "edgectl_engine_steps_total").increments == [4]
    assert series(pb_utils, "edgectl_engine_requests_added_total").increments == []
    assert series(pb_utils, "edgectl_engine_active").sets == [2]
    assert series(pb_utils, "edgectl_engine_kv_cache_usage").sets == [0.25]


def test_a_value_missing_from_the_table_is_an_error_not_a_silent_zero(pb_utils):
    table = MetricTable(pb_utils, "p", {"hits": "Hits"}, {"depth": "Depth"}, {"model": "m"})
    with pytest.raises(KeyError):
        table.publish({"hits": 1})


def test_the_engine_tables_keep_their_published_names(pb_utils):
    MetricTable(pb_utils, ENGINE_PREFIX, ENGINE_COUNTERS, ENGINE_GAUGES, {"model": "m"})
    assert set(families(pb_utils)) == {
        "edgectl_engine_steps_total",
        "edgectl_engine_scheduled_sequences_total",
        "edgectl_engine_requests_added_total",
        "edgectl_engine_requests_finished_total",
        "edgectl_engine_requests_cancelled_total",
        "edgectl_engine_requests_failed_total",
        "edgectl_engine_requests_rejected_total",
        "edgectl_engine_peak_scheduled",
        "edgectl_engine_active",
        "edgectl_engine_waiting",
        "edgectl_engine_kv_cache_usage",
    }
    # every EngineStats field is published, so the engine's hook never misses a key
    assert set(ENGINE_COUNTERS) | set(ENGINE_GAUGES) == set(EngineStats().as_dict())


def test_the_slot_tables_keep_their_published_names(pb_utils):
    MetricTable(pb_utils, SLOT_PREFIX, SLOT_COUNTERS, SLOT_GAUGES, {"model": "m"})
    assert set(families(pb_utils)) == {
        "edgectl_timeslice_device_seconds_total",
        "edgectl_timeslice_slots_total",
        "edgectl_timeslice_slot_waits_total",
        "edgectl_timeslice_slot_wait_seconds_total",
        "edgectl_timeslice_configured_share",
    }


def test_the_swap_tables_keep_their_published_names(pb_utils):
    MetricTable(pb_utils, SWAP_PREFIX, SWAP_COUNTERS, SWAP_GAUGES, {"model": "m"})
    assert set(families(pb_utils)) == {
        "edgectl_timeslice_swap_requests_total",
        "edgectl_timeslice_swap_ins_total",
        "edgectl_timeslice_swap_outs_total",
        "edgectl_timeslice_swap_load_seconds_total",
        "edgectl_timeslice_swap_waited_requests_total",
        "edgectl_timeslice_swap_wait_seconds_total",
        "edgectl_timeslice_swap_wait_timeouts_total",
        "edgectl_timeslice_swap_resident",
        "edgectl_timeslice_swap_queue_depth",
        "edgectl_timeslice_swap_in_flight",
        "edgectl_timeslice_swap_last_load_seconds",
    }
