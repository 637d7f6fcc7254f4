"""Cost and energy per query from the speed estimates and a device's price and TDP.

Energy is an estimate: TDP x (idle share + busy share x utilisation), where utilisation
is how much of a step the memory system and the math units are busy. The machines this
was written on expose no power counters, so nothing here is measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgectl.plan.performance import Step


def queries_per_hour(prefill_s: float, step: Step, output_tokens: int) -> float:
    """A query holds the whole device for its prefill and a 1/batch share of its decode steps.

    Prefill is compute-bound and stalls the running batch while it runs, so it is not
    shared; the decode steps are.
    """
    return 3600.0 / (prefill_s + output_tokens * step.seconds / step.batch)


def utilisation(step: Step) -> float:
    """Average busy share of the memory system and the math units during a step."""
    return min(1.0, (step.memory_s + step.compute_s) / (2 * step.seconds))


def power_w(tdp_w: float, idle_fraction: float, step: Step) -> float:
    return tdp_w * (idle_fraction + (1 - idle_fraction) * utilisation(step))


@dataclass(frozen=True)
class Economics:
    """Money and energy for one device (or tp x pp devices) serving at one batch size."""

    price_per_hour: float  # for all the devices the engine spans
    power_w: float
    queries_per_hour: float
    aggregate_tok_s: float
    output_tokens: int

    @property
    def output_tok_s(self) -> float:
        """Generated tokens per second over whole queries, prefills included."""
        return self.queries_per_hour / 3600 * self.output_tokens

    @property
    def usd_per_1k_queries(self) -> float:
        return self.price_per_hour / self.queries_per_hour * 1000

    @property
    def usd_per_million_tokens(self) -> float:
        return self.price_per_hour / (self.output_tok_s * 3600) * 1e6

    @property
    def wh_per_query(self) -> float:
        return self.power_w / self.queries_per_hour

    @property
    def wh_per_1k_tokens(self) -> float:
        return self.power_w / (self.output_tok_s * 3600) * 1000

    def break_even_queries_per_day(self, api_usd_per_1k_tokens: float, tokens: int) -> float:
        """Queries a day above which owning the device costs less than paying the API."""
        api_per_query = api_usd_per_1k_tokens * tokens / 1000
        return self.price_per_hour * 24 / api_per_query

    @property
    def capacity_per_day(self) -> float:
        return self.queries_per_hour * 24
