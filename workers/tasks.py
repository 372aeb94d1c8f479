"""The Celery side of a build node: the build task and the worker process."""

from __future__ import annotations

import logging

import redis
from celery import Celery

from farm.config import Settings
from farm.ledger import BuildLedger
from farm.livestate import LiveState
from farm.queue import RUN_BUILD_TASK, make_celery
from workers.engine import EngineClient
from workers.runner import BuildRunner

logger = logging.getLogger(__name__)


def make_runner(settings: Settings) -> BuildRunner:
    ledger = BuildLedger.from_url(settings.database_url)
    ledger.create_tables()
    live = LiveState(redis.Redis.from_url(settings.redis_url))
    engine = EngineClient(
        settings.engine_url, timeout_seconds=settings.build_timeout_seconds
    )
    return BuildRunner(settings, ledger, live, engine)


def make_worker_app(settings: Settings, runner: BuildRunner) -> Celery:
    """The Celery app with the build task bound to ``runner``."""
    app = make_celery(settings)

    @app.task(name=RUN_BUILD_TASK)
    def run_build(build_id: str) -> None:
        runner.run(build_id)

    return app


def run_worker(settings: Settings) -> None:
    """Run a Celery worker for this node: threads, one per concurrent build."""
    runner = make_runner(settings)
    runner.engine.ping()
    app = make_worker_app(settings, runner)
    logger.info(
        "worker=%s engine=%s: starting with %d slots",
        settings.worker_name,
        settings.engine_url,
        settings.worker_concurrency,
    )
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={settings.worker_concurrency}",
            f"--queues={settings.queue}",
            f"--hostname=farm@{settings.worker_name}",
            f"--loglevel={settings.log_level}",
            "--without-mingle",
            "--without-gossip",
        ]
    )
