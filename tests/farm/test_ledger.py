from farm.buildspec import GitSource, parse_spec
from farm.ledger import BuildLedger
from farm.models import BuildState

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
    counts, total, _ = ledger.histogram(
        "duration_seconds", [0.0, 60.0], states=["succeeded"]
    )
    assert total == 3 and counts[-1] == 3 and counts[0] <= counts[1]


def test_archives_are_stored_once_by_content(tmp_path):
    ledger = make_ledger(tmp_path)
    first = ledger.store_archive(b"abc")
    again = ledger.store_archive(b"abc")
    assert first.sha256 == again.sha256
    assert ledger.load_archive(first.sha256) == b"abc"
