"""A build's task delivered again while it runs (as Redis does once its visibility
timeout passes), or handed to a second node by mistake, still runs once at a time
and pushes once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from farm.config import Settings
from farm.ledger import BuildLedger
from farm.queue import BuildQueue, make_celery
from tests.test_metrics import submit

pytestmark = pytest.mark.integration


@pytest.fixture
def ledger_and_queue(farm) -> Iterator[tuple[BuildLedger, BuildQueue]]:
    env = farm.stack.env()
    ledger = BuildLedger.from_url(env["FARM_DATABASE_URL"])
    client = redis.Redis.from_url(env["FARM_REDIS_URL"])
    yield (
        ledger,
        BuildQueue(make_celery(Settings(redis_url=env["FARM_REDIS_URL"])), client),
    )
    client.close()
    ledger.engine.dispose()


def running_its_step(farm, build_id: str, marker: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        build = farm.http.get(farm.api(f"/builds/{build_id}"), timeout=10).json()
        lines = farm.http.get(farm.api(f"/builds/{build_id}/log"), timeout=10).json()
        if build["state"] == "running" and any(
            f"{marker} started" in line for line in lines["lines"]
        ):
            return build
        time.sleep(0.2)
    raise AssertionError(f"build {build_id} did not reach its RUN step")


def log_of(farm, build_id: str) -> list[str]:
    return farm.http.get(farm.api(f"/builds/{build_id}/log"), timeout=10).json()[
        "lines"
    ]


def slow(tiny_image: str, marker: str) -> str:
    return f"FROM {tiny_image}\nRUN echo {marker} started && sleep 6 && echo done\n"


def test_a_task_delivered_again_while_its_build_runs_is_skipped(
    farm, tiny_image, tmp_path, ledger_and_queue
):
    _, queue = ledger_and_queue
    marker = uuid.uuid4().hex
    build_id = submit(farm, tmp_path, slow(tiny_image, marker))
    running_its_step(farm, build_id, marker)
    queue.enqueue(build_id, queue="builds")  # the same task, once more

    build = farm.wait_for(build_id)
    assert build["state"] == "succeeded" and build["attempts"] == 1
    lines = log_of(farm, build_id)
    assert sum(line.startswith("Attempt ") for line in lines) == 1
    assert sum("Pushed " in line for line in lines) == 1


def test_a_build_handed_to_a_second_node_while_alive_is_pushed_once(
    farm, tiny_image, tmp_path, ledger_and_queue
):
    """As if the reaper took a live worker for dead: the first attempt finds it
    no longer holds the build before it pushes, and drops its result."""
    ledger, queue = ledger_and_queue
    marker = uuid.uuid4().hex
    build_id = submit(farm, tmp_path, slow(tiny_image, marker))
    first = running_its_step(farm, build_id, marker)
    assert ledger.requeue(build_id, attempt=first["attempts"])
    queue.enqueue(build_id, queue="builds")

    build = farm.wait_for(build_id)
    assert build["state"] == "succeeded" and build["attempts"] == 2
    assert sum("Pushed " in line for line in log_of(farm, build_id)) == 1

    # The first attempt goes on until its push, then stops short of it.
    worker_log = next(p for p in farm.stack.processes if p.name == "worker-node-a")
    dropped = f"build={build_id}: result dropped: Build {build_id} attempt 1 was "
    deadline = time.monotonic() + 60
    while dropped not in worker_log.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the first attempt did not stop"
        time.sleep(0.5)
    text = worker_log.log_path.read_text(errors="replace")
    assert dropped + "handed to another node before its push." in text
