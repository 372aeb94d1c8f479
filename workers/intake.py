"""Whether this node takes builds: not while its engine is down.

A node whose engine does not answer stops consuming its queues, so builds wait in
Redis, where any node can take them, instead of being held by a node that cannot
run them (and that could die holding them). It consumes again once its engine
answers. A build it had already received meanwhile goes straight back to the queue.
"""

from __future__ import annotations

import logging
import threading

import redis
from celery import Celery
from kombu.exceptions import OperationalError

logger = logging.getLogger(__name__)


class Intake:
    """Open or close this worker's consumption of its queues."""

    def __init__(self, app: Celery, hostname: str, queues: list[str]) -> None:
        self.app = app
        self.hostname = hostname
        self.queues = queues
        self.closed = False
        self._lock = threading.Lock()

    def close(self, reason: str) -> None:
        """Take no more builds; say why in the worker's log."""
        with self._lock:
            if self.closed:
                return
            if self._tell("cancel_consumer"):
                self.closed = True
                logger.warning(
                    "worker=%s: taking no builds while the engine is down: %s",
                    self.hostname,
                    reason,
                )

    def open(self) -> None:
        """Take builds again."""
        with self._lock:
            if not self.closed:
                return
            if self._tell("add_consumer"):
                self.closed = False
                logger.info("worker=%s: engine answers; taking builds", self.hostname)

    def follow(self, engine: str) -> None:
        """Close or open to match the engine's health ("ok" or what went wrong)."""
        if engine == "ok":
            self.open()
        else:
            self.close(engine)

    def _tell(self, command: str) -> bool:
        """Ask this worker (by a broadcast only it acts on) to cancel or add its
        consumers; False if the broker could not be reached, to try again later."""
        try:
            for queue in self.queues:
                getattr(self.app.control, command)(
                    queue, destination=[self.hostname], reply=False
                )
        except (OperationalError, redis.RedisError, OSError) as exc:
            logger.warning("worker=%s: %s not sent: %s", self.hostname, command, exc)
            return False
        return True
