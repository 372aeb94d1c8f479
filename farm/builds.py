"""Taking build requests: record, enqueue, cancel, and describe builds."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from farm.archives import (
    DEFAULT_MAX_UNPACKED_BYTES,
    check_archive,
    read_file,
    require_paths,
)
from farm.buildspec import (
    ArchiveSource,
    BuildSpec,
    GitSource,
    Source,
    clean_priority,
    clean_queue,
    input_key,
    parse_git_source,
    parse_spec,
    project_name,
    redact_url,
)
from farm.callbacks import clean_callback_url
from farm.config import Settings
from farm.destinations import DestinationPolicy, FetchPolicy
from farm.dockerfile import check_before_build
from farm.errors import Conflict, FarmError, InvalidRequest, StoreUnavailable
from farm.git import resolve_ref
from farm.ledger import BuildLedger, as_utc, counts_as_build_step
from farm.livestate import LiveState, redis_for
from farm.models import Build, BuildState
from farm.queue import BuildQueue, make_celery
from farm.redaction import (
    Redactor,
    masked_args,
    secret_arg_names,
    secret_warnings,
)

logger = logging.getLogger(__name__)


ACTIVE_STATES = (BuildState.QUEUED, BuildState.RUNNING)
FOLLOW_POLL_SECONDS = 0.5
SUBMIT_LOCK_SECONDS = 30


def _first(builds: list[Build], *states: str) -> Build | None:
    return next((build for build in builds if build.state in states), None)


@dataclass(frozen=True)
class Submission:
    """What a build request led to: a new build, or an existing one joined or reused."""

    build: Build
    outcome: str  # "created", "joined" or "reused"

    @property
    def created(self) -> bool:
        return self.outcome == "created"


class BuildService:
    """The operations the web app and API offer on builds."""

    def __init__(
        self,
        ledger: BuildLedger,
        queue: BuildQueue,
        live: LiveState,
        *,
        queues: list[str],
        allow_file_urls: bool = False,
        max_archive_bytes: int = 256 * 1024 * 1024,
        max_source_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
        resolve_ref: Callable[[str, str], str | None] | None = None,
        destinations: DestinationPolicy | None = None,
        callback_destinations: DestinationPolicy | None = None,
        fetches: FetchPolicy | None = None,
        callback_secret: str = "",
        secret_args: Sequence[str] = (),
    ) -> None:
        self.ledger = ledger
        self.secret_args = list(secret_args)
        self.queue = queue
        self.live = live
        self.queues = queues
        self.allow_file_urls = allow_file_urls
        self.max_archive_bytes = max_archive_bytes
        self.max_source_bytes = max_source_bytes
        self.resolve_ref = resolve_ref
        self.destinations = destinations or DestinationPolicy()
        self.callback_destinations = callback_destinations or DestinationPolicy()
        self.fetches = fetches or FetchPolicy()
        self.callback_secret = callback_secret

    @classmethod
    def from_settings(cls, settings: Settings) -> BuildService:
        """The service over the database, queue and Redis that ``settings`` name
        (nothing is connected to until it is used)."""
        ledger = BuildLedger.from_url(settings.database_url)
        ledger.create_tables()
        redis_client = redis_for(settings)
        return cls(
            ledger,
            BuildQueue(make_celery(settings), redis_client),
            LiveState(redis_client),
            queues=settings.queue_names,
            allow_file_urls=settings.allow_file_urls,
            max_archive_bytes=settings.max_archive_bytes,
            max_source_bytes=settings.max_source_bytes,
            resolve_ref=partial(resolve_ref, allow_file=settings.allow_file_urls),
            destinations=DestinationPolicy.from_setting(
                settings.git_hosts,
                allow_private=settings.private_destinations,
                setting="FARM_GIT_HOSTS",
            ),
            callback_destinations=DestinationPolicy.from_setting(
                settings.callback_hosts,
                allow_private=settings.private_destinations,
                setting="FARM_CALLBACK_HOSTS",
            ),
            fetches=FetchPolicy.from_settings(settings),
            callback_secret=settings.callback_secret,
            secret_args=settings.secret_args.split(","),
        )

    def submit_git(
        self,
        options: Mapping[str, Any],
        *,
        url: Any,
        ref: Any,
        reuse: bool = False,
        submitted_by: str | None = None,
    ) -> Submission:
        """Validate and submit a build of a git repository at a ref.

        The ref is resolved to a commit now, so the build runs exactly what was
        asked for even if the branch moves before a worker gets to it.
        """
        source = parse_git_source(url, ref, allow_file_urls=self.allow_file_urls)
        spec = parse_spec(options, source)
        route = self.route(options)  # every check before git is asked anything
        callback = self.callback_url(options)
        commit = self.resolve_commit(source)
        submission = self.submit(
            spec, route, commit=commit, reuse=reuse, submitted_by=submitted_by
        )
        return self._with_callback(submission, callback)

    def callback_url(self, options: Mapping[str, Any]) -> str | None:
        """The request's ``callback_url``, checked (None if it has none)."""
        return clean_callback_url(
            options.get("callback_url"),
            policy=self.callback_destinations,
            secret=self.callback_secret,
        )

    def _with_callback(self, submission: Submission, url: str | None) -> Submission:
        """Record that ``url`` is told when the build (new, joined or reused) ends."""
        if url is not None:
            self.ledger.add_callback(submission.build.id, url)
        return submission

    def resolve_commit(self, source: GitSource) -> str | None:
        """The commit the ref names now, once the farm may reach the git host."""
        self.destinations.check_url(source.url, field="git_url")
        return self.resolve_ref(source.url, source.ref) if self.resolve_ref else None

    def submit_archive(
        self,
        options: Mapping[str, Any],
        *,
        content: bytes,
        filename: str = "",
        reuse: bool = False,
        submitted_by: str | None = None,
    ) -> Submission:
        """Validate everything, then keep the archive and submit its build."""
        if not content:
            raise InvalidRequest("The uploaded archive is empty.", field="archive")
        if len(content) > self.max_archive_bytes:
            raise InvalidRequest(
                f"The archive is larger than {self.max_archive_bytes} bytes.",
                field="archive",
            )
        paths = check_archive(content, max_unpacked_bytes=self.max_source_bytes)
        source = ArchiveSource(
            sha256=hashlib.sha256(content).hexdigest(),
            size_bytes=len(content),
            filename=filename,
        )
        spec = parse_spec(options, source)
        require_paths(
            paths, context=spec.context, dockerfile=spec.dockerfile_in_context
        )
        self.check_uploaded_dockerfile(content, spec)
        route = self.route(options)
        callback = self.callback_url(options)
        self.ledger.store_archive(content, filename=filename)
        try:
            submission = self.submit(
                spec, route, reuse=reuse, submitted_by=submitted_by
            )
        except FarmError:
            # Nothing half-written: an archive whose build was not taken goes too.
            self.ledger.forget_archive_if_unused(source.sha256)
            raise
        return self._with_callback(submission, callback)

    def check_uploaded_dockerfile(self, content: bytes, spec: BuildSpec) -> None:
        """The Dockerfile is at hand in an upload: what is wrong with it, or what
        it would fetch that the farm may not reach, is said now rather than by a
        failed build (a git source's is only read once a node fetched it)."""
        text = read_file(content, spec.dockerfile_in_context)
        if text is None:
            return
        dockerfile = check_before_build(text, spec.target)
        try:
            self.fetches.check(dockerfile, spec.build_args)
        except InvalidRequest as exc:
            # A refused URL may hold a secret build arg's value: mask it.
            secret = secret_arg_names(spec.build_args, self.secret_args)
            redactor = Redactor.for_build(spec.build_args, secret)
            raise InvalidRequest(
                redactor.text(exc.message), **{**exc.details, "field": "dockerfile"}
            ) from exc

    def route(self, options: Mapping[str, Any]) -> tuple[str, str]:
        """The queue and priority a request asks for, checked."""
        return (
            clean_queue(options.get("queue"), self.queues),
            clean_priority(options.get("priority")),
        )

    def submit(
        self,
        spec: BuildSpec,
        route: tuple[str, str] | None = None,
        *,
        commit: str | None = None,
        reuse: bool = False,
        submitted_by: str | None = None,
    ) -> Submission:
        """Join a build of the same inputs and tags, reuse a finished one if asked,
        or record a new build and enqueue it.

        If the queue cannot take a new build, its record is removed again, so a
        client that retries after the 503 leaves no failed builds behind.
        """
        queue, priority = route or self.route({})
        key = input_key(spec, commit)
        if key is None:
            return Submission(
                self._create(spec, queue, priority, None, commit, submitted_by),
                "created",
            )
        # One request at a time per inputs, or two at once would both create.
        with self.live.locked(f"submit:{key}", seconds=SUBMIT_LOCK_SECONDS):
            same = [
                b for b in self.ledger.find_by_inputs(key) if b.tags == list(spec.tags)
            ]
            if reuse and (done := _first(same, BuildState.SUCCEEDED)) is not None:
                return Submission(done, "reused")
            active = _first(same, *ACTIVE_STATES)
            # An urgent request does not wait behind a normal build it would join.
            if (
                active is not None
                and active.queue == queue
                and not (priority == "urgent" and active.priority != "urgent")
            ):
                logger.info("build=%s: joined by an identical request", active.id)
                return Submission(active, "joined")
            return Submission(
                self._create(spec, queue, priority, key, commit, submitted_by),
                "created",
            )

    def _create(
        self,
        spec: BuildSpec,
        queue: str,
        priority: str,
        key: str | None,
        commit: str | None,
        submitted_by: str | None,
    ) -> Build:
        build = self.ledger.create(
            spec,
            queue=queue,
            priority=priority,
            input_key=key,
            git_commit=commit,
            submitted_by=submitted_by,
            secret_args=secret_arg_names(spec.build_args, self.secret_args),
        )
        try:
            self.queue.enqueue(build.id, queue=queue, priority=priority)
        except StoreUnavailable:
            self.ledger.discard(build.id)
            raise
        return build

    def retry(self, build_id: str, *, submitted_by: str | None = None) -> Submission:
        """A new build of an ended build's inputs: the same commit or archive, build
        options, tags, queue and priority. It joins an identical build in progress."""
        build = self.ledger.get(build_id)
        if not BuildState(build.state).final:
            raise Conflict(
                f"Build {build_id} is still {build.state}; retry it once it ended.",
                state=build.state,
            )
        source: Source
        if build.source_kind == "git":
            source = GitSource(url=build.git_url or "", ref=build.git_ref or "HEAD")
            self.destinations.check_url(source.url, field="git_url")
        else:
            source = ArchiveSource(sha256=build.archive_sha256 or "", size_bytes=0)
        spec = BuildSpec(
            source=source,
            context=build.context,
            dockerfile=build.dockerfile,
            target=build.target,
            build_args=dict(build.build_args or {}),
            tags=tuple(build.tags or ()),
        )
        route = self.route({"queue": build.queue, "priority": build.priority})
        submission = self.submit(
            spec, route, commit=build.git_commit, submitted_by=submitted_by
        )
        logger.info("build=%s: retried as %s", build_id, submission.build.id)
        return submission

    def cancel(self, build_id: str) -> Build:
        """Cancel a queued build at once, or ask the worker to stop a running one."""
        build = self.ledger.get(build_id)
        if BuildState(build.state).final:
            raise Conflict(
                f"Build {build_id} already ended ({build.state}).", state=build.state
            )
        if not self.ledger.cancel_if_queued(build_id):
            self.live.request_cancel(build_id)
            logger.info("build=%s: cancel requested", build_id)
        return self.ledger.get(build_id)

    def waiting(self, build: Build) -> dict[str, Any] | None:
        """For a queued build: its place in the queue and why it waits."""
        if build.state != BuildState.QUEUED:
            return None
        before = self.queue.ahead(build.queue, build.id)
        # Messages of builds cancelled while queued stay in Redis; workers skip
        # them at once, so they are not counted.
        position = None if before is None else self.ledger.count_queued(before)
        serving = {
            name: info
            for name, info in self.live.workers().items()
            if build.queue in info.get("queues", [])
        }
        slots = sum(int(info.get("slots", 1)) for info in serving.values())
        # The builds on those very nodes, whatever their queue: a draining node's
        # are not held against slots it no longer offers.
        on_node = self.ledger.count_running_by("worker")
        running = sum(on_node.get(name, 0) for name in serving)
        ahead = (
            "It is next"
            if not position
            else "1 build is ahead of it"
            if position == 1
            else f"{position} builds are ahead of it"
        )
        nodes = "1 node" if len(serving) == 1 else f"{len(serving)} nodes"
        busy = "is busy" if len(serving) == 1 else "are busy"
        engines_down = all(
            info.get("engine", "ok") != "ok" for info in serving.values()
        )
        if not serving:
            reason = f"No live node serves queue '{build.queue}'."
        elif engines_down:
            reason = (
                f"{ahead}; every node serving '{build.queue}' has its engine down; "
                "it waits for one to come back."
            )
        elif position is None:
            reason = "A node has taken it and is about to start it."
        elif running >= slots:
            reason = (
                f"{ahead}; the {nodes} serving '{build.queue}' {busy} "
                f"({running} of {slots} build slots in use)."
            )
        else:
            reason = f"{ahead} in '{build.queue}'; a node is about to take it."
        return {
            "position": position,
            "reason": reason,
            "nodes": len(serving),
            "slots": slots,
            "running": running,
        }

    def nodes(self) -> list[dict[str, Any]]:
        """The nodes that beat within a day: whether each is up and whether it is
        draining (stopping, taking no new build), queues served,
        build slots, the builds it is running, its engine's health and disk, its
        last beat, and its last cache retention report."""
        building: dict[str, list[str]] = {}
        for build in self.ledger.recent(states=[BuildState.RUNNING], limit=1000):
            building.setdefault(build.worker or "", []).append(build.id)
        return [
            {
                "name": name,
                "up": info["up"],
                "draining": bool(info["up"] and info.get("draining")),
                "queues": info.get("queues", []),
                "slots": info.get("slots"),
                "running": len(building.get(name, [])),
                "builds": building.get(name, []),
                "engine": info.get("engine", "ok"),
                "beat_at": _epoch_iso(info.get("beat_at")),
                "disk": info.get("disk") or {},
                "retention": self.live.report("retention", name),
            }
            for name, info in self.live.nodes().items()
        ]

    def queue_overview(self) -> list[dict[str, Any]]:
        """Each named queue: builds waiting in it, oldest first, and its nodes."""
        waiting: dict[str, list[Build]] = {name: [] for name in self.queues}
        for build in self.ledger.recent(states=[BuildState.QUEUED], limit=1000):
            waiting.setdefault(build.queue, []).append(build)
        serving = self.live.workers()
        return [
            {
                "name": name,
                "depth": self.queue.depth(name),
                "queued": [describe_build(b) for b in reversed(builds)],
                "nodes": [n for n, info in serving.items() if name in info["queues"]],
            }
            for name, builds in waiting.items()
        ]

    def read_log(self, build_id: str, *, start: int = 0) -> tuple[list[str], bool]:
        """Log lines from ``start`` on, and whether the build has ended."""
        build = self.ledger.get(build_id)
        if BuildState(build.state).final:
            return log_lines(self.ledger.log_text(build_id))[start:], True
        return self.live.read_log(build_id, start=start), False

    def follow_log(
        self,
        build_id: str,
        *,
        start: int = 0,
        poll_seconds: float = FOLLOW_POLL_SECONDS,
    ) -> Iterator[LogEvent | None]:
        """Events of a build as it goes on, from log line ``start``: each new line,
        its progress whenever that changes, and a last ``end`` event once it ended.
        Yields None after a quiet poll, so a caller can keep its connection alive."""
        position = start
        last_progress: dict[str, Any] | None = None
        while True:
            build = self.ledger.get(build_id)
            ended = BuildState(build.state).final
            if ended:
                lines = log_lines(self.ledger.log_text(build_id))[position:]
            else:
                lines = self.live.read_log(build_id, start=position)
            for line in lines:
                position += 1
                yield LogEvent("line", line, position)
            progress = build_progress(build)
            if progress != last_progress:
                last_progress = progress
                yield LogEvent("progress", progress, position)
            if ended:
                yield LogEvent("end", build, position)
                return
            if not lines:
                yield None
            time.sleep(poll_seconds)


