"""Restarting the farm's parts under load: Redis in the middle of a queue of 100
builds, the web app while requests arrive, and a node's Docker engine mid-build.
Every build accepted ends exactly once; nothing accepted is lost."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import docker
import pytest
import redis
import requests

from farm.livestate import LiveState
from farm.local.engine import EngineLayout, LocalEngine
from farm.local.process import free_port, port_open, wait_until
from farm.local.redis import LocalRedis
from farm.local.stack import LocalFarm, Node, start_farm_process
from farm.queue import redis_lists
from tests.conftest import (
    ARTIFACTS,
    dockerfile_archive,
    running,
)
from tests.faults.test_worker_kills import worker_child

pytestmark = pytest.mark.integration

ENDED = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory) -> Iterator[LocalRedis]:
    server = LocalRedis(tmp_path_factory.mktemp("redis"), port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def own_engine(registry, engine_url, tiny_image) -> Iterator[LocalEngine]:
    """Engine faults0, with the tiny base image, for restarting at will."""
    engine = LocalEngine(EngineLayout("faults0"))
    engine.start()
    first = docker.APIClient(base_url=engine_url)
    second = docker.APIClient(base_url=engine.url)
    shared = f"{registry}/{tiny_image}"
    first.tag(tiny_image, shared)
    for _ in first.push(shared, stream=True, decode=True):
        pass
    second.pull(shared)
    second.tag(shared, tiny_image)
    second.close()
    first.close()
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def restart_farm(services, own_redis, own_engine) -> Iterator[LocalFarm]:
    """Web and two workers over a Redis of their own; node restart-a builds on
    engine faults0 and alone serves queue engine-restart."""
    stack = services.farm(
        "restarts",
        redis_url=own_redis.url,
        nodes=(
            Node("restart-a", "faults0", queues="engine-restart"),
            Node("restart-b", services.engine, queues=""),
        ),
        env={
            "FARM_QUEUES": "engine-restart",
            "FARM_REAP_INTERVAL_SECONDS": "2",
            "FARM_STAGE_CACHE": "false",
        },
    )
    yield from running(stack)


def submit(stack: LocalFarm, dockerfile: str, **fields: str) -> requests.Response:
    return stack.api_session().post(
        f"{stack.web_url}/api/v1/builds",
        files={"archive": ("s.tar.gz", dockerfile_archive(dockerfile))},
        data=fields,
        timeout=30,
    )


def states(stack: LocalFarm, ids: list[str]) -> dict[str, dict]:
    http = stack.api_session()
    return {
        build_id: http.get(
            f"{stack.web_url}/api/v1/builds/{build_id}", timeout=10
        ).json()
        for build_id in ids
    }


def wait_all_ended(stack: LocalFarm, ids: list[str], *, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        found = states(stack, ids)
        if all(build["state"] in ENDED for build in found.values()):
            return found
        assert time.monotonic() < deadline, "builds still waiting or running"
        time.sleep(2)


def not_succeeded(found: dict[str, dict]) -> dict[str, dict]:
    """What became of builds that did not succeed, for the test's record."""
    return {
        build_id: {key: build.get(key) for key in ("state", "error", "attempts")}
        for build_id, build in found.items()
        if build["state"] != "succeeded"
    }


def record(name: str, figures: dict) -> None:
    (ARTIFACTS / f"faults-{name}.json").write_text(json.dumps(figures, indent=2))
    print(name, figures)


def test_redis_restarted_in_the_middle_of_100_builds_loses_none(
    restart_farm, own_redis, tiny_image
):
    stamp = uuid.uuid4().hex[:8]
    ids = []
    for n in range(100):
        answer = submit(restart_farm, f"FROM {tiny_image}\nRUN echo {stamp}-{n}\n")
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    while sum(b["state"] in ENDED for b in states(restart_farm, ids).values()) < 20:
        time.sleep(1)
    own_redis.stop()
    time.sleep(2)
    own_redis.start()  # the same port and folder: its append-only file is kept

    final = wait_all_ended(restart_farm, ids, seconds=600)
    succeeded = sum(b["state"] == "succeeded" for b in final.values())
    record(
        "redis-restart",
        {
            "builds_submitted": len(ids),
            "succeeded": succeeded,
            "lost": len(ids) - succeeded,
        },
    )
    assert succeeded == len(ids)


def restart_web(stack: LocalFarm) -> None:
    web = next(p for p in stack.processes if p.name == "web")
    web.stop()
    stack.processes.remove(web)
    fresh = start_farm_process(
        "web",
        ["web", "--bind", f"127.0.0.1:{stack.web_port}"],
        env=stack.env(),
        log_dir=stack.state_dir / "logs",
    )
    stack.processes.insert(0, fresh)
    # Kept-alive connections went with the old process: start afresh.
    stack.api_session().close()
    wait_until(
        lambda: port_open(stack.web_port),
        timeout_seconds=30,
        what="web",
        log_path=fresh.log_path,
    )


