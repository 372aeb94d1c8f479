"""The reaper's decisions, on a real SQLite ledger with small fakes for Redis."""

import pytest

from farm.buildspec import GitSource, parse_spec
from farm.errors import AttemptLost
from farm.ledger import BuildLedger
from farm.models import BuildState
from workers.reaper import LostBuildReaper

SOURCE = GitSource(url="https://git.example.org/app.git", ref="main")


class FakeLive:
    def __init__(self) -> None:
        self.beating: set[str] = set()
        self.lines: list[str] = []

    cancelled: set[str] = set()

    def cancel_requested(self, build_id: str) -> bool:
        return build_id in self.cancelled

    def has_heartbeat(self, build_id: str) -> bool:
        return build_id in self.beating

    def read_log(self, build_id: str) -> list[str]:
        return ["step 1"]

    def append_log(self, build_id: str, lines: list[str]) -> None:
        self.lines += lines


class FakeQueue:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def enqueue(self, build_id: str, *, queue: str, priority: str = "normal") -> None:
        self.sent.append(build_id)


def setup(tmp_path):
    ledger = BuildLedger.from_url(f"sqlite:///{tmp_path}/farm.db")
    ledger.create_tables()
    live, queue = FakeLive(), FakeQueue()
    return ledger, live, queue, LostBuildReaper(ledger, live, queue, max_attempts=2)


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
