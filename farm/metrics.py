"""Every Prometheus metric the farm exports, defined in one place.

Build figures are read from the ledger at scrape time, so one ``/metrics`` endpoint
reports the whole farm however many workers ran the builds, and survives restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from farm.errors import FarmError
from farm.ledger import BuildLedger
from farm.models import FINAL_STATES
from farm.queue import BuildQueue

logger = logging.getLogger(__name__)

DURATION_BUCKETS_SECONDS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
WAIT_BUCKETS_SECONDS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class FarmCollector(Collector):
    """Queue depth from Redis and build figures from the ledger, read per scrape."""

    def __init__(
        self, ledger: BuildLedger, queue: BuildQueue, queues: Sequence[str]
    ) -> None:
        self.ledger = ledger
        self.queue = queue
        self.queues = list(queues)

    def collect(self) -> Iterator[Metric]:
        for make in (
            self._queue_depth,
            self._builds_running,
            self._builds_total,
            self._durations,
            self._waits,
        ):
            try:
                yield make()
            except FarmError as exc:
                logger.warning("metrics: skipped %s: %s", make.__name__, exc.message)

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def _queue_depth(self) -> Metric:
        family = GaugeMetricFamily(
            "farm_queue_depth", "Builds waiting in a queue.", labels=["queue"]
        )
        for name in self.queues:
            family.add_metric([name], self.queue.depth(name))
        return family

    def _builds_running(self) -> Metric:
        family = GaugeMetricFamily(
            "farm_builds_running", "Builds a worker is running now."
        )
        family.add_metric([], self.ledger.count_by_state().get("running", 0))
        return family

    def _builds_total(self) -> Metric:
        family = CounterMetricFamily(
            "farm_builds", "Builds that ended, by final state.", labels=["state"]
        )
        counts = self.ledger.count_by_state()
        for state in sorted(FINAL_STATES):
            family.add_metric([state.value], counts.get(state.value, 0))
        return family

    def _durations(self) -> Metric:
        return self._histogram(
            "farm_build_duration_seconds",
            "Time from start to end of finished builds.",
            "duration_seconds",
            DURATION_BUCKETS_SECONDS,
        )

    def _waits(self) -> Metric:
        return self._histogram(
            "farm_build_wait_seconds",
            "Time builds waited in the queue before starting.",
            "wait_seconds",
            WAIT_BUCKETS_SECONDS,
        )

    def _histogram(
        self, name: str, documentation: str, column: str, buckets: Sequence[float]
    ) -> Metric:
        states = [state.value for state in FINAL_STATES]
        if column == "wait_seconds":
            states += ["running"]
        counts, total, value_sum = self.ledger.histogram(column, buckets, states=states)
        family = HistogramMetricFamily(name, documentation)
        pairs: list[tuple[str, float]] = [
            (str(float(b)), n) for b, n in zip(buckets, counts, strict=True)
        ]
        family.add_metric([], [*pairs, ("+Inf", total)], value_sum)
        return family


def make_registry(collector: FarmCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry
