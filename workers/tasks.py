"""The Celery side of a build node: the build task and the worker process."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import docker
from celery import Celery
from celery.exceptions import Reject
from celery.signals import worker_ready, worker_shutting_down
from celery.worker import state as worker_state

from farm.builds import describe_build
from farm.callbacks import CallbackSender
from farm.config import Settings
from farm.destinations import DestinationPolicy
from farm.errors import EngineError, FarmError
from farm.ledger import BuildLedger
from farm.livestate import LiveState, redis_for
from farm.models import FINAL_STATES, Build, BuildState
from farm.queue import RUN_BUILD_TASK, SMOKE_GROUP_TASK, BuildQueue, make_celery
from farm.registry import RegistryClient
from farm.smoke import GroupSmoke
from workers.baseimages import BASE_IMAGES, pull_base_images
from workers.baseimages.engine import image_exists
from workers.baseimages.registry import registry_ref
from workers.engine import EngineClient
from workers.intake import Intake
from workers.reaper import LostBuildReaper
from workers.retention import CacheRetention, RetentionPolicy
from workers.runner import BuildRunner
from workers.smoke import SmokeTester
from workers.stop_signals import StopSignals, take_over_celery_stop_signals

logger = logging.getLogger(__name__)

WORKER_BEAT_SECONDS = 10
DISK_MEASURE_SECONDS = 60
ENGINE_HEALTH_TIMEOUT_SECONDS = 5
HAND_BACK_PAUSE_SECONDS = 1.0


class BuildDidNotSucceed(Exception):
    """Raised by the build task after a build it ran failed or was cancelled, so
    Celery's events (and Flower) show the task as failed, with the reason. The
    build's record is complete by then; the message is acknowledged as for a
    success (Celery acknowledges a late-acked task that raised)."""


def outcome_of(record: Build) -> BuildDidNotSucceed | None:
    """What the task reports of its build once done with it: a failure if the build
    ended without success, whoever ended it (this node, a person cancelling it
    while it waited, a sweep after its node died); nothing while another node
    still runs it."""
    if record.state not in FINAL_STATES or record.state == BuildState.SUCCEEDED:
        return None
    said = (record.error or {}).get("message")
    reason = f"build {record.id} {record.state} ({record.failure or 'unknown'})"
    return BuildDidNotSucceed(f"{reason}: {said}"[:500] if said else reason)


def make_runner(settings: Settings) -> BuildRunner:
    ledger = BuildLedger.from_url(settings.database_url)
    ledger.create_tables()
    live = LiveState(redis_for(settings))
    engine = EngineClient(
        settings.engine_url, timeout_seconds=settings.build_timeout_seconds
    )
    queue = BuildQueue(make_celery(settings), live.client)
    return BuildRunner(settings, ledger, live, engine, queue)


def make_callback_sender(settings: Settings, ledger: BuildLedger) -> CallbackSender:
    return CallbackSender(
        ledger,
        secret=settings.callback_secret,
        policy=DestinationPolicy.from_setting(
            settings.callback_hosts, allow_private=settings.private_destinations
        ),
        describe=describe_build,
    )


def worker_hostname(settings: Settings) -> str:
    """The node's name as Celery knows it (in events, Flower and remote control)."""
    return f"farm@{settings.worker_name}"


def make_worker_app(settings: Settings, runner: BuildRunner) -> tuple[Celery, Intake]:
    """The Celery app with the build and smoke test tasks bound to ``runner``, and
    the intake that stops it taking builds while its engine is down."""
    app = make_celery(settings)
    intake = Intake(app, worker_hostname(settings), settings.queue_names)

    def hand_back(exc: EngineError) -> NoReturn:
        """Put the task back in its queue and take no more while the engine is
        down; the pause lets the intake close before the message is back."""
        intake.close(exc.message)
        time.sleep(HAND_BACK_PAUSE_SECONDS)
        raise Reject(exc.message, requeue=True) from exc

    groups = GroupSmoke(runner.ledger, BuildQueue(app, runner.live.client))
    tester = SmokeTester(settings, runner.ledger, runner.engine)
    callbacks = make_callback_sender(settings, runner.ledger)

    @app.task(name=RUN_BUILD_TASK, throws=(BuildDidNotSucceed,))
    def run_build(build_id: str) -> None:
        if runner.stopping.is_set():
            # Received just as this node began to stop: another node runs it.
            logger.info(
                "build=%s worker=%s: stopping; sent back to the queue unstarted",
                build_id,
                settings.worker_name,
            )
            raise Reject("this node is stopping", requeue=True)
        try:
            runner.run(build_id)
        except EngineError as exc:
            # The build was not claimed: back to the queue at once, for a node
            # whose engine answers; this one takes none until its engine does.
            logger.warning(
                "build=%s worker=%s: engine down, handed back: %s",
                build_id,
                settings.worker_name,
                exc.message,
            )
            hand_back(exc)
        try:
            groups.advance_groups_of(build_id)
            callbacks.deliver_due(build_id=build_id)
            failed = outcome_of(runner.ledger.get(build_id))
        except FarmError as exc:
            logger.warning(
                "build=%s: groups or callbacks left to the sweep: %s",
                build_id,
                exc.message,
            )
            return
        if failed is not None:
            raise failed

    @app.task(name=SMOKE_GROUP_TASK)
    def smoke_group(group_id: str) -> None:
        try:
            tester.run(group_id)
        except EngineError as exc:
            # Raised before the test was claimed: back to the queue, as a build.
            logger.warning("group=%s: engine down, handed back: %s", group_id, exc)
            hand_back(exc)

    return app, intake


