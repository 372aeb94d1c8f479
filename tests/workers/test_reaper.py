"""The reaper's decisions, on a real SQLite ledger with small fakes for Redis."""

import pytest

from farm.buildspec import GitSource, parse_spec
from farm.errors import AttemptLost
from farm.ledger import BuildLedger
from farm.models import BuildState
from workers import reaper as reaper_module
from workers.reaper import LostBuildReaper

SOURCE = GitSource(url="https://git.example.org/app.git", ref="main")


class FakeLive:
    def __init__(self) -> None:
        self.beating: set[str] = set()
        self.lines: list[str] = []
        self.nodes_seen: dict[str, dict] = {}
        self.locks: set[str] = set()

    cancelled: set[str] = set()

    def cancel_requested(self, build_id: str) -> bool:
        return build_id in self.cancelled

    def has_heartbeat(self, build_id: str) -> bool:
        return build_id in self.beating

    def read_log(self, build_id: str) -> list[str]:
        return ["step 1"]

    def append_log(self, build_id: str, lines: list[str]) -> None:
        self.lines += lines

    def nodes(self) -> dict:
        return self.nodes_seen

    def hold_lock(self, name: str, *, seconds: int) -> bool:
        if name in self.locks:
            return False
        self.locks.add(name)
        return True


class FakeQueue:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.in_lists: list[str] = []

    def enqueue(self, build_id: str, *, queue: str, priority: str = "normal") -> None:
        self.sent.append(build_id)

    def waiting(self, queue: str) -> list[str]:
        return self.in_lists


def setup(tmp_path, clock=None):
    ledger = BuildLedger.from_url(f"sqlite:///{tmp_path}/farm.db")
    ledger.create_tables()
    live, queue = FakeLive(), FakeQueue()
    timing = {"clock": clock} if clock else {}
    reaper = LostBuildReaper(ledger, live, queue, max_attempts=2, **timing)
    return ledger, live, queue, reaper


def running_build(ledger):
    build = ledger.create(parse_spec({}, SOURCE), queue="builds")
    ledger.claim(build.id, worker="dead-node")
    return build.id


def test_a_beating_build_is_left_alone(tmp_path):
    ledger, live, queue, reaper = setup(tmp_path)
    build_id = running_build(ledger)
    live.beating.add(build_id)
    assert reaper.sweep() == [] and reaper.sweep() == []
    assert ledger.get(build_id).state == BuildState.RUNNING


def test_a_silent_build_is_requeued_on_the_second_sweep(tmp_path):
    ledger, live, queue, reaper = setup(tmp_path)
    build_id = running_build(ledger)
    assert reaper.sweep() == []  # one missed sweep may be a Redis hiccup
    assert reaper.sweep() == [build_id]
    assert ledger.get(build_id).state == BuildState.QUEUED
    assert queue.sent == [build_id]


def test_a_build_silent_on_every_attempt_fails(tmp_path):
    ledger, live, queue, reaper = setup(tmp_path)
    build_id = running_build(ledger)
    reaper.sweep(), reaper.sweep()
    ledger.claim(build_id, worker="another-dead-node")
    reaper.sweep(), reaper.sweep()
    build = ledger.get(build_id)
    assert build.state == BuildState.FAILED and build.error["code"] == "worker_lost"
    assert "step 1" in ledger.log_text(build_id)
    assert queue.sent == [build_id]


def test_attempts_handed_back_by_stopping_workers_are_not_lost_ones(tmp_path):
    ledger, live, queue, reaper = setup(tmp_path)
    build_id = running_build(ledger)
    for attempt in (1, 2, 3):  # three nodes stopped on purpose in turn
        assert ledger.requeue(build_id, attempt=attempt, on_purpose=True)
        ledger.claim(build_id, worker=f"node-{attempt + 1}")
    reaper.sweep(), reaper.sweep()  # the fourth node is lost: its first loss
    assert ledger.get(build_id).state == BuildState.QUEUED
    ledger.claim(build_id, worker="node-5")
    reaper.sweep(), reaper.sweep()  # its second loss, with max_attempts=2
    build = ledger.get(build_id)
    assert build.state == BuildState.FAILED and build.error["code"] == "worker_lost"
    assert "on 2 of its 5 attempts" in build.error["message"]


