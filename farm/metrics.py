"""Every Prometheus metric the farm exports, defined in one place.

Figures are read at scrape time from the ledger (builds) and Redis (queues and the
nodes' beats), so one ``/metrics`` endpoint reports the whole farm however many
workers ran the builds, and survives restarts. Labels stay few: queue, priority,
final state, failure kind, stage role and node.

Counters and histograms of ended builds add up over the farm's whole history. A
build's figures no longer change once it has ended, so the web app keeps the sums
for builds that ended over an hour ago (:class:`SettledFigures`) and a scrape reads
only the builds of the last hour or so, however long the history.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from farm.errors import FAILURE_KINDS, FarmError
from farm.ledger import ENDED
from farm.models import BuildState
from farm.queue import PRIORITIES

if TYPE_CHECKING:
    from farm.builds import BuildService
    from farm.ledger import BuildLedger

logger = logging.getLogger(__name__)

DURATION_BUCKETS_SECONDS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
WAIT_BUCKETS_SECONDS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
STAGE_BUCKETS_SECONDS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
PUSH_BUCKETS_SECONDS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
SIZE_BUCKETS_BYTES = tuple(float(2**n * 1024**2) for n in range(0, 14, 1))  # 1M-8G

STAGE_ROLES = ("final", "builder")
FAILURES = ("none", *sorted(set(FAILURE_KINDS.values()) | {"infrastructure"}))

Family = Callable[[], Iterator[Metric]]
# Per label: cumulative counts per bucket, the count of all, and the sum in the
# family's whole units (HistogramFamily.units).
Histogram = dict[str, tuple[list[int], int, int]]

# Builds that ended this long ago are taken to be settled: nothing about them
# changes any more, and every process that ends builds has written its end.
SETTLE_AFTER = timedelta(hours=1)
# How often the settled sums take in the builds that settled since.
SETTLE_EVERY = timedelta(minutes=10)


@dataclass(frozen=True)
class HistogramFamily:
    """A histogram of one column of builds (farm.ledger.BuildLedger.histogram)."""

    name: str
    documentation: str
    column: str
    buckets: Sequence[float]
    states: Sequence[str]
    by: str | None = None
    # The label values shown even with no builds (None: the farm's queues).
    expected: Sequence[str] | None = ("",)
    # Whole units per 1 the sum is kept in: milliseconds of seconds, bytes.
    units: int = 1000


HISTOGRAMS = (
    HistogramFamily(
        "farm_build_duration_seconds",
        "Time from start to end of ended builds, by final state.",
        column="duration_seconds",
        buckets=DURATION_BUCKETS_SECONDS,
        states=ENDED,
        by="state",
        expected=ENDED,
    ),
    HistogramFamily(
        "farm_build_wait_seconds",
        "Time from submission to first start of builds that started.",
        column="wait_seconds",
        buckets=WAIT_BUCKETS_SECONDS,
        # Any state: a build handed back to the queue after it started has waited.
        states=[state.value for state in BuildState],
        by="queue",
        expected=None,
    ),
    HistogramFamily(
        "farm_stage_duration_seconds",
        "Time the steps of each Dockerfile stage of succeeded builds ran, by "
        "role: final (the image's stage) or builder.",
        column="stage_seconds",
        buckets=STAGE_BUCKETS_SECONDS,
        states=[BuildState.SUCCEEDED.value],
        by="role",
        expected=STAGE_ROLES,
    ),
    HistogramFamily(
        "farm_image_size_bytes",
        "Size of the images succeeded builds pushed, unpacked, as the engine "
        "holds them.",
        column="image_size_bytes",
        buckets=SIZE_BUCKETS_BYTES,
        states=[BuildState.SUCCEEDED.value],
        units=1,
    ),
    HistogramFamily(
        "farm_image_pushed_bytes",
        "Bytes of the images succeeded builds pushed as the registry holds them "
        "(config and compressed layers): what a pull downloads at most.",
        column="image_pushed_bytes",
        buckets=SIZE_BUCKETS_BYTES,
        states=[BuildState.SUCCEEDED.value],
        units=1,
    ),
    HistogramFamily(
        "farm_push_duration_seconds",
        "Time succeeded builds took to push their tags.",
        column="push_seconds",
        buckets=PUSH_BUCKETS_SECONDS,
        states=[BuildState.SUCCEEDED.value],
    ),
)


@dataclass
class BuildFigures:
    """What the counters and histograms say of a set of builds; the figures of two
    sets that share no build add up to those of both."""

    ended: dict[tuple[str, str], int] = field(default_factory=dict)
    steps: tuple[int, int] = (0, 0)  # run, cached
    histograms: dict[str, Histogram] = field(default_factory=dict)

    @classmethod
    def read(
        cls, ledger: BuildLedger, since: datetime | None, until: datetime | None
    ) -> BuildFigures:
        """The figures of the builds that ended in [since, until) (None: no
        bound), and with no ``until``, of those still running."""
        return cls(
            ended=ledger.count_ended(since=since, until=until),
            steps=ledger.step_totals(since=since, until=until),
            histograms={
                family.name: ledger.histogram(
                    family.column,
                    family.buckets,
                    states=family.states,
                    by=family.by,
                    since=since,
                    until=until,
                    units=family.units,
                )
                for family in HISTOGRAMS
            },
        )

    def __add__(self, other: BuildFigures) -> BuildFigures:
        ended = dict(self.ended)
        for key, count in other.ended.items():
            ended[key] = ended.get(key, 0) + count
        histograms = {
            name: _add_histograms(
                self.histograms.get(name, {}), other.histograms.get(name, {})
            )
            for name in self.histograms.keys() | other.histograms.keys()
        }
        run, cached = self.steps
        return BuildFigures(
            ended, (run + other.steps[0], cached + other.steps[1]), histograms
        )


def _add_histograms(one: Histogram, two: Histogram) -> Histogram:
    both = dict(one)
    for label, (counts, total, value_sum) in two.items():
        if label not in both:
            both[label] = (counts, total, value_sum)
            continue
        mine, my_total, my_sum = both[label]
        summed = [a + b for a, b in zip(mine, counts, strict=True)]
        both[label] = (summed, my_total + total, my_sum + value_sum)
    return both


class SettledFigures:
    """The figures of builds that ended over :data:`SETTLE_AFTER` ago, summed once
    and topped up every :data:`SETTLE_EVERY`; each scrape adds only the figures of
    builds that ended since (and of those running), so its cost follows the last
    hour's builds, not the whole history. The first scrape of a process reads all."""

    def __init__(
        self,
        ledger: BuildLedger,
        *,
        settle_after: timedelta = SETTLE_AFTER,
        settle_every: timedelta = SETTLE_EVERY,
    ) -> None:
        self.ledger = ledger
        self.settle_after = settle_after
        self.settle_every = settle_every
        self.settled = BuildFigures()
        self.until: datetime | None = None  # the settled figures end here
        self._lock = threading.Lock()  # scrapes may come at once

    def figures(self, now: datetime | None = None) -> BuildFigures:
        line = (now or datetime.now(UTC)) - self.settle_after
        with self._lock:
            if self.until is None or line - self.until >= self.settle_every:
                # Assigned only once read: a store that fails leaves them as they were.
                self.settled += BuildFigures.read(self.ledger, self.until, line)
                self.until = line
            settled, since = self.settled, self.until
        return settled + BuildFigures.read(self.ledger, since, None)


