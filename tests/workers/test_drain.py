"""Scaling in without killing a build: a real worker sent TERM takes no new build,
lets a short running build finish, hands a long one back to the queue once its
drain time is up, and exits; a node that stays runs what was handed back."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from farm.livestate import LiveState
from farm.local.stack import LocalFarm, Node
from tests.conftest import (
    ARTIFACTS,
    RunningFarm,
    dockerfile_archive,
    running,
)

pytestmark = pytest.mark.integration

DRAIN_SECONDS = 10


@pytest.fixture
def draining_farm(services) -> Iterator[LocalFarm]:
    """One node, drain-a, to begin with; the test starts drain-b later."""
    stack = services.farm(
        "drain",
        nodes=("drain-a",),
        env={
            "FARM_DRAIN_SECONDS": str(DRAIN_SECONDS),
            "FARM_REAP_INTERVAL_SECONDS": "2",
        },
    )
    yield from running(stack)


def submit(farm: RunningFarm, base: str, marker: str, seconds: int) -> str:
    source = dockerfile_archive(
        f"FROM {base}\nRUN echo {marker} started && sleep {seconds} && echo {marker}\n"
    )
    answer = farm.http.post(
        farm.api("/builds"), files={"archive": ("s.tar.gz", source)}, timeout=30
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def log_of(farm: RunningFarm, build_id: str) -> list[str]:
    answer = farm.http.get(farm.api(f"/builds/{build_id}/log"), timeout=10)
    return list(answer.json()["lines"])


def test_a_stopping_worker_finishes_short_builds_and_hands_long_ones_back(
    draining_farm, tiny_image, engine_url
):
    farm = RunningFarm(draining_farm)
    stamp = uuid.uuid4().hex[:8]
    short = submit(farm, tiny_image, f"short-{stamp}", 4)
    long = submit(farm, tiny_image, f"long-{stamp}", 60)
    deadline = time.monotonic() + 90
    while not all(
        any("started" in line for line in log_of(farm, b)) for b in (short, long)
    ):
        assert time.monotonic() < deadline, "the builds did not start on drain-a"
        time.sleep(0.5)

    worker_a = next(p for p in draining_farm.processes if p.name == "worker-drain-a")
    assert worker_a.popen is not None
    worker_a.popen.send_signal(signal.SIGTERM)  # to its supervisor, as a pod stop
    asked_at = time.monotonic()
    time.sleep(1)
    later = submit(farm, tiny_image, f"later-{stamp}", 0)

    # While it drains it is listed, up and draining, not counted as capacity.
    nodes = {
        n["name"]: n
        for n in farm.http.get(farm.api("/nodes"), timeout=10).json()["nodes"]
    }
    assert nodes["drain-a"]["up"] is True and nodes["drain-a"]["draining"] is True
    assert long in nodes["drain-a"]["builds"]  # the short one may be done
    metrics = farm.http.get(f"{farm.web_url}/metrics", timeout=10).text
    assert 'farm_node_draining{node="drain-a"} 1.0' in metrics
    assert 'farm_node_up{node="drain-a"} 1.0' in metrics
    assert 'farm_queue_capacity_builds{queue="drain"} 0.0' in metrics
    page = farm.http.get(f"{farm.web_url}/queues", timeout=10).text
    row = page.split('data-node="drain-a"', 1)[1].split("</tr>", 1)[0]
    assert ">draining</span>" in row

    code = worker_a.popen.wait(timeout=DRAIN_SECONDS + 60)
    exit_seconds = time.monotonic() - asked_at
    assert code == 0
    assert (
        farm.http.get(farm.api(f"/builds/{later}"), timeout=10).json()["state"]
        == "queued"
    ), "the stopping worker took a new build"
    assert "drain-a" not in LiveState(redis.Redis.from_url(redis_url_of(farm))).nodes()

    draining_farm.start_worker(Node("drain-b", engine_url.split("/")[-2]))
    final = {b: farm.wait_for(b, timeout_seconds=180) for b in (short, long, later)}

    assert final[short]["state"] == "succeeded"
    assert final[short]["worker"] == "drain-a" and final[short]["attempts"] == 1
    assert final[long]["state"] == "succeeded", final[long]["error"]
    assert final[long]["worker"] == "drain-b" and final[long]["attempts"] == 2
    assert final[later]["state"] == "succeeded"
    assert final[later]["worker"] == "drain-b"
    lines = log_of(farm, long)
    assert any("drain-a is stopping" in line for line in lines)
    assert sum(line.startswith("Pushed ") for line in lines) == 1
    # It stopped once its drain time was up, not at the long build's end.
    assert DRAIN_SECONDS <= exit_seconds < DRAIN_SECONDS + 30
    (ARTIFACTS / "drain.json").write_text(
        f'{{"worker_exit_seconds": {exit_seconds:.1f}, '
        f'"drain_seconds": {DRAIN_SECONDS}}}\n'
    )


def redis_url_of(farm: RunningFarm) -> str:
    return farm.stack.env()["FARM_REDIS_URL"]


def test_ctrl_c_twice_hands_running_builds_back_at_once(
    draining_farm, tiny_image, engine_url
):
    """Ctrl-C reaches the whole process group: the first stops the worker warm,
    the second hands its running build back without waiting out the drain."""
    farm = RunningFarm(draining_farm)
    stamp = uuid.uuid4().hex[:8]
    long = submit(farm, tiny_image, f"long-{stamp}", 60)
    deadline = time.monotonic() + 90
    while not any("started" in line for line in log_of(farm, long)):
        assert time.monotonic() < deadline, "the build did not start on drain-a"
        time.sleep(0.5)
    worker_a = next(p for p in draining_farm.processes if p.name == "worker-drain-a")
    assert worker_a.popen is not None

    os.killpg(worker_a.popen.pid, signal.SIGINT)
    time.sleep(2)
    assert worker_a.popen.poll() is None, "one Ctrl-C stopped it before the drain"
    os.killpg(worker_a.popen.pid, signal.SIGINT)
    asked_at = time.monotonic()
    code = worker_a.popen.wait(timeout=DRAIN_SECONDS + 60)
    exit_seconds = time.monotonic() - asked_at
    assert code == 0
    assert exit_seconds < DRAIN_SECONDS, "it waited out the drain"
    assert "drain-a" not in LiveState(redis.Redis.from_url(redis_url_of(farm))).nodes()

    draining_farm.start_worker(Node("drain-b", engine_url.split("/")[-2]))
    final = farm.wait_for(long, timeout_seconds=180)
    assert final["state"] == "succeeded", final["error"]
    assert final["worker"] == "drain-b" and final["attempts"] == 2
    assert any("drain-a is stopping" in line for line in log_of(farm, long))
