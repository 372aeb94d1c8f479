"""Live state of running builds in Redis: the growing log and cancel requests.

Redis holds only what is in flight; the ledger keeps the durable copy once a build ends.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import redis
from redis.exceptions import LockError

from farm.config import Settings
from farm.errors import StoreUnavailable

logger = logging.getLogger(__name__)

FINISHED_LOG_TTL_SECONDS = 3600
HEARTBEAT_TTL_SECONDS = 30
# A node that has not beaten for this long is down; after a day it is forgotten.
WORKER_TTL_SECONDS = 30
NODE_FORGET_SECONDS = 24 * 3600
NODES_KEY = "farm:nodes"
CACHE_USED_KEY = "farm:cache:used"
REDIS_TIMEOUT_SECONDS = 3


def _log_key(build_id: str) -> str:
    return f"farm:build:{build_id}:log"


def _heartbeat_key(build_id: str) -> str:
    return f"farm:build:{build_id}:heartbeat"


def _cancel_key(build_id: str) -> str:
    return f"farm:build:{build_id}:cancel"


def redis_for(settings: Settings) -> redis.Redis:
    """A Redis client that gives up on a Redis that stopped answering within
    seconds, so a hung Redis is reported as down rather than hanging its callers."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
    )


class LiveState:
    """Append and read a running build's log; flag builds to cancel."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers."""
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise StoreUnavailable("Redis could not be reached.") from exc

    def append_log(self, build_id: str, lines: Sequence[str]) -> None:
        if not lines:
            return
        try:
            self.client.rpush(_log_key(build_id), *lines)
        except redis.RedisError as exc:
            raise StoreUnavailable("Redis could not be reached.") from exc

    def read_log(self, build_id: str, *, start: int = 0) -> list[str]:
        try:
            raw = self.client.lrange(_log_key(build_id), start, -1)
        except redis.RedisError as exc:
            raise StoreUnavailable("Redis could not be reached.") from exc
        return [_text(line) for line in raw]

    def expire_log(self, build_id: str) -> None:
        """Let the live copy go some time after the ledger has the whole log."""
        try:
            self.client.expire(_log_key(build_id), FINISHED_LOG_TTL_SECONDS)
        except redis.RedisError:
            logger.warning("build=%s: could not set expiry on live log", build_id)

    def beat(self, build_id: str, *, worker: str) -> None:
        """Say that ``worker`` is still running the build, for the next few seconds."""
        try:
            self.client.set(_heartbeat_key(build_id), worker, ex=HEARTBEAT_TTL_SECONDS)
        except redis.RedisError:
            logger.warning("build=%s: heartbeat not sent (Redis down)", build_id)

    def end_beats(self, build_id: str) -> None:
        try:
            self.client.delete(_heartbeat_key(build_id))
        except redis.RedisError:
            logger.warning("build=%s: heartbeat not cleared (Redis down)", build_id)

    def has_heartbeat(self, build_id: str) -> bool:
        """Whether a worker beat for the build lately; True when Redis can't tell."""
        try:
            return bool(self.client.exists(_heartbeat_key(build_id)))
        except redis.RedisError:
            return True

    def beat_worker(
        self,
        name: str,
        *,
        queues: list[str],
        slots: int,
        engine: str = "ok",
        disk: dict[str, int] | None = None,
        holding: Sequence[str] = (),
        running: Sequence[str] = (),
        draining: bool = False,
    ) -> None:
        """Say that worker ``name`` is up, which queues it serves, how many builds
        it runs at once, how its engine answered ("ok" or what went wrong), which
        builds' messages it holds (received, not yet ended), which builds it runs
        now, whether it is draining (stopping: it takes no new build and lets its
        running ones finish) and, when known, its engine's disk: ``free_bytes``,
        ``size_bytes`` and ``build_cache_bytes``."""
        info = {"queues": queues, "slots": slots, "engine": engine}
        info |= {"disk": disk or {}, "holding": list(holding), "running": list(running)}
        info["draining"] = draining
        info["beat_at"] = time.time()
        try:
            self.client.hset(NODES_KEY, name, json.dumps(info))
        except redis.RedisError:
            logger.warning("worker=%s: heartbeat not sent (Redis down)", name)

    def leave(self, name: str) -> None:
        """Forget worker ``name`` at once: it stopped on purpose (and its builds
        ended or went back to the queue), it is not down."""
        try:
            self.client.hdel(NODES_KEY, name)
        except redis.RedisError:
            logger.warning("worker=%s: not forgotten (Redis down)", name)

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Every worker that beat within a day, each with its last beat's figures
        and ``up``: whether that beat is recent."""
        try:
            raw = self.client.hgetall(NODES_KEY)
        except redis.RedisError as exc:
            raise StoreUnavailable("Redis could not be reached.") from exc
        now = time.time()
        found = {}
        for key, value in raw.items():
            name, info = _text(key), json.loads(_text(value))
            age = now - float(info.get("beat_at", 0))
            if age > NODE_FORGET_SECONDS:
                with suppress(redis.RedisError):
                    self.client.hdel(NODES_KEY, name)
                continue
            found[name] = info | {"up": age <= WORKER_TTL_SECONDS}
        return dict(sorted(found.items()))

    def workers(self) -> dict[str, dict[str, Any]]:
        """The workers that are up and take builds (not draining), each with its
        queues and slots."""
        return {
            name: info
            for name, info in self.nodes().items()
            if info["up"] and not info.get("draining")
        }

    def mark_cache_used(self, references: Sequence[str]) -> None:
        """Note that these stage cache images were just imported or exported."""
        if not references:
            return
        now = time.time()
        try:
            self.client.zadd(CACHE_USED_KEY, dict.fromkeys(references, now))
        except redis.RedisError:
            logger.warning("cache: last use of %d images not noted", len(references))

    def cache_unused_since(self, moment: float) -> list[str]:
        try:
            raw = self.client.zrangebyscore(CACHE_USED_KEY, "-inf", moment)
        except redis.RedisError as exc:
            raise StoreUnavailable("Redis could not be reached.") from exc
        return [_text(item) for item in raw if isinstance(item, bytes | str)]

    def forget_cache(self, reference: str) -> None:
        self.client.zrem(CACHE_USED_KEY, reference)

    @contextmanager
    def locked(self, name: str, *, seconds: int) -> Iterator[None]:
        """Hold a lock across nodes while the block runs (at most ``seconds``).

        Without Redis the block runs anyway: losing the lock is better than
        stopping builds.
        """
        lock = self.client.lock(
            f"farm:lock:{name}", timeout=seconds, blocking_timeout=seconds
        )
        try:
            acquired = lock.acquire()
        except redis.RedisError:
            logger.warning("lock=%s: not taken (Redis down); going on", name)
            acquired = False
        try:
            yield
        finally:
            if acquired:
                with suppress(redis.RedisError, LockError):
                    lock.release()

    def hold_lock(self, name: str, *, seconds: int) -> bool:
        """Take a lock across nodes for ``seconds``; False if another node has it."""
        try:
            return bool(self.client.set(f"farm:lock:{name}", "1", nx=True, ex=seconds))
        except redis.RedisError:
            return False

    def remember(self, name: str, value: dict[str, Any], *, seconds: int) -> None:
        """Keep a small JSON value for ``seconds`` (answers to idempotent requests)."""
        try:
            self.client.set(f"farm:memo:{name}", json.dumps(value), ex=seconds)
        except redis.RedisError as exc:
            raise StoreUnavailable("Redis could not be reached.") from exc

    def recall(self, name: str) -> dict[str, Any] | None:
        try:
            raw = self.client.get(f"farm:memo:{name}")
        except redis.RedisError as exc:
            raise StoreUnavailable("Redis could not be reached.") from exc
        return json.loads(raw) if raw else None

    def record_report(self, kind: str, worker: str, report: dict[str, Any]) -> None:
        try:
            self.client.set(f"farm:report:{kind}:{worker}", json.dumps(report))
        except redis.RedisError:
            logger.warning("worker=%s: %s report not kept (Redis down)", worker, kind)

    def report(self, kind: str, worker: str) -> dict[str, Any] | None:
        try:
            raw = self.client.get(f"farm:report:{kind}:{worker}")
        except redis.RedisError as exc:
            raise StoreUnavailable("Redis could not be reached.") from exc
        return json.loads(_text(raw)) if raw else None

    def request_cancel(self, build_id: str) -> None:
        try:
            self.client.set(_cancel_key(build_id), "1", ex=24 * 3600)
        except redis.RedisError as exc:
            raise StoreUnavailable("Redis could not be reached.") from exc

    def cancel_requested(self, build_id: str) -> bool:
        try:
            return bool(self.client.exists(_cancel_key(build_id)))
        except redis.RedisError:
            return False


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
