"""``farm worker``: the worker in a child process, started again if it dies.

The broker library can give up for good when Redis vanishes abruptly; the child
then exits and is started again after a pause. A stop signal stops it for good:
the first is passed on as TERM, a warm stop (after Ctrl-C the child has its own
INT from the terminal too); an INT or QUIT after that is passed on as it came,
so that pressing Ctrl-C twice hands the running builds back at once.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
from collections.abc import Callable
from types import FrameType

from workers.stop_signals import AGAIN_HURRIES, STOP_SIGNALS

logger = logging.getLogger(__name__)

RESTART_SECONDS = 5


def supervise(argv: list[str], *, forget: Callable[[], None]) -> int:
    """Run ``argv`` until it exits after a stop signal; start it again otherwise.
    ``forget`` takes the node off the list when it is stopped while its worker
    is dead (waiting to be started again): no worker is left to do it."""
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: FrameType | None) -> None:
        again = stopping.is_set()
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(
                signum if again and signum in AGAIN_HURRIES else signal.SIGTERM
            )

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    while True:
        child = subprocess.Popen(argv)
        if stopping.is_set():  # a stop that came while it was being started
            child.send_signal(signal.SIGTERM)
        code = child.wait()
        if stopping.is_set():
            if code != -signal.SIGTERM:
                return exit_status(code)
            # Killed by that TERM before it could handle one: it had taken nothing,
            # but an earlier run of it, killed, may have left the node listed.
            forget()
            return 0
        if code == 0:
            return 0
        logger.warning(
            "worker: exited with %s; starting it again in %ss", code, RESTART_SECONDS
        )
        if stopping.wait(RESTART_SECONDS):
            forget()
            return 0


def exit_status(code: int) -> int:
    """A child's return code as a shell shows it: 128 + N when signal N ended it."""
    return 128 - code if code < 0 else code
