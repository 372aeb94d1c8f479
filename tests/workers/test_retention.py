"""Cache retention against a real registry, engine and Redis."""

from __future__ import annotations

import time

import docker
import pytest
import redis
import requests

from farm.livestate import CACHE_USED_KEY, LiveState
from farm.registry import RegistryClient
from workers.engine import EngineClient
from workers.retention import CacheRetention, RetentionPolicy

pytestmark = pytest.mark.integration


def push(engine_url: str, image: str, reference: str) -> None:
    api = docker.APIClient(base_url=engine_url)
    api.tag(image, reference)
    for _ in api.push(reference, stream=True, decode=True):
        pass
    api.remove_image(reference)
    api.close()


def test_stale_cache_images_are_deleted_and_fresh_ones_kept(
    engine_url, registry, redis_url, tiny_image
):
    stale = f"{registry}/farm-cache/retention/app:stale-0001"
    fresh = f"{registry}/farm-cache/retention/other:fresh-0001"
    shared = f"{registry}/farm-cache/retention/other:stale-0002"
    for reference in (stale, fresh, shared):
        push(engine_url, tiny_image, reference)
    client = redis.Redis.from_url(redis_url)
    live = LiveState(client)
    # 'shared' is stale but is the same manifest as 'fresh' in its repository.
    client.zadd(
        CACHE_USED_KEY,
        {stale: time.time() - 30 * 86400, shared: time.time() - 30 * 86400},
    )
    live.mark_cache_used([fresh])
    client.delete("farm:lock:cache-retention")

    retention = CacheRetention(
        "node-r",
        EngineClient(engine_url),
        RegistryClient(registry),
        live,
        RetentionPolicy(engine_cache_keep_bytes=50 * 1024**3, cache_image_days=14),
    )
    report = retention.run_once()

    assert report["cache_images_deleted"] == [stale]
    assert report["engine_cache_reclaimed_bytes"] >= 0
    assert live.report("retention", "node-r")["cache_images_deleted"] == [stale]
    manifests = f"http://{registry}/v2/farm-cache/retention"
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    gone = requests.head(f"{manifests}/app/manifests/stale-0001", headers=accept)
    kept = requests.head(f"{manifests}/other/manifests/fresh-0001", headers=accept)
    assert (gone.status_code, kept.status_code) == (404, 200)
    assert stale not in live.cache_unused_since(time.time())


def test_only_one_node_expires_images_at_a_time(engine_url, registry, redis_url):
    client = redis.Redis.from_url(redis_url)
    live = LiveState(client)
    client.delete("farm:lock:cache-retention")
    assert live.hold_lock("cache-retention", seconds=60)
    retention = CacheRetention(
        "node-s",
        EngineClient(engine_url),
        RegistryClient(registry),
        live,
        RetentionPolicy(engine_cache_keep_bytes=50 * 1024**3, cache_image_days=0),
    )
    assert retention.run_once()["cache_images_deleted"] == []
    client.delete("farm:lock:cache-retention")
