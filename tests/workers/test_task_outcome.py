"""What a build task tells Celery (and so Flower) once it is done with its build."""

from __future__ import annotations

from farm.models import Build, BuildState
from workers.tasks import outcome_of


def build(state: BuildState, failure: str | None, message: str | None = None) -> Build:
    error = {"code": "x", "message": message} if message is not None else None
    return Build(id="b1", state=state, failure=failure, error=error)


def test_a_build_that_did_not_succeed_fails_its_task_with_the_reason():
    failed = outcome_of(build(BuildState.FAILED, "dockerfile", "RUN exit 3 failed"))
    assert str(failed) == "build b1 failed (dockerfile): RUN exit 3 failed"
    cancelled = outcome_of(build(BuildState.CANCELLED, "cancelled"))
    assert str(cancelled) == "build b1 cancelled (cancelled)"


def test_a_build_that_succeeded_or_still_runs_leaves_its_task_succeeded():
    assert outcome_of(build(BuildState.SUCCEEDED, "none")) is None
    assert outcome_of(build(BuildState.RUNNING, None)) is None  # another node has it
    assert outcome_of(build(BuildState.QUEUED, None)) is None
