"""Stop signals that reach a worker twice at once.

A TERM sent to a process group (``kill -- -PGID``, a stack stopping its
services, Ctrl-C in a terminal) reaches both the supervising ``farm worker`` and
the worker it runs, and the supervisor passes its own on: the worker gets two in
a row. Celery's handler sends ``worker_shutting_down`` under a lock that cannot
be taken twice by one thread, so a second signal handled in the middle of the
first hangs the worker for good: it never exits, stays in the node list and
hands back none of its builds. Here a stop signal that arrives while another is
being handled is dropped; Celery does nothing more for a repeated TERM anyway.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from types import FrameType

from celery import Celery

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)

Handler = Callable[[int, FrameType | None], object]


class OneStopSignalAtATime:
    """Runs the stop signals' handlers one at a time: a stop signal that comes
    while one is being handled (in the main thread, inside that handler) is
    dropped."""

    def __init__(self) -> None:
        self.handling = False
        self.dropped = 0

    def wrap(self, handler: Handler) -> Handler:
        @functools.wraps(handler)
        def guarded(signum: int, frame: FrameType | None) -> None:
            if self.handling:
                self.dropped += 1
                return
            self.handling = True
            try:
                handler(signum, frame)
            finally:
                self.handling = False

        return guarded

    def install(self) -> None:
        """Guard the handler each stop signal has now (leaving the default and
        ignored ones as they are)."""
        for signum in STOP_SIGNALS:
            current = signal.getsignal(signum)
            if callable(current):
                signal.signal(signum, self.wrap(current))


def guard_celery_stop_signals(app: Celery, guard: OneStopSignalAtATime) -> None:
    """Have ``app``'s worker guard the stop signal handlers Celery puts in at
    start (after its banner, before it consumes)."""
    base = app.Worker

    class GuardedWorker(base):  # type: ignore[misc, valid-type]
        def install_platform_tweaks(self, worker: object) -> None:
            super().install_platform_tweaks(worker)
            guard.install()

    app.Worker = GuardedWorker
