from datetime import timedelta

from sqlalchemy import text, update

from farm.buildspec import GitSource, parse_spec
from farm.ledger import BuildLedger, as_utc
from farm.models import Build, BuildStage, BuildState

SOURCE = GitSource(url="https://git.example.org/app.git", ref="main")


def make_ledger(tmp_path) -> BuildLedger:
    ledger = BuildLedger.from_url(f"sqlite:///{tmp_path}/farm.db")
    ledger.create_tables()
    return ledger


def test_a_build_is_claimed_once(tmp_path):
    ledger = make_ledger(tmp_path)
    build = ledger.create(parse_spec({}, SOURCE), queue="builds")
    assert ledger.claim(build.id, worker="a").state == BuildState.RUNNING
    assert ledger.claim(build.id, worker="b") is None
    assert ledger.get(build.id).worker == "a"


def test_list_is_newest_first_and_filters_by_state(tmp_path):
    ledger = make_ledger(tmp_path)
    first = ledger.create(parse_spec({}, SOURCE), queue="builds")
    second = ledger.create(parse_spec({}, SOURCE), queue="builds")
    ledger.claim(first.id, worker="w")
    assert [b.id for b in ledger.recent()] == [second.id, first.id]
    assert [b.id for b in ledger.recent(states=["running"])] == [first.id]


def test_finish_keeps_log_and_counts_cached_steps(tmp_path):
    ledger = make_ledger(tmp_path)
    build = ledger.create(parse_spec({}, SOURCE), queue="builds")
    ledger.claim(build.id, worker="w")
    ledger.record_steps(
        build.id,
        [
            {"name": "[internal] load", "internal": True, "cached": False},
            {"name": "[b 1/3] FROM x", "instruction": "FROM x", "internal": False},
            {"name": "RUN a", "internal": False, "cached": True},
            {"name": "RUN b", "internal": False, "cached": False},
        ],
    )
    done = ledger.finish(build.id, BuildState.SUCCEEDED, log_text="line\n")
    assert done.duration_seconds is not None and done.duration_seconds >= 0
    stored = ledger.get(build.id)
    assert (stored.steps_cached, stored.steps_total) == (1, 2)
    assert ledger.log_text(build.id) == "line\n"


def test_only_a_queued_build_is_cancelled_in_place(tmp_path):
    ledger = make_ledger(tmp_path)
    queued = ledger.create(parse_spec({}, SOURCE), queue="builds")
    running = ledger.create(parse_spec({}, SOURCE), queue="builds")
    ledger.claim(running.id, worker="w")
    assert ledger.cancel_if_queued(queued.id)
    assert not ledger.cancel_if_queued(running.id)
    assert ledger.get(queued.id).state == BuildState.CANCELLED


def test_histogram_counts_are_cumulative(tmp_path):
    ledger = make_ledger(tmp_path)
    for _ in range(3):
        build = ledger.create(parse_spec({}, SOURCE), queue="builds")
        ledger.claim(build.id, worker="w")
        ledger.finish(build.id, BuildState.SUCCEEDED)
    found = ledger.histogram("duration_seconds", [0.0, 60.0], states=["succeeded"])
    counts, total, _ = found[""]
    assert total == 3 and counts[-1] == 3 and counts[0] <= counts[1]


def ended(ledger, state, error=None, *, queue="builds", **values):
    build = ledger.create(parse_spec({}, SOURCE), queue=queue)
    ledger.claim(build.id, worker="w")
    return ledger.finish(build.id, state, error=error, **values)


def test_ended_builds_are_counted_by_state_and_failure_kind(tmp_path):
    ledger = make_ledger(tmp_path)
    ended(ledger, BuildState.SUCCEEDED)
    ended(ledger, BuildState.FAILED, {"code": "build_failed"})
    ended(ledger, BuildState.FAILED, {"code": "build_failed"})
    ended(ledger, BuildState.FAILED, {"code": "source_failed"})
    ended(ledger, BuildState.FAILED, {"code": "timed_out"})
    ended(ledger, BuildState.FAILED, {"code": "worker_lost"})
    ended(ledger, BuildState.FAILED, {"code": "push_failed"})
    ended(ledger, BuildState.CANCELLED, {"code": "cancelled"})
    queued = ledger.create(parse_spec({}, SOURCE), queue="builds")
    assert ledger.cancel_if_queued(queued.id)

    assert ledger.count_ended() == {
        ("succeeded", "none"): 1,
        ("failed", "dockerfile"): 2,
        ("failed", "source"): 1,
        ("failed", "timeout"): 1,
        ("failed", "infrastructure"): 2,
        ("cancelled", "cancelled"): 2,
    }


def test_waiting_builds_are_grouped_by_queue_and_priority_with_the_oldest(tmp_path):
    ledger = make_ledger(tmp_path)
    first = ledger.create(parse_spec({}, SOURCE), queue="builds")
    ledger.create(parse_spec({}, SOURCE), queue="builds", priority="urgent")
    ledger.create(parse_spec({}, SOURCE), queue="builds")
    ledger.create(parse_spec({}, SOURCE), queue="arm64")
    started = ledger.create(parse_spec({}, SOURCE), queue="arm64")
    ledger.claim(started.id, worker="w")

    waiting = {(q, p): (n, oldest) for q, p, n, oldest in ledger.waiting()}
    assert {key: n for key, (n, _) in waiting.items()} == {
        ("builds", "normal"): 2,
        ("builds", "urgent"): 1,
        ("arm64", "normal"): 1,
    }
    assert waiting[("builds", "normal")][1] == as_utc(first.created_at)
    assert ledger.count_running_by("queue") == {"arm64": 1}
    assert ledger.count_running_by("worker") == {"w": 1}


