"""How a worker answers stop signals: one warm stop, signals handled one at a
time, and Ctrl-C twice handing the running builds back at once."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from types import FrameType

import pytest
from celery import Celery

from workers.stop_signals import (
    STOP_SIGNALS,
    StopSignals,
    take_over_celery_stop_signals,
)

CELERY_SETS = (*STOP_SIGNALS, signal.SIGUSR1)


@pytest.fixture(autouse=True)
def handlers_restored() -> Iterator[None]:
    before = {signum: signal.getsignal(signum) for signum in CELERY_SETS}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


def test_a_stop_signal_during_the_handling_of_another_is_dropped():
    signals = StopSignals()
    calls: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        calls.append(signum)
        if len(calls) == 1:
            # Python runs the handlers of these at its next instruction, inside
            # this handler, unless they are dropped.
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))

    signals.on_stop(handler)
    os.kill(os.getpid(), signal.SIGTERM)
    assert calls == [signal.SIGTERM] and signals.dropped == 2

    os.kill(os.getpid(), signal.SIGHUP)  # once that one was handled: as usual
    assert calls == [signal.SIGTERM, signal.SIGHUP]


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


def test_the_first_stop_signal_stops_warm_and_only_int_or_quit_again_hurry():
    signals = StopSignals()
    warm: list[int] = []
    hurried: list[bool] = []
    signals.take_over(
        lambda signum, _frame: warm.append(signum), lambda: hurried.append(True)
    )

    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C once
    os.kill(os.getpid(), signal.SIGTERM)  # the supervisor passing it on
    os.kill(os.getpid(), signal.SIGHUP)
    assert warm == [signal.SIGINT] and hurried == []

    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again
    os.kill(os.getpid(), signal.SIGQUIT)
    assert warm == [signal.SIGINT] and hurried == [True, True]


@pytest.mark.filterwarnings("ignore:You're running the worker with superuser")
def test_the_celery_worker_keeps_its_warm_stop_under_these_rules():
    app = Celery("stop-signals", broker="memory://", set_as_current=False)
    signals = StopSignals()
    hurried: list[bool] = []
    take_over_celery_stop_signals(app, signals, lambda: hurried.append(True))
    worker = app.Worker(hostname="guarded@test", pool_cls="solo", quiet=True)
    worker.install_platform_tweaks(worker)
    for signum in STOP_SIGNALS:
        handler = signal.getsignal(signum)
        assert handler.__wrapped__.__name__ == "stop"  # type: ignore[union-attr]
    assert signals.warm is not None and signals.warm.__name__ == "worker_Warm"
    assert hurried == []
