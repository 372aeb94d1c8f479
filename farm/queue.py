"""The build queue: a Celery application over Redis, shared by web and workers.

The web app only sends tasks by name, so it never imports worker code.
"""

from __future__ import annotations

import json
import logging

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from farm.config import Settings
from farm.errors import StoreUnavailable

logger = logging.getLogger(__name__)

RUN_BUILD_TASK = "farm.run_build"
SMOKE_GROUP_TASK = "farm.smoke_group"

# Kombu's Redis transport keeps one list per priority step and pops the lowest
# number first (kombu docs, "Redis: priorities"); urgent builds jump the line.
PRIORITIES = {"urgent": 0, "normal": 5}
PRIORITY_SEPARATOR = ":"


def make_celery(settings: Settings) -> Celery:
    """Build the Celery app with the farm's delivery guarantees."""
    app = Celery("farm", broker=settings.redis_url)
    app.conf.update(
        task_default_queue=settings.queue,
        # A build is acknowledged only once it ends, and handed back if its worker
        # dies, so an accepted build is never dropped with a crashed node.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Redis re-delivers unacknowledged tasks after this long; it must outlast
            # the longest build (Celery docs, "Redis: visibility timeout").
            "visibility_timeout": settings.build_timeout_seconds + 600,
            "priority_steps": sorted(PRIORITIES.values()),
            "sep": PRIORITY_SEPARATOR,
            "queue_order_strategy": "priority",
        },
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_ignore_result=True,
    )
    return app


class BuildQueue:
    """Hand builds to workers and report how many wait."""

    def __init__(self, celery: Celery, redis_client: redis.Redis) -> None:
        self.celery = celery
        self.redis = redis_client

    def enqueue(self, build_id: str, *, queue: str, priority: str = "normal") -> None:
        self._send(RUN_BUILD_TASK, build_id, queue=queue, priority=priority)
        logger.info(
            "build=%s queue=%s priority=%s: enqueued", build_id, queue, priority
        )

    def enqueue_smoke(self, group_id: str, *, queue: str) -> None:
        """Hand a built group's smoke test to a node serving ``queue``."""
        self._send(SMOKE_GROUP_TASK, group_id, queue=queue, priority="normal")
        logger.info("group=%s queue=%s: smoke test enqueued", group_id, queue)

    def _send(self, task: str, argument: str, *, queue: str, priority: str) -> None:
        try:
            self.celery.send_task(
                task,
                args=[argument],
                queue=queue,
                priority=PRIORITIES[priority],
                retry=False,
            )
        except (OperationalError, redis.RedisError, OSError) as exc:
            raise StoreUnavailable(
                "The build queue (Redis) could not be reached; try again shortly."
            ) from exc

    def depth(self, queue: str) -> int:
        """Builds waiting in Redis for ``queue``, all priorities together."""
        return sum(self.messages(queue).values())

    def messages(self, queue: str) -> dict[str, int]:
        """Messages in the Redis lists of ``queue``, per priority; those a worker
        has reserved are no longer there."""
        try:
            return {
                name: int(self.redis.llen(_list_name(queue, step)))
                for name, step in PRIORITIES.items()
            }
        except redis.RedisError as exc:
            raise StoreUnavailable("Redis could not be reached.") from exc

    def ahead(self, queue: str, build_id: str) -> list[str] | None:
        """The ids of the builds whose messages a worker takes before this one's;
        None if its message is not there."""
        ahead: list[str] = []
        for waiting in self.waiting(queue):
            if waiting == build_id:
                return ahead
            ahead.append(waiting)
        return None

    def waiting(self, queue: str) -> list[str]:
        """The ids in the messages waiting in ``queue``'s Redis lists, in the order
        workers take them (a smoke test's is its group's id)."""
        found = []
        try:
            for key in redis_lists(queue):
                # Publishers push on the left and workers pop on the right.
                for message in self.redis.lrange(key, 0, -1)[::-1]:
                    found.append(_task_args(message).strip("[]()'\", "))
        except redis.RedisError as exc:
            raise StoreUnavailable("Redis could not be reached.") from exc
        return found


def redis_lists(queue: str) -> list[str]:
    """The Redis lists behind ``queue``, in the order workers take from them."""
    return [_list_name(queue, step) for step in sorted(PRIORITIES.values())]


def _list_name(queue: str, step: int) -> str:
    return queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}"


def _task_args(message: bytes | str) -> str:
    try:
        envelope = json.loads(message)
    except ValueError:
        return ""
    return str(envelope.get("headers", {}).get("argsrepr", ""))
