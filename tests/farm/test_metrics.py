"""The sums /metrics keeps of settled builds (farm.metrics.SettledFigures): read in
spans of end times that meet, they count every build exactly once, whatever the
builds' states and however the spans fall."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import redis
from sqlalchemy import update

from farm.errors import StoreUnavailable
from farm.ledger import BuildLedger
from farm.livestate import LiveState
from farm.metrics import BuildFigures, FarmCollector, SettledFigures
from farm.models import Build, BuildStage, BuildState
from tests.farm.test_ledger import SOURCE, make_ledger, parse_spec
from tests.farm.test_livestate_nodes import beat_at

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def ended_at(ledger: BuildLedger, when: datetime | None, state=BuildState.SUCCEEDED):
    build = ledger.create(parse_spec({}, SOURCE), queue="builds")
    ledger.claim(build.id, worker="w")
    ledger.record_steps(
        build.id, [{"name": "RUN a", "internal": False, "cached": True}]
    )
    ledger.record_stages(
        build.id, [BuildStage(stage="app", role="final", duration_seconds=2.0)]
    )
    error = None if state == BuildState.SUCCEEDED else {"code": "build_failed"}
    ledger.finish(build.id, state, error=error, image_size_bytes=5000, push_seconds=0.2)
    with ledger.engine.begin() as connection:
        connection.execute(
            update(Build).where(Build.id == build.id).values(finished_at=when)
        )
    return build


def history_of(ledger: BuildLedger) -> list[str]:
    """Builds of every kind: ended long ago, an hour ago and just now, one with no
    end time, one running and one waiting."""
    for hours in (30, 3, 1.5, 0.5, 0):
        ended_at(ledger, NOW - timedelta(hours=hours))
    ended_at(ledger, NOW - timedelta(hours=2), BuildState.FAILED)
    ended_at(ledger, None, BuildState.FAILED)  # recorded before end times were kept
    running = ledger.create(parse_spec({}, SOURCE), queue="builds")
    ledger.claim(running.id, worker="w")
    ledger.create(parse_spec({}, SOURCE), queue="builds")
    return [running.id]


def test_spans_that_meet_count_every_build_once(tmp_path):
    ledger = make_ledger(tmp_path)
    history_of(ledger)
    whole = BuildFigures.read(ledger, None, None)
    assert whole.ended == {("succeeded", "none"): 5, ("failed", "dockerfile"): 2}
    assert whole.steps == (0, 7)
    assert whole.histograms["farm_build_wait_seconds"]["builds"][1] == 8  # + running

    cuts = [NOW - timedelta(hours=h) for h in (40, 2.5, 1, 0.25)]
    spans = list(zip([None, *cuts], [*cuts, None], strict=True))
    parts = [BuildFigures.read(ledger, since, until) for since, until in spans]
    total = BuildFigures()
    for part in parts:
        total += part
    assert total == whole  # sums too: whole milliseconds add up exactly
    assert parts[0].ended == {("failed", "dockerfile"): 1}  # the one with no end time
    assert parts[1].ended == {("succeeded", "none"): 2}  # 30 and 3 hours ago
    assert parts[2].ended == {("succeeded", "none"): 1, ("failed", "dockerfile"): 1}
    # A running build counts in the span that reaches up to now only.
    assert parts[-1].histograms["farm_build_wait_seconds"]["builds"][1] == 2


def test_settled_figures_are_read_once_and_topped_up(tmp_path):
    ledger = make_ledger(tmp_path)
    history_of(ledger)
    history = SettledFigures(
        ledger, settle_after=timedelta(hours=1), settle_every=timedelta(minutes=10)
    )
    assert history.figures(NOW) == BuildFigures.read(ledger, None, None)
    assert history.until == NOW - timedelta(hours=1)
    assert history.settled.ended == {
        ("succeeded", "none"): 3,
        ("failed", "dockerfile"): 2,
    }

    # A build ending now is counted at once, though the settled sums stay put.
    ended_at(ledger, NOW, BuildState.FAILED)
    later = NOW + timedelta(minutes=5)
    assert history.figures(later).ended[("failed", "dockerfile")] == 3
    assert history.until == NOW - timedelta(hours=1)

    # Two hours on, the settled sums have taken in what settled since, once.
    hours_later = NOW + timedelta(hours=2)
    assert history.figures(hours_later) == BuildFigures.read(ledger, None, None)
    assert history.until == hours_later - timedelta(hours=1)
    assert sum(history.settled.ended.values()) == 8


def test_a_store_failure_while_settling_leaves_the_sums_as_they_were(
    tmp_path, monkeypatch
):
    ledger = make_ledger(tmp_path)
    history_of(ledger)
    history = SettledFigures(ledger)
    history.figures(NOW)
    settled, until = history.settled, history.until

    def down(**_):
        raise StoreUnavailable("The database did not answer.")

    monkeypatch.setattr(ledger, "step_totals", down)
    with pytest.raises(StoreUnavailable):
        history.figures(NOW + timedelta(hours=3))
    assert (history.settled, history.until) == (settled, until)
    monkeypatch.undo()
    whole = BuildFigures.read(ledger, None, None)
    assert history.figures(NOW + timedelta(hours=3)) == whole


def test_a_build_handed_back_to_the_queue_keeps_its_first_wait(tmp_path):
    ledger = make_ledger(tmp_path)
    build = ledger.create(parse_spec({}, SOURCE), queue="builds")
    ledger.claim(build.id, worker="a")
    first = BuildFigures.read(ledger, None, None).histograms["farm_build_wait_seconds"]
    wait = ledger.get(build.id).wait_seconds
    assert ledger.requeue(build.id, attempt=1)
    queued = BuildFigures.read(ledger, None, None).histograms["farm_build_wait_seconds"]
    ledger.claim(build.id, worker="b")
    again = BuildFigures.read(ledger, None, None).histograms["farm_build_wait_seconds"]
    assert first == queued == again  # counted once, with the same wait, throughout
    assert ledger.get(build.id).wait_seconds == wait


@pytest.mark.integration
def test_a_node_up_counts_what_it_runs_and_one_down_what_it_left(tmp_path, redis_url):
    """A node that crashed and came back under its name runs one build; the two it
    ran before are still recorded as running until a sweep hands them back. A
    node that is down has said nothing lately: its recorded builds are shown."""
    ledger = make_ledger(tmp_path)
    client = redis.Redis.from_url(redis_url)
    live = LiveState(client)
    back, gone = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("back", "gone"))
    for node in (back, back, back, gone, gone):
        build = ledger.create(parse_spec({}, SOURCE), queue="q")
        ledger.claim(build.id, worker=node)
    live.beat_worker(back, queues=["q"], slots=2, running=["the-one-it-runs"])
    beat_at(live, gone, time.time() - 120)
    service = SimpleNamespace(ledger=ledger, live=live, queues=["q"], queue=None)
    try:
        families = {family.name: family for family in FarmCollector(service)._nodes()}
    finally:
        for node in (back, gone):
            live.leave(node)
        client.close()
    running = {
        sample.labels["node"]: sample.value
        for sample in families["farm_node_builds_running"].samples
    }
    assert (running[back], running[gone]) == (1, 2)


@pytest.mark.integration
def test_a_draining_node_is_up_but_not_capacity(tmp_path, redis_url):
    ledger = make_ledger(tmp_path)
    client = redis.Redis.from_url(redis_url)
    live = LiveState(client)
    queue = f"q-{uuid.uuid4().hex[:6]}"
    taking, draining = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("t", "d"))
    live.beat_worker(taking, queues=[queue], slots=2)
    live.beat_worker(draining, queues=[queue], slots=3, running=["b"], draining=True)
    service = SimpleNamespace(ledger=ledger, live=live, queues=[queue], queue=None)
    try:
        collector = FarmCollector(service)
        families = {family.name: family for family in collector._nodes()}
        capacity = collector._capacity()
    finally:
        for node in (taking, draining):
            live.leave(node)
        client.close()

    def by_node(name: str) -> dict[str, float]:
        return {s.labels["node"]: s.value for s in families[name].samples}

    assert by_node("farm_node_up")[draining] == 1
    flags = by_node("farm_node_draining")
    assert (flags[taking], flags[draining]) == (0, 1)
    assert by_node("farm_node_builds_running")[draining] == 1
    assert {s.labels["queue"]: s.value for s in capacity.samples}[queue] == 2