@dataclass(frozen=True)
class NodeStop:
    """What a stopping worker asks of its housekeeping."""

    hand_back_now: Callable[[], None]  # asked again: cut the drain short
    depart: Callable[[], None]  # Celery has stopped: leave the node list


def start_housekeeping(
    settings: Settings, runner: BuildRunner, app: Celery, intake: Intake
) -> NodeStop:
    """Once the worker consumes: beat for it (taking builds only while its engine
    answers), sweep for dead workers' builds and keep the caches in bounds, each in
    a thread of its own."""
    queue = BuildQueue(app, runner.live.client)
    reaper = LostBuildReaper(
        runner.ledger,
        runner.live,
        queue,
        groups=GroupSmoke(runner.ledger, queue),
        callbacks=make_callback_sender(settings, runner.ledger),
    )
    retention = CacheRetention(
        settings.worker_name,
        runner.engine,
        runner.cache.registry,
        runner.live,
        RetentionPolicy(
            engine_cache_keep_bytes=settings.engine_cache_keep_bytes,
            cache_image_days=settings.cache_image_days,
        ),
    )
    stop = threading.Event()  # housekeeping other than the beat: set on leaving
    leaving = threading.Event()  # draining: no new build, running ones go on
    gone = threading.Event()  # left the node list: no more beats
    hurry = threading.Event()  # stop asked again: hand running builds back now
    # Held while beating and while leaving, so no beat lands after the node left.
    beating = threading.Lock()
    last_engine = ["ok"]

    # Its own client with a short timeout: a hung engine must not stop the beats,
    # or the node would look down rather than its engine.
    health_check = EngineClient(
        settings.engine_url, timeout_seconds=ENGINE_HEALTH_TIMEOUT_SECONDS
    )
    disk: dict[str, int] = {}

    def engine_health() -> str:
        try:
            health_check.ping()
        except FarmError as exc:
            return exc.message
        return "ok"

    def measure_disk_forever() -> None:
        while True:
            try:
                disk.update(runner.engine.disk_usage(settings.engine_data_dir))
            except FarmError as exc:
                logger.warning("worker: disk usage not read: %s", exc.message)
            if stop.wait(DISK_MEASURE_SECONDS):
                return

    def beat_now() -> None:
        """Say this node is up, with its figures; the caller holds ``beating``."""
        runner.live.beat_worker(
            settings.worker_name,
            queues=settings.queue_names,
            slots=settings.worker_concurrency,
            engine=last_engine[0],
            disk=dict(disk),
            holding=held_builds(),
            running=runner.running_ids(),
            draining=leaving.is_set(),
        )

    def beat_forever() -> None:
        while True:
            last_engine[0] = engine_health()
            if not leaving.is_set():  # a stopping worker consumes no more
                intake.follow(last_engine[0])
            with beating:
                if gone.is_set():
                    return
                beat_now()
            if gone.wait(WORKER_BEAT_SECONDS):
                return

    beat = threading.Thread(target=beat_forever, daemon=True, name="beat")

    def leave(**_: object) -> None:
        """Say at once that this node is draining, so it counts neither as down
        nor as capacity; let the builds running here finish within the drain
        time, then hand back those still running (Celery takes no new task once
        it is stopping). It leaves the node list when Celery has stopped.

        Runs in the main thread, in the first stop signal's handler (later ones
        do not reach Celery's: see ``workers.stop_signals``)."""
        if leaving.is_set():
            return
        leaving.set()
        runner.stopping.set()
        stop.set()
        with beating:
            if not gone.is_set():
                beat_now()
        threading.Thread(target=drain, daemon=True, name="drain").start()

    def depart() -> None:
        """Once Celery has stopped (its builds ended or went back to the queue):
        stop beating and leave the node list, if this was a stop on purpose."""
        if not leaving.is_set():
            return  # it failed: the node shows as down until started again
        with beating:
            gone.set()
            runner.live.leave(settings.worker_name)

    def drain() -> None:
        logger.info(
            "worker=%s: stopping; running builds may finish within %ss "
            "(FARM_DRAIN_SECONDS), then go back to the queue",
            settings.worker_name,
            settings.drain_seconds,
        )
        if hurry.wait(settings.drain_seconds):
            logger.warning(
                "worker=%s: asked again to stop; handing running builds back now",
                settings.worker_name,
            )
        handed = runner.hand_back_all()
        if handed:
            logger.warning(
                "worker=%s: handed back %s", settings.worker_name, ", ".join(handed)
            )

    def start(**_: object) -> None:
        interval = settings.reap_interval_seconds
        beat.start()
        threading.Thread(target=measure_disk_forever, daemon=True, name="disk").start()
        threading.Thread(
            target=reaper.run_forever,
            kwargs={"stop": stop, "interval_seconds": interval},
            daemon=True,
            name="reaper",
        ).start()
        threading.Thread(
            target=retention.run_forever,
            kwargs={
                "stop": stop,
                "interval_seconds": settings.retention_interval_seconds,
            },
            daemon=True,
            name="retention",
        ).start()

    worker_ready.connect(start, weak=False)
    worker_shutting_down.connect(leave, weak=False)
    return NodeStop(hand_back_now=hurry.set, depart=depart)