@dataclass(frozen=True)
class LogEvent:
    """One thing a follower of a build learns: a log ``line``, its ``progress``, or
    its ``end`` (with the final Build record); ``position`` is the log line to
    resume from after it."""

    kind: str
    data: Any
    position: int


def log_lines(text: str | None) -> list[str]:
    """A stored log's lines, split only at newlines, as they were written."""
    if not text:
        return []
    return text.removesuffix("\n").split("\n")


def build_progress(build: Build) -> dict[str, Any]:
    """How far a build is: its state and its Dockerfile steps done and cached."""
    steps = [step for step in build.steps or [] if counts_as_build_step(step)]
    return {
        "state": build.state,
        "steps_done": sum(1 for step in steps if step.get("completed_at")),
        "steps_cached": sum(1 for step in steps if step.get("cached")),
        "steps_total": len(steps),
    }


def _epoch_iso(seconds: Any) -> str | None:
    if not isinstance(seconds, int | float):
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _iso(moment: Any) -> str | None:
    moment = as_utc(moment)
    return moment.isoformat() if moment else None


def describe_build(build: Build, *, base_url: str = "") -> dict[str, Any]:
    """The public JSON shape of a build, as the API returns it."""
    source: dict[str, Any] = {"kind": build.source_kind}
    if build.source_kind == "git":
        source.update(
            url=redact_url(build.git_url or ""),
            ref=build.git_ref,
            commit=build.git_commit,
        )
    else:
        source.update(sha256=build.archive_sha256)
    image = None
    if build.image_digest:
        image = {
            "references": build.image_references,
            "digest": build.image_digest,
            "size_bytes": build.image_size_bytes,
            "pushed_bytes": build.image_pushed_bytes,
            "id": build.image_id,
        }
    return {
        "id": build.id,
        "project": build.project
        or project_name(build.git_url if build.git_url else None, build.tags or []),
        "submitted_by": build.submitted_by,
        "url": f"{base_url}/api/v1/builds/{build.id}",
        "page_url": f"{base_url}/builds/{build.id}",
        "state": build.state,
        "queue": build.queue,
        "priority": build.priority or "normal",
        "source": source,
        "context": build.context,
        "dockerfile": build.dockerfile,
        "target": build.target,
        "build_args": masked_args(build.build_args, build.secret_args or []),
        "warnings": secret_warnings(build.secret_args or []),
        "tags": build.tags,
        "created_at": _iso(build.created_at),
        "started_at": _iso(build.started_at),
        "finished_at": _iso(build.finished_at),
        "wait_seconds": build.wait_seconds,
        "duration_seconds": build.duration_seconds,
        "worker": build.worker,
        "attempts": build.attempts,
        "image": image,
        "cache_state": build.cache_state,
        "stage_sizes": build.stage_sizes or {},
        "steps_total": build.steps_total,
        "steps_cached": build.steps_cached,
        "stages": summarize_stages(build.steps),
        "steps": build.steps,
        "error": build.error,
    }


def summarize_stages(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per Dockerfile stage: build steps, how many came from cache, and time spent."""
    stages: dict[str, dict[str, Any]] = {}
    for step in steps:
        if not counts_as_build_step(step) or not step.get("stage"):
            continue
        stage = stages.setdefault(
            step["stage"],
            {"stage": step["stage"], "steps": 0, "cached": 0, "duration_seconds": 0.0},
        )
        stage["steps"] += 1
        stage["cached"] += 1 if step.get("cached") else 0
        stage["duration_seconds"] += step.get("duration_seconds") or 0.0
    return list(stages.values())