def test_steps_and_stage_times_add_up_over_ended_builds(tmp_path):
    ledger = make_ledger(tmp_path)
    started = "2026-01-01T00:00:00+00:00"
    for cached in (0, 2):
        build = ended(ledger, BuildState.SUCCEEDED)
        ledger.record_steps(
            build.id,
            [
                {
                    "name": name,
                    "internal": False,
                    "cached": cached > n,
                    "started_at": started,
                }
                for n, name in enumerate(["RUN a", "RUN b"])
            ],
        )
        ledger.record_stages(
            build.id,
            [
                BuildStage(stage="build", role="builder", duration_seconds=3.0),
                BuildStage(stage="app", role="final", duration_seconds=0.5),
            ],
        )
    # A failed build's steps after the one that failed never start: not "run".
    failed = ended(ledger, BuildState.FAILED, {"code": "build_failed"})
    ledger.record_steps(
        failed.id,
        [
            {"name": "RUN a", "internal": False, "started_at": started},
            {"name": "RUN b", "internal": False},
            {"name": "RUN c", "internal": False},
        ],
    )
    assert ledger.step_totals() == (3, 2)

    found = ledger.histogram(
        "stage_seconds", [1.0, 5.0], states=["succeeded"], by="role", units=1000
    )
    assert found == {  # sums in milliseconds
        "builder": ([0, 2], 2, 6000),
        "final": ([2, 2], 2, 1000),
    }


def test_image_sizes_and_push_times_are_kept_for_succeeded_builds(tmp_path):
    ledger = make_ledger(tmp_path)
    ended(ledger, BuildState.SUCCEEDED, image_size_bytes=3000, push_seconds=0.4)
    ended(ledger, BuildState.FAILED, {"code": "build_failed"})
    sizes = ledger.histogram("image_size_bytes", [1000, 4000], states=["succeeded"])
    pushes = ledger.histogram("push_seconds", [1.0], states=["succeeded"], units=1000)
    assert sizes == {"": ([0, 1], 1, 3000)}
    assert pushes == {"": ([1], 1, 400)}


def test_archives_are_stored_once_by_content(tmp_path):
    ledger = make_ledger(tmp_path)
    first = ledger.store_archive(b"abc")
    again = ledger.store_archive(b"abc")
    assert first.sha256 == again.sha256
    assert ledger.load_archive(first.sha256) == b"abc"


def test_builds_that_ended_before_failure_kinds_get_theirs(tmp_path):
    ledger = make_ledger(tmp_path)
    good = ended(ledger, BuildState.SUCCEEDED)
    bad = ended(ledger, BuildState.FAILED, {"code": "source_failed"})
    with ledger.engine.begin() as connection:  # as an older farm left them
        connection.execute(text("UPDATE builds SET failure = NULL"))
    ledger.create_tables()
    assert (ledger.get(good.id).failure, ledger.get(bad.id).failure) == (
        "none",
        "source",
    )


def test_an_attempt_handed_on_records_no_steps_or_stage_times(tmp_path):
    ledger = make_ledger(tmp_path)
    build = ledger.create(parse_spec({}, SOURCE), queue="builds")
    ledger.claim(build.id, worker="a")
    assert ledger.requeue(build.id, attempt=1)
    ledger.claim(build.id, worker="b")
    cached = [{"name": "RUN a", "internal": False, "cached": True}]
    ledger.record_steps(build.id, cached, attempt=2)
    ledger.record_stages(
        build.id,
        [BuildStage(stage="app", role="final", duration_seconds=1.0)],
        attempt=2,
    )
    ledger.finish(build.id, BuildState.SUCCEEDED, attempt=2)

    # The first attempt wakes up late and reports what it had seen.
    ran = [{"name": "RUN a", "internal": False, "started_at": "x", "cached": False}]
    ledger.record_steps(build.id, ran, attempt=1)
    ledger.record_stages(
        build.id,
        [BuildStage(stage="app", role="final", duration_seconds=30.0)],
        attempt=1,
    )
    kept = ledger.get(build.id)
    assert (kept.steps, kept.steps_cached, kept.steps_run) == (cached, 1, 0)
    assert ledger.step_totals() == (0, 1)
    stages = ledger.histogram("stage_seconds", [5.0], states=["succeeded"], by="role")
    assert stages == {"final": ([1], 1, 1)}


def test_a_build_handed_back_waits_from_its_hand_back(tmp_path):
    ledger = make_ledger(tmp_path)
    build = ledger.create(parse_spec({}, SOURCE), queue="builds")
    hour_ago = as_utc(ledger.get(build.id).created_at) - timedelta(hours=1)
    with ledger.engine.begin() as connection:
        connection.execute(
            update(Build).where(Build.id == build.id).values(created_at=hour_ago)
        )
    ((_, _, _, since),) = ledger.waiting()
    assert as_utc(since) == hour_ago  # waiting since it was submitted
    ledger.claim(build.id, worker="a")
    assert ledger.requeue(build.id, attempt=1)
    ((queue, _, count, since),) = ledger.waiting()
    assert (queue, count) == ("builds", 1)
    assert as_utc(since) > hour_ago + timedelta(minutes=59)  # since its hand-back
