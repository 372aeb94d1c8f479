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

from farm.errors import AttemptLost, FarmError
from farm.ledger import BuildLedger
from farm.livestate import LiveState
from farm.models import BuildState
from farm.queue import BuildQueue

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
    ) -> None:
        self.ledger = ledger
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
                self._recover(build.id, build.attempts, build.queue, build.worker)
        return [build.id for build in lost]

    def _recover(
        self, build_id: str, attempt: int, queue: str, worker: str | None
    ) -> None:
        if self.live.cancel_requested(build_id):
            self.ledger.finish(
                build_id,
                BuildState.CANCELLED,
                attempt=attempt,
                log_text="\n".join([*self.live.read_log(build_id), "Build cancelled."])
                + "\n",
                error={"code": "cancelled", "message": "The build was cancelled."},
            )
            logger.info(
                "build=%s worker=%s: cancelled while its worker was gone",
                build_id,
                worker,
            )
        elif attempt >= self.max_attempts:
            log = self.live.read_log(build_id)
            message = (
                f"The build's worker stopped answering on each of {attempt} "
                "attempts; it was given up."
            )
            self.ledger.finish(
                build_id,
                BuildState.FAILED,
                attempt=attempt,
                log_text="\n".join([*log, f"ERROR: {message}"]) + "\n",
                error={"code": "worker_lost", "message": message},
            )
            logger.error(
                "build=%s worker=%s: given up after %d attempts",
                build_id,
                worker,
                attempt,
            )
        elif self.ledger.requeue(build_id, attempt=attempt):
            self.live.append_log(
                build_id,
                [
                    f"Worker {worker} stopped answering; "
                    "the build goes back to the queue."
                ],
            )
            self.queue.enqueue(build_id, queue=queue)
            logger.warning(
                "build=%s worker=%s: worker lost, requeued", build_id, worker
            )

    def run_forever(self, *, stop: threading.Event, interval_seconds: float) -> None:
        while not stop.wait(interval_seconds):
            try:
                self.sweep()
            except FarmError as exc:
                logger.warning("reaper: sweep skipped: %s", exc.message)
