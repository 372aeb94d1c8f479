"""The build queue: a Celery application over Redis, shared by web and workers.

The web app only sends tasks by name, so it never imports worker code.
"""

from __future__ import annotations

import logging

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from farm.config import Settings
from farm.errors import StoreUnavailable

logger = logging.getLogger(__name__)

RUN_BUILD_TASK = "farm.run_build"


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

    def enqueue(self, build_id: str, *, queue: str) -> None:
        try:
            self.celery.send_task(
                RUN_BUILD_TASK, args=[build_id], queue=queue, retry=False
            )
        except (OperationalError, redis.RedisError, OSError) as exc:
            raise StoreUnavailable(
                "The build queue (Redis) could not be reached; try again shortly."
            ) from exc
        logger.info("build=%s queue=%s: enqueued", build_id, queue)

    def depth(self, queue: str) -> int:
        """Tasks waiting in Redis for ``queue`` (kombu keeps one list per queue)."""
        try:
            return int(self.redis.llen(queue))
        except redis.RedisError as exc:
            raise StoreUnavailable("Redis could not be reached.") from exc