def test_requests_accepted_around_a_web_restart_are_all_built(restart_farm, tiny_image):
    stamp = uuid.uuid4().hex[:8]
    accepted: list[str] = []
    refused = 0
    stop = threading.Event()

    def keep_submitting() -> None:
        nonlocal refused
        n = 0
        while not stop.is_set():
            n += 1
            try:
                answer = submit(
                    restart_farm, f"FROM {tiny_image}\nRUN echo {stamp}-{n}\n"
                )
            except requests.ConnectionError:
                refused += 1
            else:
                if answer.status_code == 202:
                    accepted.append(answer.json()["id"])
                else:
                    refused += 1
            time.sleep(0.05)

    sender = threading.Thread(target=keep_submitting)
    sender.start()
    try:
        time.sleep(3)
        restart_web(restart_farm)
        time.sleep(3)
    finally:
        stop.set()
        sender.join(60)

    final = wait_all_ended(restart_farm, accepted, seconds=600)
    succeeded = sum(b["state"] == "succeeded" for b in final.values())
    record(
        "web-restart",
        {
            "requests_accepted": len(accepted),
            "requests_refused_while_down": refused,
            "succeeded": succeeded,
            "lost": len(accepted) - succeeded,
            "not_succeeded": not_succeeded(final),
        },
    )
    assert accepted and succeeded == len(accepted)


def test_an_engine_restarted_mid_build_fails_it_clearly_and_the_node_goes_on(
    restart_farm, own_engine, tiny_image
):
    marker = uuid.uuid4().hex
    answer = submit(
        restart_farm,
        f"FROM {tiny_image}\nRUN echo {marker} started && sleep 30\n",
        queue="engine-restart",
    )
    build_id = answer.json()["id"]
    http = restart_farm.api_session()
    log_url = f"{restart_farm.web_url}/api/v1/builds/{build_id}/log"
    deadline = time.monotonic() + 60
    while not any(
        f"{marker} started" in line
        for line in http.get(log_url, timeout=10).json()["lines"]
    ):
        assert time.monotonic() < deadline, "the build did not reach its RUN step"
        time.sleep(0.3)
    own_engine.stop()
    own_engine.start()

    (build,) = wait_all_ended(restart_farm, [build_id], seconds=300).values()
    if build["state"] == "failed":  # or it ran again and succeeded
        assert build["error"]["code"] in {"engine_failed", "build_failed"}
        assert build["error"]["message"]
    else:
        assert build["state"] == "succeeded" and build["attempts"] >= 2
    after = submit(
        restart_farm,
        f"FROM {tiny_image}\nRUN echo {marker} after\n",
        queue="engine-restart",
    )
    (next_build,) = wait_all_ended(
        restart_farm, [after.json()["id"]], seconds=300
    ).values()
    record(
        "engine-restart",
        {
            "build_during_restart": build["state"],
            "error": build.get("error"),
            "next_build": next_build["state"],
        },
    )
    assert next_build["state"] == "succeeded"


def test_a_node_whose_engine_is_down_holds_no_build_so_killing_it_loses_none(
    restart_farm, own_redis, own_engine, tiny_image
):
    """Builds sent while the only node of their queue has no engine wait in Redis,
    not in that node: killed there, they are built as soon as a node can."""
    stamp = uuid.uuid4().hex[:8]
    own_engine.stop()
    try:
        ids = []
        for n in range(3):
            answer = submit(
                restart_farm,
                f"FROM {tiny_image}\nRUN echo {stamp}-{n}\n",
                queue="engine-restart",
            )
            ids.append(answer.json()["id"])
        time.sleep(25)  # two beats, and time for the node to receive them
        waiting = redis.Redis.from_url(own_redis.url)
        in_redis = sum(waiting.llen(name) for name in redis_lists("engine-restart"))
        waiting.close()
        assert in_redis == len(ids), "the node without an engine held builds"
        assert all(b["state"] == "queued" for b in states(restart_farm, ids).values())
        log = next(p for p in restart_farm.processes if p.name == "worker-restart-a")
        child = worker_child(restart_farm, "restart-a")
        if child is not None:
            os.kill(child, signal.SIGKILL)
        killed_at = log.log_path.stat().st_size
        # Started again while its engine is still down, the worker waits for it
        # rather than exiting over and over, and shows as a node with its engine
        # down (not as a node that is down).
        wait_until(
            lambda: (
                "the engine does not answer; waiting for it"
                in log.log_path.read_text()[killed_at:]
            ),
            timeout_seconds=60,
            what="the worker to start again without its engine",
            log_path=log.log_path,
        )
        live = LiveState(redis.Redis.from_url(own_redis.url))
        wait_until(
            lambda: (
                live.nodes().get("restart-a", {}).get("up") is True
                and live.nodes()["restart-a"]["engine"] != "ok"
            ),
            timeout_seconds=60,
            what="the node to show its engine down",
            log_path=log.log_path,
        )
        time.sleep(12)
        # The kill itself is the one exit the supervisor reports.
        assert log.log_path.read_text()[killed_at:].count("exited with") == 1
        assert all(b["state"] == "queued" for b in states(restart_farm, ids).values())
    finally:
        own_engine.start()
    started = time.monotonic()
    final = wait_all_ended(restart_farm, ids, seconds=180)
    record(
        "engine-down-node-killed",
        {
            "builds_submitted": len(ids),
            "messages_left_in_redis": in_redis,
            "succeeded": sum(b["state"] == "succeeded" for b in final.values()),
            "seconds_to_build_after_engine_back": round(time.monotonic() - started, 1),
        },
    )
    assert all(b["state"] == "succeeded" for b in final.values()), final
    assert "taking no builds while the engine is down" in log.log_path.read_text()