def held_builds() -> list[str]:
    """The builds whose messages this worker has received and not yet finished:
    waiting for a slot, or running."""
    requests = list(worker_state.requests.values())
    return sorted(
        str(request.args[0])
        for request in requests
        if request.task_name == RUN_BUILD_TASK and request.args
    )


def fetch_missing_base_images(settings: Settings) -> None:
    """Pull from the farm registry any base image this node's engine lacks, so a
    new node builds the same FROM lines as the others, with the same digests."""
    api = docker.APIClient(base_url=settings.engine_url, timeout=600)
    registry = RegistryClient(settings.registry, plain_http=settings.registry_http)
    try:
        missing = [name for name in BASE_IMAGES if not image_exists(api, name)]
        seeded = [
            name
            for name in missing
            if registry.has_tag(registry_ref(settings.registry, name))
        ]
        if seeded:
            logger.info(
                "worker=%s: pulling base images %s",
                settings.worker_name,
                ", ".join(seeded),
            )
            pull_base_images(api, settings.registry, names=seeded)
    except FarmError as exc:
        logger.warning(
            "worker=%s: base images not fetched: %s", settings.worker_name, exc.message
        )
    finally:
        api.close()


def wait_for_engine(settings: Settings, runner: BuildRunner) -> None:
    """Until the engine answers, take no build and beat as a node whose engine
    is down (rather than exit, and be started again, over and over)."""
    health_check = EngineClient(
        settings.engine_url, timeout_seconds=ENGINE_HEALTH_TIMEOUT_SECONDS
    )
    while True:
        try:
            health_check.ping()
            return
        except EngineError as exc:
            logger.warning(
                "worker=%s: the engine does not answer; waiting for it: %s",
                settings.worker_name,
                exc.message,
            )
            runner.live.beat_worker(
                settings.worker_name,
                queues=settings.queue_names,
                slots=settings.worker_concurrency,
                engine=exc.message,
            )
        time.sleep(WORKER_BEAT_SECONDS)


def leave_on_stop_signals(
    settings: Settings, runner: BuildRunner, signals: StopSignals
) -> None:
    """Until Celery consumes, a stop signal leaves the node list and exits at
    once: no build has been taken yet."""

    def leave_now(_signum: int, _frame: object) -> NoReturn:
        runner.live.leave(settings.worker_name)
        logger.info("worker=%s: stopped before taking builds", settings.worker_name)
        raise SystemExit(0)

    signals.on_stop(leave_now)


def run_worker(settings: Settings) -> None:
    """Run a Celery worker for this node: threads, one per concurrent build."""
    runner = make_runner(settings)
    signals = StopSignals()
    leave_on_stop_signals(settings, runner, signals)
    runner.clear_workspaces()
    wait_for_engine(settings, runner)
    SmokeTester(settings, runner.ledger, runner.engine).clear_leftovers()
    fetch_missing_base_images(settings)
    app, intake = make_worker_app(settings, runner)
    stopping = start_housekeeping(settings, runner, app, intake)
    take_over_celery_stop_signals(app, signals, stopping.hand_back_now)
    logger.info(
        "worker=%s engine=%s: starting with %d slots",
        settings.worker_name,
        settings.engine_url,
        settings.worker_concurrency,
    )
    try:
        app.worker_main(
            [
                "worker",
                "--pool=threads",
                f"--concurrency={settings.worker_concurrency}",
                f"--queues={','.join(settings.queue_names)}",
                f"--hostname={worker_hostname(settings)}",
                f"--loglevel={settings.log_level}",
                "--without-mingle",
                "--without-gossip",
            ]
        )
    finally:  # Celery exits by SystemExit, warm or cold
        stopping.depart()
