"""Finding builds whose worker died, and handing them to a live node.

A running build's worker beats in Redis every few seconds. A build that has missed its
beats in two sweeps in a row goes back to the queue, or fails once it has used up its
attempts, so a crashed node delays its builds by about two sweep intervals rather than
by the broker's visibility timeout.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from farm.callbacks import CallbackSender
from farm.errors import AttemptLost, FarmError
from farm.ledger import BuildLedger
from farm.livestate import LiveState
from farm.models import Build, BuildState
from farm.queue import BuildQueue
from farm.smoke import GroupSmoke

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
SWEEP_LIMIT = 1000


class LostBuildReaper:
    """Requeue or fail running builds that no worker beats for any more."""

    def __init__(
        self,
        ledger: BuildLedger,
        live: LiveState,
        queue: BuildQueue,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        groups: GroupSmoke | None = None,
        callbacks: CallbackSender | None = None,
    ) -> None:
        self.ledger = ledger
        self.groups = groups
        self.callbacks = callbacks
        self.live = live
        self.queue = queue
        self.max_attempts = max_attempts
        self._silent: set[str] = set()

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

    def _recover(self, build: Build) -> None:
        if self.live.cancel_requested(build.id):
            self._end(
                build, BuildState.CANCELLED, "cancelled", "The build was cancelled."
            )
        elif build.attempts >= self.max_attempts:
            self._end(
                build,
                BuildState.FAILED,
                "worker_lost",
                f"The build's worker stopped answering on each of "
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
                if self.groups is not None:
                    # Smoke tests wait on builds this sweep may just have ended.
                    self.groups.sweep()
                if self.callbacks is not None:
                    # Builds ended here, cancelled while queued, or retries due.
                    self.callbacks.deliver_due()
            except FarmError as exc:
                logger.warning("reaper: sweep skipped: %s", exc.message)
