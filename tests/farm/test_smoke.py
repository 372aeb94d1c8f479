import threading
from datetime import timedelta

import pytest

from farm.buildspec import GitSource, parse_spec
from farm.errors import InvalidRequest
from farm.ledger import BuildLedger
from farm.models import BuildGroup, BuildState, utcnow
from farm.smoke import GroupSmoke, SmokeState, parse_smoke

SOURCE = GitSource(url="https://git.example.org/app.git", ref="main")


class RecordingQueue:
    """Stands in for the Celery queue: remembers what was sent."""

    def __init__(self):
        self.sent = []
        self.lock = threading.Lock()

    def enqueue_smoke(self, group_id, *, queue):
        with self.lock:
            self.sent.append((group_id, queue))


def make_group(tmp_path, states):
    ledger = BuildLedger.from_url(f"sqlite:///{tmp_path}/farm.db")
    ledger.create_tables()
    members = []
    for index, state in enumerate(states):
        build = ledger.create(parse_spec({}, SOURCE), queue="builds")
        if state != "queued":
            ledger.claim(build.id, worker="w")
        if BuildState(state).final:
            ledger.finish(build.id, BuildState(state))
        members.append({"name": f"i{index}", "build_id": build.id})
    smoke = parse_smoke(True, [{"name": m["name"]} for m in members])
    group = BuildGroup(
        id="g1", members=members, smoke=smoke, smoke_state=SmokeState.PENDING
    )
    ledger.save_group(group)
    return ledger, group


def test_defaults_start_every_image():
    smoke = parse_smoke(True, [{"name": "a"}, {"name": "b", "smoke": {"port": 80}}])
    assert smoke["seconds"] == 10 and smoke["timeout_seconds"] == 60
    started = {"start": True, "port": None, "path": None, "env": {}}
    assert smoke["images"]["a"] == started
    assert smoke["images"]["b"]["port"] == 80


def test_no_smoke_test_unless_asked():
    assert parse_smoke(None, [{"name": "a"}]) is None
    assert parse_smoke(False, [{"name": "a"}]) is None


@pytest.mark.parametrize(
    "value, image, field",
    [
        ({"seconds": 20, "timeout_seconds": 10}, {}, "smoke_test"),
        ({"wait": 3}, {}, "wait"),
        (True, {"smoke": {"env": {"1BAD": "x"}}}, "smoke"),
        (True, {"smoke": {"port": True}}, "smoke"),
        (True, {"smoke": {"start": "no"}}, "smoke"),
        (True, {"smoke": {"path": "healthz"}}, "smoke"),
    ],
)
def test_bad_settings_name_their_field(value, image, field):
    with pytest.raises(InvalidRequest) as raised:
        parse_smoke(value, [{"name": "a", **image}])
    assert raised.value.field == field


def test_waits_while_a_build_runs(tmp_path):
    ledger, group = make_group(tmp_path, ["succeeded", "running"])
    queue = RecordingQueue()
    GroupSmoke(ledger, queue).advance(group)
    assert queue.sent == []
    assert ledger.get_group("g1").smoke_state == SmokeState.PENDING


def test_is_queued_once_however_many_callers_race(tmp_path):
    ledger, group = make_group(tmp_path, ["succeeded", "succeeded"])
    queue = RecordingQueue()
    smoke = GroupSmoke(ledger, queue)
    callers = [
        threading.Thread(target=smoke.advance, args=(ledger.get_group("g1"),))
        for _ in range(8)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert queue.sent == [("g1", "builds")]
    assert ledger.get_group("g1").smoke_state == SmokeState.QUEUED


def test_is_skipped_when_a_build_did_not_succeed(tmp_path):
    ledger, group = make_group(tmp_path, ["succeeded", "cancelled"])
    queue = RecordingQueue()
    GroupSmoke(ledger, queue).advance_groups_of(group.members[1]["build_id"])
    stored = ledger.get_group("g1")
    assert queue.sent == []
    assert (stored.smoke_state, stored.smoke_result) == (
        SmokeState.SKIPPED,
        {"reason": "Not built: i1."},
    )


def test_a_test_whose_node_went_silent_runs_again_then_gives_up(tmp_path):
    ledger, group = make_group(tmp_path, ["succeeded"])
    queue = RecordingQueue()
    smoke = GroupSmoke(ledger, queue)
    ledger.move_smoke_state(
        "g1", {SmokeState.PENDING}, SmokeState.RUNNING, result={"attempt": 1}
    )
    smoke.sweep()
    assert ledger.get_group("g1").smoke_state == SmokeState.RUNNING  # still beating

    smoke.sweep(now=utcnow() + timedelta(minutes=2))
    assert ledger.get_group("g1").smoke_state == SmokeState.QUEUED
    assert queue.sent == [("g1", "builds")]

    ledger.move_smoke_state(
        "g1", {SmokeState.QUEUED}, SmokeState.RUNNING, result={"attempt": 2}
    )
    smoke.sweep(now=utcnow() + timedelta(minutes=2))
    stored = ledger.get_group("g1")
    assert stored.smoke_state == SmokeState.ERROR
    assert stored.smoke_result["error"]["code"] == "smoke_lost"
    assert len(queue.sent) == 1
