"""How a worker answers stop signals: each stops it warm, once.

TERM, INT (Ctrl-C), QUIT and HUP (its terminal closed) all start the same warm
stop: take no new build, let the running ones finish within the drain time, hand
back the rest. A TERM or HUP that comes again changes nothing. An INT or QUIT
that comes again (Ctrl-C pressed twice) cuts the drain short: the running builds
go back to the queue at once, for another node, and the worker exits. Celery's
own cold stop is never used: its thread pool cannot stop a running task, so it
would leave builds running on a worker that exits.

A signal sent to a process group (``kill -- -PGID``, a stack stopping its
services, Ctrl-C in a terminal) reaches both the supervising ``farm worker`` and
the worker it runs, and the supervisor passes its own on: the worker gets two in
a row. Celery's handler sends ``worker_shutting_down`` under a lock that cannot
be taken twice by one thread, so a second signal handled in the middle of the
first would hang the worker for good. So a stop signal that arrives while
another is being handled is dropped.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from types import FrameType

from celery import Celery

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
# Sent again, these hand the running builds back at once.
AGAIN_HURRIES = (signal.SIGINT, signal.SIGQUIT)

Handler = Callable[[int, FrameType | None], object]


class StopSignals:
    """A worker's stop signal handlers, run one at a time."""

    def __init__(self) -> None:
        self.handling = False
        self.stopping = False
        self.dropped = 0
        self.warm: Handler | None = None

    def wrap(self, handler: Handler) -> Handler:
        """``handler``, dropping a stop signal that comes while one is being
        handled (in the main thread, inside that handler)."""

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

    def on_stop(self, handler: Handler) -> None:
        """Before the worker consumes: every stop signal runs ``handler``."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.wrap(handler))

    def take_over(self, warm: Handler, hurry: Callable[[], None]) -> None:
        """Once the worker consumes: the first stop signal runs ``warm`` (Celery's
        warm stop); an INT or QUIT after it runs ``hurry``; any other is ignored."""
        self.warm = warm

        def stop(signum: int, frame: FrameType | None) -> None:
            if not self.stopping:
                self.stopping = True
                warm(signum, frame)
            elif signum in AGAIN_HURRIES:
                hurry()

        self.on_stop(stop)


def take_over_celery_stop_signals(
    app: Celery, signals: StopSignals, hurry: Callable[[], None]
) -> None:
    """Have ``app``'s worker put ``signals`` in place of the stop signal
    handlers Celery installs at start (after its banner, before it consumes),
    keeping Celery's warm stop (its TERM handler)."""
    base = app.Worker

    class Worker(base):  # type: ignore[misc, valid-type]
        def install_platform_tweaks(self, worker: object) -> None:
            super().install_platform_tweaks(worker)
            warm = signal.getsignal(signal.SIGTERM)
            assert callable(warm), "Celery put in no TERM handler"
            signals.take_over(warm, hurry)

    app.Worker = Worker