def test_a_stale_attempt_cannot_finish_the_build(tmp_path):
    ledger, live, queue, reaper = setup(tmp_path)
    build_id = running_build(ledger)
    reaper.sweep(), reaper.sweep()
    ledger.claim(build_id, worker="live-node")
    with pytest.raises(AttemptLost):
        ledger.finish(build_id, BuildState.SUCCEEDED, attempt=1)
    ledger.finish(build_id, BuildState.SUCCEEDED, attempt=2)


def test_a_lost_build_that_was_cancelled_ends_cancelled(tmp_path):
    ledger, live, queue, reaper = setup(tmp_path)
    build_id = running_build(ledger)
    live.cancelled = {build_id}
    reaper.sweep(), reaper.sweep()
    assert ledger.get(build_id).state == BuildState.CANCELLED
    assert queue.sent == []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """Builds count as queued long enough at once; the reaper's time is ours."""
    clock = Clock()
    monkeypatch.setattr(reaper_module, "QUEUED_GRACE_SECONDS", -1)
    return clock


def queued_build(ledger) -> str:
    return ledger.create(parse_spec({}, SOURCE), queue="builds").id


def test_a_queued_build_whose_message_waits_in_redis_is_left_alone(tmp_path, clock):
    ledger, live, queue, reaper = setup(tmp_path, clock)
    build_id = queued_build(ledger)
    queue.in_lists = [build_id]
    for _ in range(3):
        assert reaper.sweep_queued() == []
        clock.now += 60
    assert queue.sent == []


def test_a_queued_build_a_live_node_holds_is_left_alone(tmp_path, clock):
    ledger, live, queue, reaper = setup(tmp_path, clock)
    build_id = queued_build(ledger)
    live.nodes_seen = {"a": {"up": True, "holding": [build_id]}}
    for _ in range(3):
        assert reaper.sweep_queued() == []
        clock.now += 60
    assert queue.sent == []


def test_a_message_missing_long_enough_is_sent_again_once(tmp_path, clock):
    ledger, live, queue, reaper = setup(tmp_path, clock)
    build_id = queued_build(ledger)
    # Held only by a node that stopped beating: as good as lost.
    live.nodes_seen = {"dead": {"up": False, "holding": [build_id]}}
    assert reaper.sweep_queued() == []
    clock.now += reaper_module.MESSAGE_MISSING_SECONDS - 1
    assert reaper.sweep_queued() == []  # a live node may just have received it
    clock.now += 2
    assert reaper.sweep_queued() == [build_id]
    assert queue.sent == [build_id]
    assert "queued again" in live.lines[-1]
    # Another node's reaper, seeing the same, leaves it to the first.
    other = LostBuildReaper(ledger, live, queue, clock=clock)
    other.sweep_queued()
    clock.now += 60
    assert other.sweep_queued() == [] and queue.sent == [build_id]


def test_a_message_that_turns_up_again_is_not_sent(tmp_path, clock):
    ledger, live, queue, reaper = setup(tmp_path, clock)
    build_id = queued_build(ledger)
    assert reaper.sweep_queued() == []
    queue.in_lists = [build_id]
    clock.now += 60
    assert reaper.sweep_queued() == []
    queue.in_lists = []
    clock.now += 1
    assert reaper.sweep_queued() == []  # missing again, but only just
    assert queue.sent == []


def test_a_build_that_started_is_no_longer_swept_as_queued(tmp_path, clock):
    ledger, live, queue, reaper = setup(tmp_path, clock)
    build_id = queued_build(ledger)
    reaper.sweep_queued()
    ledger.claim(build_id, worker="a")
    live.beating.add(build_id)
    clock.now += 60
    assert reaper.sweep_queued() == [] and queue.sent == []
