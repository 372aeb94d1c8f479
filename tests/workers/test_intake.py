"""The intake's logic: closing and opening once per change, per queue, and trying
again when the broker could not be told."""

from types import SimpleNamespace

import redis

from workers.intake import Intake


class Control:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, list[str]]] = []
        self.broker_down = False

    def _send(self, command: str, queue: str, destination: list[str]) -> None:
        if self.broker_down:
            raise redis.ConnectionError("down")
        self.sent.append((command, queue, destination))

    def cancel_consumer(self, queue, *, destination, reply):
        assert reply is False
        self._send("cancel", queue, destination)

    def add_consumer(self, queue, *, destination, reply):
        assert reply is False
        self._send("add", queue, destination)


def intake() -> tuple[Intake, Control]:
    control = Control()
    app = SimpleNamespace(control=control)
    return Intake(app, "farm@a", ["builds", "arm"]), control  # type: ignore[arg-type]


def test_an_engine_down_closes_every_queue_once_and_its_return_opens_them():
    gate, control = intake()
    gate.follow("engine refused the connection")
    gate.follow("engine refused the connection")
    assert gate.closed
    gate.follow("ok")
    gate.follow("ok")
    assert not gate.closed
    assert control.sent == [
        ("cancel", "builds", ["farm@a"]),
        ("cancel", "arm", ["farm@a"]),
        ("add", "builds", ["farm@a"]),
        ("add", "arm", ["farm@a"]),
    ]


def test_a_close_the_broker_missed_is_tried_again_on_the_next_beat():
    gate, control = intake()
    control.broker_down = True
    gate.close("engine down")
    assert not gate.closed and control.sent == []
    control.broker_down = False
    gate.follow("engine down")
    assert gate.closed and len(control.sent) == 2
