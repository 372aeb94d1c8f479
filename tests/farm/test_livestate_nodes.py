"""Nodes as Redis remembers them: up while they beat, down once silent, forgotten
after a day or at once when they leave."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis

from farm.livestate import NODE_FORGET_SECONDS, NODES_KEY, LiveState

pytestmark = pytest.mark.integration


@pytest.fixture
def live(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield LiveState(client)
    client.close()


def beat_at(live: LiveState, name: str, moment: float) -> None:
    info = {"queues": ["q"], "slots": 2, "engine": "ok", "disk": {}, "beat_at": moment}
    live.client.hset(NODES_KEY, name, json.dumps(info))


def test_a_silent_node_is_down_then_forgotten_and_one_that_left_is_gone(live):
    fresh, silent, ancient, leaving = (f"{w}-{uuid.uuid4().hex[:6]}" for w in "fsal")
    live.beat_worker(fresh, queues=["q"], slots=2, disk={"free_bytes": 5})
    beat_at(live, silent, time.time() - 120)
    beat_at(live, ancient, time.time() - NODE_FORGET_SECONDS - 60)
    live.beat_worker(leaving, queues=["q"], slots=1)
    live.leave(leaving)

    nodes = live.nodes()
    assert nodes[fresh]["up"] is True and nodes[fresh]["disk"] == {"free_bytes": 5}
    assert nodes[silent]["up"] is False
    assert ancient not in nodes and leaving not in nodes
    assert not live.client.hexists(NODES_KEY, ancient)
    assert fresh in live.workers() and silent not in live.workers()


def test_a_draining_node_is_listed_up_but_takes_no_builds(live):
    draining = f"d-{uuid.uuid4().hex[:6]}"
    live.beat_worker(draining, queues=["q"], slots=2, running=["b1"], draining=True)

    nodes = live.nodes()
    assert nodes[draining]["up"] is True and nodes[draining]["draining"] is True
    assert nodes[draining]["running"] == ["b1"]
    assert draining not in live.workers()
