"""Pushing again when the registry refuses a push, as two nodes pushing the same
layer at once can make it do."""

import pytest

from farm.errors import PushFailed
from workers.engine import PushResult
from workers.runner import push_with_retries


class RefusingEngine:
    """Refuses the first ``refusals`` pushes, then stores the image."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.pushes = 0

    def push(self, reference: str) -> PushResult:
        self.pushes += 1
        if self.pushes <= self.refusals:
            raise PushFailed(
                f"Pushing {reference} failed: errors:\ndigest invalid\n"
                "manifest blob unknown: blob unknown to registry\n"
            )
        return PushResult("sha256:" + "a" * 64, 1234)


def test_a_refused_push_is_pushed_again_and_the_log_says_why():
    engine = RefusingEngine(refusals=2)
    said: list[str] = []
    result = push_with_retries(engine, "r/builds:1", said.extend, pauses=(0, 0))
    assert result.digest == "sha256:" + "a" * 64
    assert engine.pushes == 3
    assert (
        said
        == [
            "Pushing r/builds:1 failed: errors: digest invalid manifest blob unknown: "
            "blob unknown to registry Pushing again in 0s."
        ]
        * 2
    )


def test_a_push_refused_every_time_fails_with_the_last_refusal():
    engine = RefusingEngine(refusals=5)
    said: list[str] = []
    with pytest.raises(PushFailed, match="blob unknown"):
        push_with_retries(engine, "r/builds:1", said.extend, pauses=(0, 0))
    assert engine.pushes == 3
    assert len(said) == 2


def test_a_push_taken_at_once_is_not_repeated():
    engine = RefusingEngine(refusals=0)
    said: list[str] = []
    push_with_retries(engine, "r/builds:1", said.extend, pauses=(0, 0))
    assert engine.pushes == 1 and said == []
