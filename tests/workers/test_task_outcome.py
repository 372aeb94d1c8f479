"""What a build task tells Celery (and so Flower) once it is done with its build."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from celery.exceptions import Reject

from farm.config import Settings
from farm.ledger import BuildLedger
from farm.models import Build, BuildState
from farm.queue import RUN_BUILD_TASK
from workers.tasks import make_worker_app, outcome_of


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


def test_a_build_received_as_the_node_stops_goes_back_unstarted(tmp_path, monkeypatch):
    """A message Celery hands over just after the stop signal: rejected back to
    the queue for another node, never started on this one."""
    monkeypatch.setenv("FARM_DATABASE_URL", f"sqlite:///{tmp_path}/farm.db")
    settings = Settings.from_env()
    started: list[str] = []
    runner = SimpleNamespace(
        stopping=threading.Event(),
        run=started.append,
        ledger=BuildLedger.from_url(settings.database_url),
        live=SimpleNamespace(client=None),
        engine=None,
    )
    app, _ = make_worker_app(settings, runner)  # type: ignore[arg-type]
    runner.stopping.set()
    with pytest.raises(Reject) as rejected:
        app.tasks[RUN_BUILD_TASK].run("b1")
    assert rejected.value.requeue is True and started == []