class FarmCollector(Collector):
    """The farm's figures, read per scrape; a store that does not answer leaves
    out only the families that need it."""

    def __init__(self, service: BuildService) -> None:
        self.service = service
        self.ledger = service.ledger
        self.live = service.live
        self.queues = list(service.queues)
        self.history = SettledFigures(service.ledger)

    def collect(self) -> Iterator[Metric]:
        # Each store is asked once up front: one that hangs costs a scrape one
        # timeout, not one per family.
        up = self._stores_up()
        yield self._stores(up)
        families: list[Family] = []
        if up["database"]:
            families += [self._queues, self._builds]
        if up["redis"]:
            families += [self._broker, self._nodes]
        for family in families:
            try:
                yield from list(family())
            except FarmError as exc:
                logger.warning("metrics: skipped %s: %s", family.__name__, exc.message)

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def _stores_up(self) -> dict[str, bool]:
        up = {}
        for store, ping in (("database", self.ledger.ping), ("redis", self.live.ping)):
            try:
                ping()
                up[store] = True
            except FarmError:
                up[store] = False
        return up

    def _stores(self, up: dict[str, bool]) -> Metric:
        family = GaugeMetricFamily(
            "farm_store_up",
            "Whether the web app reaches the store (database or Redis) the figures "
            "are read from; families it holds are left out while it does not.",
            labels=["store"],
        )
        for store, answers in up.items():
            family.add_metric([store], 1 if answers else 0)
        return family

    # -- queues ---------------------------------------------------------------

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "farm_queue_depth",
            "Builds waiting to start, including those a worker has reserved.",
            labels=["queue", "priority"],
        )
        oldest = GaugeMetricFamily(
            "farm_queue_oldest_wait_seconds",
            "How long the build waiting longest in a queue has waited, since it was "
            "submitted or handed back to the queue.",
            labels=["queue"],
        )
        demand = GaugeMetricFamily(
            "farm_queue_demand_builds",
            "Builds waiting or running in a queue: the figure to autoscale on.",
            labels=["queue"],
        )
        running = GaugeMetricFamily(
            "farm_builds_running", "Builds a worker is running now.", labels=["queue"]
        )
        waiting = {(q, p): 0 for q in self.queues for p in PRIORITIES}
        since: dict[str, datetime] = {}
        for queue, priority, count, first in self.ledger.waiting():
            waiting[(queue, priority)] = waiting.get((queue, priority), 0) + count
            since[queue] = min(since.get(queue, first), first)
        now = datetime.now(UTC)
        busy = self.ledger.count_running_by("queue")
        for queue, priority in sorted(waiting):
            depth.add_metric([queue, priority], waiting[(queue, priority)])
        for queue in sorted({queue for queue, _ in waiting} | set(busy)):
            queued = sum(n for (q, _), n in waiting.items() if q == queue)
            age = (now - since[queue]).total_seconds() if queue in since else 0.0
            oldest.add_metric([queue], max(0.0, age))
            running.add_metric([queue], busy.get(queue, 0))
            demand.add_metric([queue], queued + busy.get(queue, 0))
        yield from (depth, oldest, running, demand)

    def _capacity(self) -> Metric:
        family = GaugeMetricFamily(
            "farm_queue_capacity_builds",
            "Build slots of the nodes that are up, with an engine that answers, and "
            "serve a queue.",
            labels=["queue"],
        )
        slots = dict.fromkeys(self.queues, 0)
        for info in self.live.workers().values():
            if info.get("engine") != "ok":
                continue
            for queue in info.get("queues", []):
                slots[queue] = slots.get(queue, 0) + int(info.get("slots") or 0)
        for queue, count in sorted(slots.items()):
            family.add_metric([queue], count)
        return family

    def _broker(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "farm_queue_broker_messages",
            "Messages in a queue's Redis list itself (not those workers reserved).",
            labels=["queue", "priority"],
        )
        for queue in self.queues:
            for priority, count in sorted(self.service.queue.messages(queue).items()):
                family.add_metric([queue, priority], count)
        yield family
        yield self._capacity()

    # -- builds ---------------------------------------------------------------

    def _builds(self) -> Iterator[Metric]:
        figures = self.history.figures()
        family = CounterMetricFamily(
            "farm_builds",
            "Builds that ended, by final state and the kind of failure that ended "
            "them (none for success).",
            labels=["state", "failure"],
        )
        expected = {(BuildState.SUCCEEDED.value, "none")}
        expected |= {(BuildState.CANCELLED.value, "cancelled")}
        expected |= {(BuildState.FAILED.value, kind) for kind in FAILURES}
        expected -= {(BuildState.FAILED.value, "none")}
        expected -= {(BuildState.FAILED.value, "cancelled")}
        for state, failure in sorted(expected | set(figures.ended)):
            family.add_metric([state, failure], figures.ended.get((state, failure), 0))
        yield family
        for histogram in HISTOGRAMS:
            yield self._histogram(histogram, figures.histograms.get(histogram.name, {}))
        steps = CounterMetricFamily(
            "farm_build_steps",
            "Build steps of ended builds, run or taken from cache; the cache hit "
            "ratio is cached / all.",
            labels=["result"],
        )
        run, cached = figures.steps
        steps.add_metric(["cached"], cached)
        steps.add_metric(["run"], run)
        yield steps

    def _histogram(self, histogram: HistogramFamily, found: Histogram) -> Metric:
        by, buckets = histogram.by, histogram.buckets
        family = HistogramMetricFamily(
            histogram.name, histogram.documentation, labels=[by] if by else []
        )
        expected = self.queues if histogram.expected is None else histogram.expected
        empty = ([0] * len(buckets), 0, 0)
        for label in sorted(set(expected) | set(found)):
            counts, total, value_sum = found.get(label, empty)
            pairs: list[tuple[str, float]] = [
                (_bound(b), n) for b, n in zip(buckets, counts, strict=True)
            ]
            family.add_metric(
                [label] if by else [],
                [*pairs, ("+Inf", total)],
                value_sum / histogram.units,
            )
        return family

    # -- nodes ----------------------------------------------------------------

    def _nodes(self) -> Iterator[Metric]:
        def gauge(name: str, documentation: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, documentation, labels=["node"])

        up = gauge("farm_node_up", "Whether a node beat in the last 30 seconds.")
        slots = gauge("farm_node_build_slots", "Builds a node runs at once.")
        running = gauge(
            "farm_node_builds_running",
            "Builds a node runs now, as it says; for a node that is down, the builds "
            "still recorded as running on it, until a live node hands them back.",
        )
        draining = gauge(
            "farm_node_draining",
            "Whether a node is stopping: it takes no new build and is not counted "
            "as capacity; its running builds finish or go back to the queue.",
        )
        engine = gauge("farm_node_engine_up", "Whether a node's Docker engine answers.")
        free = gauge(
            "farm_node_disk_free_bytes",
            "Free bytes on the filesystem holding a node's engine data.",
        )
        size = gauge(
            "farm_node_disk_size_bytes",
            "Size of the filesystem holding a node's engine data.",
        )
        cache = gauge(
            "farm_node_build_cache_bytes", "Size of a node engine's build cache."
        )
        try:
            busy: dict[str, int] | None = self.ledger.count_running_by("worker")
        except FarmError:
            busy = None  # the database is down: the rest still comes from Redis
        for name, info in self.live.nodes().items():
            alive = bool(info["up"])
            up.add_metric([name], 1 if alive else 0)
            draining.add_metric([name], 1 if alive and info.get("draining") else 0)
            slots.add_metric([name], int(info.get("slots") or 0))
            if alive and "running" in info:
                running.add_metric([name], len(info["running"]))
            elif busy is not None:
                running.add_metric([name], busy.get(name, 0))
            answers = info.get("engine") == "ok"
            if alive:  # a node that is down has told nothing of its engine lately
                engine.add_metric([name], 1 if answers else 0)
            disk = info.get("disk") or {}
            for family, key in (
                (free, "free_bytes"),
                (size, "size_bytes"),
                (cache, "build_cache_bytes"),
            ):
                # The build cache is the engine's own figure: none while it is down.
                if key in disk and (key != "build_cache_bytes" or (alive and answers)):
                    family.add_metric([name], int(disk[key]))
        yield from (up, draining, slots, running, engine, free, size, cache)


def _bound(bucket: float) -> str:
    return str(float(bucket))


def make_registry(collector: FarmCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry
