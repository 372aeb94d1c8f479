"""Running one build on this node, from claiming the record to pushing the image."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from farm.archives import unpack_archive
from farm.buildspec import UNTAGGED_REPOSITORY, redact_url
from farm.config import Settings
from farm.destinations import DestinationPolicy, FetchPolicy
from farm.dockerfile import parse_dockerfile
from farm.errors import (
    AttemptLost,
    BuildCancelled,
    BuildFailed,
    BuildLogTooLarge,
    BuildTimedOut,
    DiskFull,
    FarmError,
    HandedBack,
    ImageTooLarge,
    InvalidRequest,
    PushFailed,
    SourceError,
    StoreUnavailable,
)
from farm.ledger import BuildLedger, counts_as_build_step
from farm.livestate import LiveState
from farm.models import Build, BuildStage, BuildState
from farm.queue import BuildQueue
from farm.redaction import Redactor
from farm.registry import RegistryClient, split_reference
from workers.buildkit.progress import BuildProgress, Step
from workers.cache import (
    CachePlan,
    StageCache,
    plan_cache,
)
from workers.context import make_context_tar
from workers.engine import EngineClient, PushResult
from workers.source import PreparedSource, check_target, fetch_git, locate_dockerfile

logger = logging.getLogger(__name__)

STEPS_SAVE_INTERVAL_SECONDS = 2.0
CANCEL_POLL_SECONDS = 1.0
HEARTBEAT_INTERVAL_SECONDS = 5.0
DISK_CHECK_SECONDS = 5.0
PUSH_LOCK_SECONDS = 1800
# Pauses before pushing again. Two nodes pushing the same layer at once can make
# the registry refuse one of them ("blob unknown", "digest invalid"); a push is
# content-addressed, so pushing again is safe.
PUSH_RETRY_PAUSES_SECONDS = (1.0, 3.0)


class BuildLog:
    """Collects a build's log lines, mirroring them to Redis for live readers, with
    the values of its secret build args masked.

    Past ``max_bytes`` it keeps no more lines and calls ``on_limit`` once, so the
    build can be stopped: one chatty build must not fill Redis and the database.
    """

    def __init__(
        self,
        build_id: str,
        live: LiveState,
        redactor: Redactor | None = None,
        *,
        max_bytes: int | None = None,
        on_limit: Callable[[], None] = lambda: None,
    ) -> None:
        self.build_id = build_id
        self.live = live
        self.redactor = redactor or Redactor(())
        self.max_bytes = max_bytes
        self.on_limit = on_limit
        self.over_limit = False
        # A re-run continues the log of the attempts before it.
        try:
            self.lines: list[str] = live.read_log(build_id)
        except FarmError:
            self.lines = []
        self.size = sum(len(line) + 1 for line in self.lines)

    def write(self, lines: list[str]) -> None:
        if self.over_limit:
            return
        lines = self.redactor.lines(lines)
        kept = []
        for line in lines:
            self.size += len(line) + 1
            if self.max_bytes is not None and self.size > self.max_bytes:
                self.over_limit = True
                kept.append(
                    f"The log passed the farm's limit of {self.max_bytes} bytes "
                    "(FARM_MAX_LOG_BYTES); the build is stopped."
                )
                self.on_limit()
                break
            kept.append(line)
        lines = kept
        self.lines.extend(lines)
        try:
            self.live.append_log(self.build_id, lines)
        except FarmError:
            logger.warning("build=%s: live log not updated (Redis down)", self.build_id)

    def text(self) -> str:
        return "\n".join(self.lines) + ("\n" if self.lines else "")


class BuildRunner:
    """Claim a queued build, fetch its source, build, push and record the outcome."""

    def __init__(
        self,
        settings: Settings,
        ledger: BuildLedger,
        live: LiveState,
        engine: EngineClient,
        queue: BuildQueue | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        # Builds running here: how to stop each, and why it was stopped.
        self._running: dict[str, tuple[threading.Event, list[FarmError]]] = {}
        self._running_lock = threading.Lock()
        # Set once this node is stopping: it starts no build after that.
        self.stopping = threading.Event()
        self.ledger = ledger
        self.live = live
        self.engine = engine
        self.cache = StageCache(
            engine,
            RegistryClient(settings.registry, plain_http=settings.registry_http),
            live,
            pull_first=settings.registry_http,
        )
        self.destinations = DestinationPolicy.from_setting(
            settings.git_hosts,
            allow_private=settings.private_destinations,
            setting="FARM_GIT_HOSTS",
        )
        self.fetches = FetchPolicy.from_settings(settings)
        self._data_dir: str | None = None

    @property
    def workspace_root(self) -> Path:
        """This worker's own folder for sources; no other worker writes there."""
        return self.settings.work_dir / self.settings.worker_name

    def clear_workspaces(self) -> None:
        """Remove sources left by a previous run of this worker that was killed."""
        shutil.rmtree(self.workspace_root, ignore_errors=True)
        self.workspace_root.mkdir(parents=True, exist_ok=True)

    def run(self, build_id: str) -> None:
        """Run the build if it is still queued; raise EngineError, unclaimed, if this
        node's engine does not answer, so the build can go to another node."""
        worker = self.settings.worker_name
        self.engine.ping()
        build = self.ledger.claim(build_id, worker=worker)
        if build is None:
            logger.info("build=%s: not queued any more, skipped", build_id)
            return
        self.live.beat(build_id, worker=worker)
        cancel = threading.Event()
        # Why the farm stopped the build's work, when a limit did (not a person).
        stopped: list[FarmError] = []
        log = BuildLog(
            build_id,
            self.live,
            Redactor.for_build(build.build_args, build.secret_args or []),
            max_bytes=self.settings.max_log_bytes,
            on_limit=cancel.set,
        )
        log.write([f"Attempt {build.attempts} on worker {worker}"])
        watcher = threading.Thread(
            target=self._watch,
            args=(build_id, cancel, stopped),
            daemon=True,
            name=f"watch-{build_id}",
        )
        watcher.start()
        with self._running_lock:
            self._running[build_id] = (cancel, stopped)
        self.workspace_root.mkdir(parents=True, exist_ok=True)
        workspace = Path(
            tempfile.mkdtemp(prefix=f"build-{build_id}-", dir=self.workspace_root)
        )
        try:
            self._run_claimed(build, log, cancel, stopped, workspace)
        except AttemptLost as exc:
            logger.warning("build=%s: result dropped: %s", build_id, exc.message)
        finally:
            with self._running_lock:
                self._running.pop(build_id, None)
            cancel.set()
            watcher.join()
            shutil.rmtree(workspace, ignore_errors=True)
            self.live.end_beats(build_id)
            self.live.expire_log(build_id)

    def _watch(
        self, build_id: str, cancel: threading.Event, stopped: list[FarmError]
    ) -> None:
        """Beat for the build, and stop it (set ``cancel``) on a cancel request, or
        with the reason in ``stopped`` once it has run for the farm's time limit or
        the engine's disk runs low."""
        beat_at = disk_at = time.monotonic()
        deadline = beat_at + self.settings.build_timeout_seconds
        data_dir = self._engine_data_dir()
        while not cancel.wait(CANCEL_POLL_SECONDS):
            now = time.monotonic()
            if now - beat_at >= HEARTBEAT_INTERVAL_SECONDS:
                self.live.beat(build_id, worker=self.settings.worker_name)
                beat_at = now
            low = None
            if data_dir and now - disk_at >= DISK_CHECK_SECONDS:
                disk_at = now
                low = self._disk_too_low(data_dir)
            if now >= deadline:
                logger.info("build=%s: stopping at the time limit", build_id)
                limit = self.settings.build_timeout_seconds
                stopped.append(
                    BuildTimedOut(
                        f"The build ran longer than the farm's limit of {limit}s "
                        "and was stopped."
                    )
                )
                cancel.set()
            elif low is not None:
                logger.warning("build=%s: stopping: %s", build_id, low.message)
                stopped.append(low)
                cancel.set()
            elif self.live.cancel_requested(build_id):
                logger.info("build=%s: cancelling on request", build_id)
                cancel.set()

    def running_ids(self) -> list[str]:
        """The builds this node runs now."""
        with self._running_lock:
            return sorted(self._running)

    def hand_back_all(self) -> list[str]:
        """Stop every build running here and give it back to the queue, for a node
        that stays (this one is stopping); returns their ids."""
        reason = HandedBack(
            f"Worker {self.settings.worker_name} is stopping; the build goes back "
            "to the queue for another node."
        )
        with self._running_lock:
            running = dict(self._running)
        for cancel, stopped in running.values():
            stopped.append(reason)
            cancel.set()
        return list(running)

    def _hand_back(self, build: Build, log: BuildLog, reason: HandedBack) -> None:
        """Queue an attempt stopped by :meth:`hand_back_all` again, keeping its log."""
        log.write([reason.message])
        if self.queue is None or not self.ledger.requeue(
            build.id, attempt=build.attempts, on_purpose=True
        ):
            return  # handed on already (the reaper), or nowhere to send it
        self.queue.enqueue(
            build.id, queue=build.queue, priority=build.priority or "normal"
        )
        logger.info("build=%s: handed back to the queue", build.id)

    def _engine_data_dir(self) -> str:
        """The engine's data folder if this worker can see it, else ""."""
        if self._data_dir is None:
            try:
                self._data_dir = self.engine.data_dir(self.settings.engine_data_dir)
            except FarmError:
                return ""
        return self._data_dir

    def _disk_too_low(self, data_dir: str) -> DiskFull | None:
        """DiskFull if the engine's disk has less free than the farm's floor."""
        disk = os.statvfs(data_dir)
        free = disk.f_bavail * disk.f_frsize
        floor = self.settings.min_free_disk_bytes
        if free >= floor:
            return None
        return DiskFull(
            f"The engine's disk had {free} bytes free, under the farm's floor of "
            f"{floor} (FARM_MIN_FREE_DISK_BYTES); the build was stopped."
        )

    def _run_claimed(
        self,
        build: Build,
        log: BuildLog,
        cancel: threading.Event,
        stopped: list[FarmError],
        workspace: Path,
    ) -> None:
        progress: BuildProgress | None = None
        try:
            if cancel.is_set() or self.live.cancel_requested(build.id):
                raise BuildCancelled("The build was cancelled before this attempt.")
            source = self._prepare_source(build, workspace, log)
            check_target(source.dockerfile_text, build.target)
            self._check_fetches(build, source.dockerfile_text)
            progress = BuildProgress(
                dockerfile_text=source.dockerfile_text,
                on_log=log.write,
                redact=log.redactor.text,
            )
            saver = StepSaver(
                self.ledger, build.id, build.attempts, progress, log.redactor
            )
            progress.on_log = saver.wrap(log.write)
            with make_context_tar(
                source.context_dir, dockerfile=source.dockerfile
            ) as context:
                plan = self._plan_cache(build, source)
                cache_from = self.cache.available(plan) if plan else []
                if plan:
                    log.write(
                        [
                            f"Cache: importing {len(cache_from)} of "
                            f"{len(plan.refs)} stage images"
                        ]
                    )
                image_id, references = self._build(
                    build, source, context, progress, cancel, cache_from
                )
                outcome = self._push(build, image_id, references, log)
                saver.save()
                self.ledger.record_stages(
                    build.id,
                    stage_timings(
                        progress.steps, final=_final_stage(source, build.target)
                    ),
                    attempt=build.attempts,
                )
                self.ledger.finish(
                    build.id,
                    BuildState.SUCCEEDED,
                    log_text=log.text(),
                    attempt=build.attempts,
                    image_id=image_id,
                    cache_state="exporting" if plan else None,
                    **outcome,
                )
                if plan:
                    # The image is pushed and reported; sharing its cache with the
                    # other nodes follows, its lines appended to the stored log.
                    self._share_cache(
                        build, source, context, progress, plan, cache_from, log
                    )
        except AttemptLost:
            raise
        except BuildCancelled:
            if log.over_limit:
                self._fail_with(
                    build,
                    log,
                    progress,
                    BuildLogTooLarge(
                        f"The build's log passed {log.max_bytes} bytes; it was stopped."
                    ),
                )
                return
            if stopped and isinstance(stopped[0], HandedBack):
                self._hand_back(build, log, stopped[0])
                return
            if stopped:
                self._fail_with(build, log, progress, stopped[0])
                return
            self._fail(
                build,
                log,
                progress,
                BuildState.CANCELLED,
                {"code": "cancelled", "message": "The build was cancelled."},
            )
        except BuildFailed as exc:
            self._fail(
                build,
                log,
                progress,
                BuildState.FAILED,
                {
                    "code": exc.code,
                    "message": exc.message,
                    "stage": exc.stage,
                    "dockerfile_line": exc.dockerfile_line,
                    "step": exc.step,
                },
            )
        except FarmError as exc:
            self._fail_with(build, log, progress, exc)

    def _fail_with(
        self,
        build: Build,
        log: BuildLog,
        progress: BuildProgress | None,
        exc: FarmError,
    ) -> None:
        self._fail(
            build,
            log,
            progress,
            BuildState.FAILED,
            {"code": exc.code, "message": exc.message},
        )

    def _fail(
        self,
        build: Build,
        log: BuildLog,
        progress: BuildProgress | None,
        state: BuildState,
        error: dict[str, Any],
    ) -> None:
        error = {
            key: log.redactor.text(value) if isinstance(value, str) else value
            for key, value in error.items()
        }
        log.write(
            [f"ERROR: {error['message']}"]
            if state == BuildState.FAILED
            else ["Build cancelled."]
        )
        steps = _steps_as_dicts(progress, log.redactor)
        self.ledger.record_steps(build.id, steps, attempt=build.attempts)
        self.ledger.finish(
            build.id, state, log_text=log.text(), attempt=build.attempts, error=error
        )
        logger.info("build=%s: %s: %s", build.id, state.value, error["message"])

    def _check_fetches(self, build: Build, dockerfile_text: str) -> None:
        """Refuse to build a Dockerfile that would make the engine fetch from a
        host the farm may not reach (checked again here: a git source's
        Dockerfile is first seen on the node)."""
        try:
            dockerfile = parse_dockerfile(dockerfile_text)
        except InvalidRequest:
            return  # BuildKit reports a Dockerfile it cannot read better than we can
        try:
            self.fetches.check(dockerfile, build.build_args or {})
        except InvalidRequest as exc:
            raise BuildFailed(
                exc.message, dockerfile_line=exc.details.get("line")
            ) from exc

    def _prepare_source(
        self, build: Build, workspace: Path, log: BuildLog
    ) -> PreparedSource:
        root = workspace / "source"
        if build.source_kind == "git":
            assert build.git_url and build.git_ref
            try:
                self.destinations.check_url(build.git_url, field="git_url")
            except InvalidRequest as exc:
                raise SourceError(exc.message) from exc
            log.write([f"Fetching {redact_url(build.git_url)} at {build.git_ref}"])
            commit = fetch_git(
                build.git_url,
                build.git_ref,
                root,
                allow_file=self.settings.allow_file_urls,
                commit=build.git_commit,
            )
            self.ledger.record_commit(build.id, commit)
            log.write([f"Checked out commit {commit}"])
        else:
            assert build.archive_sha256
            log.write([f"Unpacking uploaded archive {build.archive_sha256[:12]}"])
            unpack_archive(
                self.ledger.load_archive(build.archive_sha256),
                root,
                max_unpacked_bytes=self.settings.max_source_bytes,
            )
        return locate_dockerfile(root, build.context, build.dockerfile)

    def _share_cache(
        self,
        build: Build,
        source: PreparedSource,
        context: IO[bytes],
        progress: BuildProgress,
        plan: CachePlan,
        cache_from: list[str],
        log: BuildLog,
    ) -> None:
        lines: list[str] = []
        if _all_cached(progress) and len(cache_from) == len(plan.refs):
            lines.append(
                "Cache: every step came from the shared cache; nothing new to export"
            )
        else:
            sizes = self.cache.export(
                plan,
                context,
                dockerfile=source.dockerfile,
                build_args=build.build_args,
                cache_from=cache_from,
                log=lines.extend,
            )
            self.ledger.record_stage_sizes(build.id, sizes)
        log.write(lines)
        self.ledger.append_log(build.id, log.redactor.lines(lines))
        self.ledger.record_cache_state(build.id, "shared")

    def _plan_cache(self, build: Build, source: PreparedSource) -> CachePlan | None:
        if not self.settings.stage_cache:
            return None
        try:
            return plan_cache(
                build, parse_dockerfile(source.dockerfile_text), self.settings.registry
            )
        except InvalidRequest:
            return None  # BuildKit will say what is wrong with the Dockerfile

    def _build(
        self,
        build: Build,
        source: PreparedSource,
        context: IO[bytes],
        progress: BuildProgress,
        cancel: threading.Event,
        cache_from: list[str],
    ) -> tuple[str, list[str]]:
        tags = build.tags or [f"{UNTAGGED_REPOSITORY}:{build.id}"]
        references = [f"{self.settings.registry}/{tag}" for tag in tags]
        # Built under a name of its own: another build on this engine may be
        # pushing the same tags right now (the tags are set under a lock at push).
        image_id = self.engine.build(
            context,
            dockerfile=source.dockerfile,
            tags=[local_name(build.id)],
            target=build.target,
            build_args=build.build_args,
            cache_from=cache_from,
            progress=progress,
            cancel=cancel,
        )
        return image_id, references

    def _push(
        self, build: Build, image_id: str, references: list[str], log: BuildLog
    ) -> dict[str, Any]:
        size = self.engine.image_size(image_id)
        if size > self.settings.max_image_bytes:
            raise ImageTooLarge(
                f"The image is {size} bytes, over the farm's limit of "
                f"{self.settings.max_image_bytes} (FARM_MAX_IMAGE_BYTES); it was not "
                "pushed."
            )
        digest = ""
        push_started = time.monotonic()
        for reference in references:
            log.write([f"Pushing {reference}"])
            started = time.monotonic()
            lock = f"push:{self.settings.engine_url}:{reference}"
            with self.live.locked(lock, seconds=PUSH_LOCK_SECONDS):
                # A build handed to another node meanwhile is that node's to push.
                if not self.ledger.holds(build.id, attempt=build.attempts):
                    raise AttemptLost(
                        f"Build {build.id} attempt {build.attempts} was handed to "
                        "another node before its push."
                    )
                self.engine.tag(image_id, reference)
                result = push_with_retries(self.engine, reference, log.write)
            digest = result.digest
            log.write(
                [f"Pushed {reference}@{digest} in {time.monotonic() - started:.1f}s"]
            )
        push_seconds = time.monotonic() - push_started
        self.engine.remove_image(local_name(build.id))
        return {
            "image_references": references,
            "image_digest": digest,
            "image_size_bytes": size,
            "image_pushed_bytes": self._pushed_bytes(build, references[-1], digest),
            "push_seconds": push_seconds,
        }

    def _pushed_bytes(self, build: Build, reference: str, digest: str) -> int | None:
        """What the pushed image holds in the registry; None, and a warning, if the
        registry does not say (the build has succeeded all the same)."""
        _, name, _ = split_reference(reference)
        try:
            return self.cache.registry.pushed_bytes(name, digest)
        except StoreUnavailable as exc:
            logger.warning("build=%s: pushed size not read: %s", build.id, exc.message)
            return None


def push_with_retries(
    engine: EngineClient,
    reference: str,
    say: Callable[[list[str]], None],
    pauses: tuple[float, ...] = PUSH_RETRY_PAUSES_SECONDS,
) -> PushResult:
    """Push ``reference``, pushing again after each pause in ``pauses`` while the
    registry refuses (each refusal is told to ``say``); the last one is raised."""
    for pause in pauses:
        try:
            return engine.push(reference)
        except PushFailed as exc:
            reason = " ".join(str(exc).split()) or "no reason given"
            say([f"{reason} Pushing again in {pause:g}s."])
            time.sleep(pause)
    return engine.push(reference)


def stage_timings(steps: list[Step], *, final: str) -> list[BuildStage]:
    """Each Dockerfile stage's time: how long its own steps ran, added up (not
    the wait for stages it copies from), with its steps counted; ``final`` names
    the image's stage."""
    timings = []
    for stage in dict.fromkeys(step.stage for step in steps if step.stage):
        own = [
            step
            for step in steps
            if step.stage == stage and counts_as_build_step(asdict(step))
        ]
        ran = [
            (step.completed_at - step.started_at).total_seconds()
            for step in own
            if step.started_at and step.completed_at
        ]
        if not ran:
            continue
        timings.append(
            BuildStage(
                stage=stage,
                role="final" if stage.lower() == final.lower() else "builder",
                duration_seconds=max(0.0, sum(ran)),
                steps_total=len(own),
                steps_cached=sum(1 for step in own if step.cached),
            )
        )
    return timings


def _final_stage(source: PreparedSource, target: str | None) -> str:
    """The label of the stage the image is made from: the target, else the last."""
    try:
        dockerfile = parse_dockerfile(source.dockerfile_text)
    except InvalidRequest:  # BuildKit read it; our stricter reader need not
        return target or ""
    stage = dockerfile.stage(target) if target else dockerfile.stages[-1]
    return stage.label if stage else target or ""


def local_name(build_id: str) -> str:
    """The name a build's image has in its engine until its tags are pushed."""
    return f"farm-build/{build_id}:latest"


class StepSaver:
    """Saves a running build's steps to the ledger every few seconds, while its
    attempt still holds the build."""

    def __init__(
        self,
        ledger: BuildLedger,
        build_id: str,
        attempt: int,
        progress: BuildProgress,
        redactor: Redactor,
    ) -> None:
        self.ledger = ledger
        self.build_id = build_id
        self.attempt = attempt
        self.progress = progress
        self.redactor = redactor
        self.saved_at = 0.0

    def wrap(self, write: Any) -> Any:
        def write_and_maybe_save(lines: list[str]) -> None:
            write(lines)
            if time.monotonic() - self.saved_at >= STEPS_SAVE_INTERVAL_SECONDS:
                self.save()

        return write_and_maybe_save

    def save(self) -> None:
        self.saved_at = time.monotonic()
        self.ledger.record_steps(
            self.build_id,
            _steps_as_dicts(self.progress, self.redactor),
            attempt=self.attempt,
        )


def _all_cached(progress: BuildProgress) -> bool:
    steps = [step for step in _steps_as_dicts(progress) if counts_as_build_step(step)]
    return all(step.get("cached") for step in steps)


def _steps_as_dicts(
    progress: BuildProgress | None, redactor: Redactor | None = None
) -> list[dict[str, Any]]:
    if progress is None:
        return []
    return [_jsonable(asdict(step), redactor) for step in progress.steps]


def _jsonable(step: dict[str, Any], redactor: Redactor | None) -> dict[str, Any]:
    masked = redactor.text if redactor else str
    return {
        key: value.isoformat()
        if hasattr(value, "isoformat")
        else masked(value)
        if isinstance(value, str)
        else value
        for key, value in step.items()
    }
