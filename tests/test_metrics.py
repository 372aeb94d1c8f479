"""The farm's /metrics read after real builds, against the real web app, worker,
Redis, PostgreSQL and engine."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from kombu import Connection, Exchange, Queue
from prometheus_client.parser import text_string_to_metric_families

from farm.config import Settings
from farm.queue import make_celery
from tests.test_end_to_end import archive_of

pytestmark = pytest.mark.integration


class Scrape:
    """One scrape of /metrics: ``scrape.value("farm_x_total", queue="a")``."""

    def __init__(self, web_url: str) -> None:
        text = requests.get(f"{web_url}/metrics", timeout=10).text
        self.samples = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        found = [
            value
            for sample, their, value in self.samples
            if sample == name and labels.items() <= their.items()
        ]
        assert found, f"no sample {name} {labels}"
        return sum(found)

    def has(self, name: str, **labels: str) -> bool:
        return any(
            sample == name and labels.items() <= their.items()
            for sample, their, _ in self.samples
        )


def submit(farm, folder: Path, dockerfile: str, **fields: str) -> str:
    (folder / "Dockerfile").write_text(dockerfile)
    (folder / "request").write_text(repr(fields))  # a new build for new fields
    response = farm.http.post(
        farm.api("/builds"),
        files={"archive": ("a.tar.gz", archive_of(folder))},
        data=fields,
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_builds_stages_cache_images_and_nodes_are_reported(farm, tiny_image, tmp_path):
    before = Scrape(farm.web_url)
    word = uuid.uuid4().hex
    two_stages = (
        f"FROM {tiny_image} AS build\nRUN echo {word} > /out\n"
        f"FROM {tiny_image}\nCOPY --from=build /out /out\n"
    )
    first = farm.wait_for(submit(farm, tmp_path, two_stages))
    again = farm.wait_for(submit(farm, tmp_path, two_stages))
    broken = farm.wait_for(submit(farm, tmp_path, f"FROM {tiny_image}\nRUN exit 3\n"))
    assert (first["state"], again["state"], broken["state"]) == (
        "succeeded",
        "succeeded",
        "failed",
    )
    assert again["steps_cached"] == again["steps_total"] == 2
    after = Scrape(farm.web_url)
    deadline = time.monotonic() + 30
    # Measured each minute; other tests' nodes may have figures already.
    while not after.has("farm_node_build_cache_bytes", node="node-a"):
        assert time.monotonic() < deadline, "no disk figures from node-a"
        time.sleep(1)
        after = Scrape(farm.web_url)

    def grew(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert grew("farm_builds_total", state="succeeded", failure="none") >= 2
    assert grew("farm_builds_total", state="failed", failure="dockerfile") >= 1
    assert grew("farm_build_steps_total", result="cached") >= 2
    assert grew("farm_build_steps_total", result="run") >= 2
    for role in ("builder", "final"):
        assert grew("farm_stage_duration_seconds_count", role=role) >= 2
    assert grew("farm_image_size_bytes_count") >= 2
    assert grew("farm_image_size_bytes_sum") > 0
    assert grew("farm_image_pushed_bytes_count") >= 2
    assert 0 < grew("farm_image_pushed_bytes_sum") < grew("farm_image_size_bytes_sum")
    assert grew("farm_push_duration_seconds_count") >= 2
    assert grew("farm_build_duration_seconds_count", state="failed") >= 1
    assert grew("farm_build_wait_seconds_count", queue="builds") >= 3

    node = {"node": "node-a"}
    assert after.value("farm_node_up", **node) == 1
    assert after.value("farm_node_engine_up", **node) == 1
    assert after.value("farm_node_draining", **node) == 0
    assert after.value("farm_node_build_slots", **node) == 2
    assert after.value("farm_node_build_cache_bytes", **node) > 0
    free = after.value("farm_node_disk_free_bytes", **node)
    assert 0 < free <= after.value("farm_node_disk_size_bytes", **node)
    assert after.value("farm_queue_capacity_builds", queue="builds") >= 2


def test_queue_depth_counts_builds_a_worker_reserved_but_did_not_start(
    farm, tiny_image, tmp_path
):
    """'idle' is served by no node: its builds wait. Taking a message from Redis
    as a Celery worker does (unacknowledged) leaves the build counted as waiting."""
    before = Scrape(farm.web_url)
    urgent = submit(
        farm, tmp_path, f"FROM {tiny_image}\n", queue="idle", priority="urgent"
    )
    normal = submit(farm, tmp_path, f"FROM {tiny_image}\n", queue="idle")
    try:
        submitted = Scrape(farm.web_url)
        for priority in ("urgent", "normal"):
            labels = {"queue": "idle", "priority": priority}
            assert submitted.value("farm_queue_depth", **labels) == (
                before.value("farm_queue_depth", **labels) + 1
            )
            assert submitted.value("farm_queue_broker_messages", **labels) == (
                before.value("farm_queue_broker_messages", **labels) + 1
            )
        assert submitted.value("farm_queue_oldest_wait_seconds", queue="idle") > 0
        assert submitted.value("farm_queue_demand_builds", queue="idle") >= 2
        assert submitted.value("farm_queue_capacity_builds", queue="idle") == 0

        redis_url = farm.stack.env()["FARM_REDIS_URL"]
        celery = make_celery(Settings(redis_url=redis_url))
        with Connection(
            redis_url, transport_options=celery.conf.broker_transport_options
        ) as conn:
            exchange = Exchange("idle", type="direct")
            queue = Queue("idle", exchange, routing_key="idle")
            with conn.SimpleQueue(queue) as simple:
                reserved = simple.get(timeout=5)  # unacknowledged, like a worker's
                try:
                    held = Scrape(farm.web_url)
                    assert sum(
                        held.value("farm_queue_depth", queue="idle", priority=p)
                        for p in ("urgent", "normal")
                    ) == sum(
                        submitted.value("farm_queue_depth", queue="idle", priority=p)
                        for p in ("urgent", "normal")
                    )
                    assert (
                        sum(
                            held.value(
                                "farm_queue_broker_messages", queue="idle", priority=p
                            )
                            for p in ("urgent", "normal")
                        )
                        == sum(
                            submitted.value(
                                "farm_queue_broker_messages", queue="idle", priority=p
                            )
                            for p in ("urgent", "normal")
                        )
                        - 1
                    )
                finally:
                    reserved.requeue()
    finally:
        for build_id in (urgent, normal):
            farm.http.post(farm.api(f"/builds/{build_id}/cancel"), timeout=10)


def test_a_node_reports_the_builds_it_runs(farm, tiny_image, tmp_path):
    node = {"node": "node-a"}
    build_id = submit(
        farm, tmp_path, f"FROM {tiny_image}\nRUN sleep 15 && echo {uuid.uuid4()}\n"
    )
    try:
        deadline = time.monotonic() + 40  # a beat comes every 10 s
        while Scrape(farm.web_url).value("farm_node_builds_running", **node) < 1:
            assert time.monotonic() < deadline, "node-a never said it runs the build"
            time.sleep(1)
        assert (
            farm.http.get(farm.api(f"/builds/{build_id}"), timeout=10).json()["state"]
            == "running"
        )
    finally:
        assert farm.wait_for(build_id)["state"] == "succeeded"
    deadline = time.monotonic() + 30
    while Scrape(farm.web_url).value("farm_node_builds_running", **node) != 0:
        assert time.monotonic() < deadline, "node-a still says it runs the build"
        time.sleep(1)


def test_celery_task_events_are_sent_for_flower(farm, tiny_image, tmp_path):
    redis_url = farm.stack.env()["FARM_REDIS_URL"]
    celery = make_celery(Settings(redis_url=redis_url))
    seen: list[dict] = []
    ready = threading.Event()
    with celery.connection_for_read() as conn:
        receiver = celery.events.Receiver(conn, handlers={"*": seen.append})

        def capture() -> None:
            ready.set()
            receiver.capture(limit=None, timeout=None, wakeup=False)

        thread = threading.Thread(target=capture, daemon=True)
        thread.start()
        ready.wait(5)
        time.sleep(1)  # the receiver's queue is bound once it consumes
        build_id = submit(farm, tmp_path, f"FROM {tiny_image}\nRUN echo events\n")
        broken_id = submit(farm, tmp_path, f"FROM {tiny_image}\nRUN exit 7\n")
        assert farm.wait_for(build_id)["state"] == "succeeded"
        assert farm.wait_for(broken_id)["state"] == "failed"
        # Both slots busy, a third build is cancelled while it waits: its task
        # finds it cancelled, and ends failed too.
        sleepers = [
            submit(farm, tmp_path, f"FROM {tiny_image}\nRUN sleep 6 # {n}\n")
            for n in range(2)
        ]
        started = time.monotonic() + 30
        while any(
            farm.http.get(farm.api(f"/builds/{one}"), timeout=10).json()["state"]
            != "running"
            for one in sleepers
        ):
            assert time.monotonic() < started, "the sleepers never both ran"
            time.sleep(0.3)
        waiting_id = submit(farm, tmp_path, f"FROM {tiny_image}\nRUN echo late\n")
        farm.http.post(farm.api(f"/builds/{waiting_id}/cancel"), timeout=10)
        assert farm.wait_for(waiting_id)["state"] == "cancelled"
        for one in sleepers:
            assert farm.wait_for(one)["state"] == "succeeded"

        def events_of(some_id: str) -> tuple[set[str], list[dict]]:
            mine = [e for e in seen if some_id in str(e.get("args", ""))]
            tasks = {e.get("uuid") for e in mine}
            same_task = [e for e in seen if e.get("uuid") in tasks]
            return {e["type"] for e in mine}, same_task

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            kinds, ended = events_of(build_id)
            _, broken = events_of(broken_id)
            _, cancelled = events_of(waiting_id)
            finals = {e["type"] for e in ended} | {e["type"] for e in broken}
            if {"task-succeeded", "task-failed"} <= finals and "task-failed" in {
                e["type"] for e in cancelled
            }:
                break
            time.sleep(0.5)
        receiver.should_stop = True
        thread.join(10)
    assert "task-sent" in kinds and "task-received" in kinds
    assert {"task-started", "task-succeeded"} <= {e["type"] for e in ended}
    # A failed build is a failed task, with the build's reason, as Flower shows it.
    (failure,) = [e for e in broken if e["type"] == "task-failed"]
    assert f"build {broken_id} failed (dockerfile)" in failure["exception"]
    assert "task-succeeded" not in {e["type"] for e in broken}
    (failure,) = [e for e in cancelled if e["type"] == "task-failed"]
    assert f"build {waiting_id} cancelled (cancelled)" in failure["exception"]
