"""Finding builds whose worker died, and handing them to a live node.

A running build's worker beats in Redis every few seconds. A build that has missed its
beats in two sweeps in a row goes back to the queue, or fails once it has used up its
attempts, so a crashed node delays its builds by about two sweep intervals rather than
by the broker's visibility timeout.

A queued build needs its message: waiting in Redis, or held by a live node (each
node's beat lists the builds it received). One whose message is in neither place for
longer than a node goes between beats (a node killed between receiving and starting
it, or a Redis that lost its last writes) is sent again. If the old message turns up
later, the build is no longer queued and that delivery is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from farm.callbacks import CallbackSender
from farm.errors import AttemptLost, FarmError
from farm.ledger import BuildLedger
from farm.livestate import LiveState
from farm.models import Build, BuildState, utcnow
from farm.queue import BuildQueue
from farm.smoke import GroupSmoke

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
SWEEP_LIMIT = 1000
# A queued build younger than this is left alone: its message may be on its way.
QUEUED_GRACE_SECONDS = 60
# How long a queued build's message must be missing before it is sent again: more
# than a node's beat interval, so a message a live node just received is not taken
# for lost.
MESSAGE_MISSING_SECONDS = 30


class LostBuildReaper:
    """Requeue or fail running builds that no worker beats for any more, and send
    again queued builds whose message is lost."""

    def __init__(
        self,
        ledger: BuildLedger,
        live: LiveState,
        queue: BuildQueue,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        groups: GroupSmoke | None = None,
        callbacks: CallbackSender | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.groups = groups
        self.callbacks = callbacks
        self.live = live
        self.queue = queue
        self.max_attempts = max_attempts
        self._silent: set[str] = set()
        self._missing_since: dict[str, float] = {}
        self.clock = clock

    def sweep(self) -> list[str]:
        """One pass over running builds; returns the ids handed back or failed."""
        running = self.ledger.recent(states=[BuildState.RUNNING], limit=SWEEP_LIMIT)
        silent_now = {b.id for b in running if not self.live.has_heartbeat(b.id)}
        lost = [b for b in running if b.id in silent_now & self._silent]
        self._silent = silent_now - {b.id for b in lost}
        for build in lost:
            # Another node's reaper, or the worker itself, may get there first.
            with contextlib.suppress(AttemptLost):
                self._recover(build)
        return [build.id for build in lost]

    def sweep_queued(self) -> list[str]:
        """One pass over builds queued for a while; returns those sent again
        because their message was nowhere for too long."""
        moment = utcnow() - timedelta(seconds=QUEUED_GRACE_SECONDS)
        queued = self.ledger.queued_before(moment, limit=SWEEP_LIMIT)
        if not queued:
            self._missing_since.clear()
            return []
        held = {
            build_id
            for node in self.live.nodes().values()
            if node["up"]
            for build_id in node.get("holding", [])
        }
        candidates = [b for b in queued if b.id not in held]
        waiting: set[str] = set()
        for queue in {b.queue for b in candidates}:
            waiting.update(self.queue.waiting(queue))
        missing = [b for b in candidates if b.id not in waiting]
        now = self.clock()
        self._missing_since = {
            b.id: self._missing_since.get(b.id, now) for b in missing
        }
        resent = []
        for build in missing:
            if now - self._missing_since[build.id] < MESSAGE_MISSING_SECONDS:
                continue
            # Every node sweeps; one sends it again.
            if not self.live.hold_lock(f"resend:{build.id}", seconds=300):
                continue
            self.live.append_log(
                build.id,
                [
                    "The build's place in the queue was lost (a node stopped while "
                    "holding it, or Redis lost it); it is queued again."
                ],
            )
            self.queue.enqueue(
                build.id, queue=build.queue, priority=build.priority or "normal"
            )
            del self._missing_since[build.id]
            resent.append(build.id)
            logger.warning("build=%s: its message was lost; queued again", build.id)
        return resent

    def _recover(self, build: Build) -> None:
        if self.live.cancel_requested(build.id):
            self._end(
                build, BuildState.CANCELLED, "cancelled", "The build was cancelled."
            )
        elif build.attempts - (build.handed_back or 0) >= self.max_attempts:
            lost = build.attempts - (build.handed_back or 0)
            self._end(
                build,
                BuildState.FAILED,
                "worker_lost",
                f"The build's worker stopped answering on {lost} of its "
                f"{build.attempts} attempts; it was given up.",
            )
        elif self.ledger.requeue(build.id, attempt=build.attempts):
            self.live.append_log(
                build.id,
                [
                    f"Worker {build.worker} stopped answering; the build goes back to "
                    "the queue."
                ],
            )
            self.queue.enqueue(
                build.id, queue=build.queue, priority=build.priority or "normal"
            )
            logger.warning(
                "build=%s worker=%s: worker lost, requeued", build.id, build.worker
            )

    def _end(self, build: Build, state: BuildState, code: str, message: str) -> None:
        """Finish a build whose worker is gone, keeping the log it had so far."""
        log = [*self.live.read_log(build.id), message]
        self.ledger.finish(
            build.id,
            state,
            attempt=build.attempts,
            log_text="\n".join(log) + "\n",
            error={"code": code, "message": message},
        )
        logger.info(
            "build=%s worker=%s: %s: %s", build.id, build.worker, state.value, message
        )

    def run_forever(self, *, stop: threading.Event, interval_seconds: float) -> None:
        while not stop.wait(interval_seconds):
            try:
                self.sweep()
                self.sweep_queued()
                if self.groups is not None:
                    # Smoke tests wait on builds this sweep may just have ended.
                    self.groups.sweep()
                if self.callbacks is not None:
                    # Builds ended here, cancelled while queued, or retries due.
                    self.callbacks.deliver_due()
            except FarmError as exc:
                logger.warning("reaper: sweep skipped: %s", exc.message)
