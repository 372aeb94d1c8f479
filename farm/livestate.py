"""Live state of running builds in Redis: the growing log and cancel requests.

Redis holds only what is in flight; the ledger keeps the durable copy once a build ends.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis

from farm.errors import StoreUnavailable

logger = logging.getLogger(__name__)

FINISHED_LOG_TTL_SECONDS = 3600


def _log_key(build_id: str) -> str:
    return f"farm:build:{build_id}:log"


def _cancel_key(build_id: str) -> str:
    return f"farm:build:{build_id}:cancel"


class LiveState:
    """Append and read a running build's log; flag builds to cancel."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

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
