"""BuildService on a real SQLite ledger, with a small fake for the Redis queue."""

import hashlib
import io
import tarfile
from contextlib import contextmanager

import pytest

from farm.builds import BuildService, describe_build, summarize_stages
from farm.destinations import DestinationPolicy
from farm.errors import InvalidRequest, NotFound, StoreUnavailable
from farm.ledger import BuildLedger
from farm.models import BuildState


class DownQueue:
    def enqueue(self, build_id: str, *, queue: str, priority: str = "normal") -> None:
        raise StoreUnavailable("Redis could not be reached.")


class SentQueue:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def enqueue(self, build_id: str, *, queue: str, priority: str = "normal") -> None:
        self.sent.append(build_id)


class NoLocks:
    @contextmanager
    def locked(self, name: str, *, seconds: int):
        yield


def make_service(tmp_path, queue) -> BuildService:
    ledger = BuildLedger.from_url(f"sqlite:///{tmp_path}/farm.db")
    ledger.create_tables()
    return BuildService(
        ledger,
        queue,
        live=NoLocks(),
        queues=["builds"],
        max_source_bytes=1000,
        # Listed, so that nothing is looked up.
        destinations=DestinationPolicy(allowed_hosts=("git.example.org",)),
    )


def test_a_build_the_queue_refused_leaves_no_record(tmp_path):
    service = make_service(tmp_path, DownQueue())
    with pytest.raises(StoreUnavailable):
        service.submit_git({}, url="https://git.example.org/a.git", ref="main")
    assert service.ledger.recent() == []


