"""Stop signals handled one at a time, so a second TERM cannot hang a worker."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from types import FrameType

import pytest
from celery import Celery

from workers.stop_signals import (
    STOP_SIGNALS,
    OneStopSignalAtATime,
    guard_celery_stop_signals,
)

ALL_CELERY_SETS = (*STOP_SIGNALS, signal.SIGHUP, signal.SIGUSR1)


@pytest.fixture(autouse=True)
def handlers_restored() -> Iterator[None]:
    before = {signum: signal.getsignal(signum) for signum in ALL_CELERY_SETS}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


def test_a_stop_signal_during_the_handling_of_another_is_dropped():
    guard = OneStopSignalAtATime()
    calls: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        calls.append(signum)
        if len(calls) == 1:
            # Python runs the handler for this one at its next instruction,
            # inside this handler, unless it is dropped.
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    guard.install()
    os.kill(os.getpid(), signal.SIGTERM)
    assert calls == [signal.SIGTERM] and guard.dropped >= 1

    os.kill(os.getpid(), signal.SIGTERM)  # once that one was handled: as usual
    assert calls == [signal.SIGTERM, signal.SIGTERM]


def test_without_the_guard_the_second_one_runs_inside_the_first():
    """What the guard is for: shows that the test above can tell."""
    depth: list[int] = []
    inside = 0

    def handler(_signum: int, _frame: FrameType | None) -> None:
        nonlocal inside
        inside += 1
        depth.append(inside)
        if len(depth) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))
        inside -= 1

    signal.signal(signal.SIGTERM, handler)
    os.kill(os.getpid(), signal.SIGTERM)
    assert depth == [1, 2]


def test_default_and_ignored_dispositions_are_left_alone():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    OneStopSignalAtATime().install()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


@pytest.mark.filterwarnings("ignore:You're running the worker with superuser")
def test_the_celery_worker_s_own_stop_handlers_are_guarded():
    app = Celery("stop-signals", broker="memory://", set_as_current=False)
    guard = OneStopSignalAtATime()
    guard_celery_stop_signals(app, guard)
    worker = app.Worker(hostname="guarded@test", pool_cls="solo", quiet=True)
    worker.install_platform_tweaks(worker)
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    assert {h.__wrapped__.__name__ for h in handlers.values()} == {  # type: ignore[union-attr]
        "worker_Warm",
        "worker_Cold",
    }