def test_a_queued_build_whose_message_redis_lost_is_sent_again(
    restart_farm, own_redis, own_engine, tiny_image
):
    """Redis killed outright can lose its last writes: a build recorded as queued
    whose message is nowhere is sent again by the sweep, and built."""
    client = redis.Redis.from_url(own_redis.url)
    live = LiveState(client)
    own_engine.stop()  # the queue's only node takes nothing: the message stays put
    try:
        wait_until(
            lambda: live.nodes()["restart-a"]["engine"] != "ok",
            timeout_seconds=60,
            what="the node to see its engine down",
            log_path=restart_farm.state_dir / "logs" / "worker-restart-a.log",
        )
        answer = submit(
            restart_farm,
            f"FROM {tiny_image}\nRUN echo lost-{uuid.uuid4().hex}\n",
            queue="engine-restart",
        )
        build_id = answer.json()["id"]

        def remove_message() -> bool:
            # A fetch the node sent before it stopped consuming may take the
            # message and put it back: remove it once it is there.
            removed = 0
            for name in redis_lists("engine-restart"):
                for message in client.lrange(name, 0, -1):
                    if build_id.encode() in message:
                        removed += client.lrem(name, 0, message)
            return removed == 1

        wait_until(
            remove_message,
            timeout_seconds=30,
            what="the build's message in Redis",
            log_path=restart_farm.state_dir / "logs" / "worker-restart-a.log",
        )
        time.sleep(5)
        assert not any(
            build_id.encode() in message
            for name in redis_lists("engine-restart")
            for message in client.lrange(name, 0, -1)
        )
    finally:
        own_engine.start()
    (build,) = wait_all_ended(restart_farm, [build_id], seconds=300).values()
    log = restart_farm.api_session().get(
        f"{restart_farm.web_url}/api/v1/builds/{build_id}/log", timeout=10
    )
    client.close()
    record(
        "message-lost",
        {"state": build["state"], "wait_seconds": build["wait_seconds"]},
    )
    assert build["state"] == "succeeded", build["error"]
    assert any("queued again" in line for line in log.json()["lines"])


def scrape(stack: LocalFarm) -> str:
    # Prometheus gives up on a scrape after 10 s by default.
    answer = requests.get(f"{stack.web_url}/metrics", timeout=10)
    assert answer.status_code == 200
    return answer.text


def test_a_hung_redis_leaves_the_scrape_answering_and_says_so(restart_farm, own_redis):
    assert own_redis.process is not None and own_redis.process.pid is not None
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    try:
        text = scrape(restart_farm)
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    assert 'farm_store_up{store="redis"} 0.0' in text
    assert 'farm_store_up{store="database"} 1.0' in text
    assert "farm_builds_total{" in text and "farm_queue_depth{" in text
    assert 'farm_store_up{store="redis"} 1.0' in scrape(restart_farm)


def test_a_hung_engine_shows_as_its_node_engine_not_as_the_node(
    restart_farm, own_engine
):
    assert own_engine.process is not None and own_engine.process.pid is not None
    os.kill(own_engine.process.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 60
        while True:
            text = scrape(restart_farm)
            if 'farm_node_engine_up{node="restart-a"} 0.0' in text:
                break
            assert time.monotonic() < deadline, "the hung engine was not noticed"
            time.sleep(2)
        time.sleep(35)  # longer than a node may go without beating
        text = scrape(restart_farm)
        assert 'farm_node_up{node="restart-a"} 1.0' in text
        assert 'farm_node_engine_up{node="restart-a"} 0.0' in text
        nodes = restart_farm.api_session().get(
            f"{restart_farm.web_url}/api/v1/nodes", timeout=10
        )
        node = next(n for n in nodes.json()["nodes"] if n["name"] == "restart-a")
        assert node["up"] and node["engine"] != "ok"
    finally:
        os.kill(own_engine.process.pid, signal.SIGCONT)