def test_an_upload_the_queue_refused_leaves_no_archive(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(b"FROM scratch\n")
        tar.addfile(info, io.BytesIO(b"FROM scratch\n"))
    content = buffer.getvalue()
    service = make_service(tmp_path, DownQueue())
    with pytest.raises(StoreUnavailable):
        service.submit_archive({}, content=content)
    assert service.ledger.recent() == []
    with pytest.raises(NotFound):
        service.ledger.load_archive(hashlib.sha256(content).hexdigest())
    # An archive another build still uses stays.
    kept = make_service(tmp_path, SentQueue())
    build = kept.submit_archive({}, content=content).build
    assert not kept.ledger.forget_archive_if_unused(build.archive_sha256)


def test_submitted_build_is_recorded_then_enqueued(tmp_path):
    queue = SentQueue()
    service = make_service(tmp_path, queue)
    build = service.submit_git(
        {"tags": ["a:1"]}, url="https://git.example.org/a.git", ref="v1"
    ).build
    assert queue.sent == [build.id]
    assert service.ledger.get(build.id).tags == ["a:1"]


def test_archive_over_the_unpacked_limit_is_refused_before_recording(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("zeros")
        info.size = 5000
        tar.addfile(info, io.BytesIO(b"\0" * 5000))
    service = make_service(tmp_path, SentQueue())
    with pytest.raises(InvalidRequest, match="more than the 1000 bytes"):
        service.submit_archive({}, content=buffer.getvalue())
    assert service.ledger.recent() == []


def test_described_build_hides_url_credentials(tmp_path):
    service = make_service(tmp_path, SentQueue())
    build = service.submit_git(
        {}, url="https://bob:s3cret@git.example.org/a.git", ref="main"
    ).build
    described = describe_build(build)
    assert "s3cret" not in str(described)
    assert described["source"]["url"] == "https://***@git.example.org/a.git"


def test_identical_inputs_join_the_active_build_and_reuse_a_finished_one(tmp_path):
    queue = SentQueue()
    service = make_service(tmp_path, queue)
    service.resolve_ref = lambda url, ref: "a" * 40
    url = "https://git.example.org/a.git"
    first = service.submit_git({"tags": ["x:1"]}, url=url, ref="main")
    again = service.submit_git({"tags": ["x:1"]}, url=url, ref="main")
    other = service.submit_git({"build_args": {"V": "2"}}, url=url, ref="main")
    retagged = service.submit_git({"tags": ["x:2"]}, url=url, ref="main")
    urgent = service.submit_git(
        {"tags": ["x:1"], "priority": "urgent"}, url=url, ref="main"
    )
    outcomes = [s.outcome for s in (first, again, other, retagged, urgent)]
    assert outcomes == ["created", "joined", "created", "created", "created"]
    assert again.build.id == first.build.id and len(queue.sent) == 4
    assert first.build.git_commit == "a" * 40

    service.ledger.claim(first.build.id, worker="w")
    service.ledger.finish(first.build.id, BuildState.SUCCEEDED)
    reused = service.submit_git({"tags": ["x:1"]}, url=url, ref="main", reuse=True)
    fresh = service.submit_git({"tags": ["x:1"]}, url=url, ref="main")
    assert reused.outcome == "reused" and reused.build.id == first.build.id
    # Without reuse the request joins the urgent build still queued.
    assert fresh.outcome == "joined" and fresh.build.id == urgent.build.id


class WaitingQueue(SentQueue):
    def ahead(self, queue: str, build_id: str) -> list[str] | None:
        return [] if build_id in self.sent else None


class Nodes(NoLocks):
    def __init__(self, engines: dict[str, str]) -> None:
        self.engines = engines

    def workers(self) -> dict[str, dict]:
        return {
            name: {"queues": ["builds"], "slots": 1, "engine": engine, "up": True}
            for name, engine in self.engines.items()
        }


@pytest.mark.parametrize(
    ("engines", "said"),
    [
        ({"a": "Cannot connect", "b": "timed out"}, "every node serving 'builds' has"),
        ({"a": "Cannot connect", "b": "ok"}, "a node is about to take it"),
        ({"a": "ok"}, "a node is about to take it"),
        ({}, "No live node serves queue 'builds'"),
    ],
)
def test_a_queued_build_says_when_every_engine_serving_it_is_down(
    tmp_path, engines, said
):
    service = make_service(tmp_path, WaitingQueue())
    service.live = Nodes(engines)
    build = service.submit_git({}, url="https://git.example.org/a.git", ref="main")
    waiting = service.waiting(build.build)
    assert said in waiting["reason"]
    if said.startswith("every"):
        assert waiting["reason"] == (
            "It is next; every node serving 'builds' has its engine down; it waits "
            "for one to come back."
        )


def test_a_busy_node_is_weighed_by_its_own_builds_not_a_draining_one_s(tmp_path):
    service = make_service(tmp_path, WaitingQueue())
    service.live = Nodes({"a": "ok"})  # "d" is draining: not among the workers
    for n, worker in enumerate(("a", "d", "d")):
        url = f"https://git.example.org/running-{n}.git"
        running = service.submit_git({}, url=url, ref="main")
        service.ledger.claim(running.build.id, worker=worker)
    build = service.submit_git({}, url="https://git.example.org/a.git", ref="main")
    assert service.waiting(build.build)["reason"] == (
        "It is next; the 1 node serving 'builds' is busy (1 of 1 build slots in use)."
    )


def test_stages_summarise_their_steps():
    steps = [
        {"stage": None, "internal": True, "instruction": None},
        {"stage": "build", "instruction": "FROM x", "cached": False},
        {
            "stage": "build",
            "instruction": "RUN a",
            "cached": True,
            "duration_seconds": 0.5,
        },
        {
            "stage": "build",
            "instruction": "RUN b",
            "cached": False,
            "duration_seconds": 1.0,
        },
        {
            "stage": "stage-1",
            "instruction": "COPY --from=build /a /a",
            "cached": True,
            "duration_seconds": None,
        },
    ]
    assert summarize_stages(steps) == [
        {"stage": "build", "steps": 2, "cached": 1, "duration_seconds": 1.5},
        {"stage": "stage-1", "steps": 1, "cached": 1, "duration_seconds": 0.0},
    ]
