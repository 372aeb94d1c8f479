"""Smoke tests of a group: once every image is built, start them together on one
network and report whether each stayed up and answered.

This module holds what every process shares: checking the request, the states a
smoke test goes through, and moving a group's test along as its builds end. A node
runs the test itself (``workers/smoke.py``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from farm.buildspec import clean_variables, reject_unknown_fields
from farm.errors import InvalidRequest
from farm.ledger import BuildLedger, as_utc
from farm.models import BuildGroup, BuildState, utcnow
from farm.queue import BuildQueue

logger = logging.getLogger(__name__)

GROUP_FIELDS = {"seconds", "timeout_seconds"}
IMAGE_FIELDS = {"start", "port", "path", "env"}
DEFAULT_SECONDS = 10
MAX_SECONDS = 300
DEFAULT_TIMEOUT = 60
MAX_TIMEOUT = 600
# The node running a test beats every few seconds; silent this long, it is lost.
BEAT_SECONDS = 5
LOST_AFTER_SECONDS = 60
MAX_ATTEMPTS = 2
_PATH = re.compile(r"^/[\x21-\x7e]{0,255}$")


class SmokeState:
    """Where a group's smoke test is."""

    PENDING = "pending"  # waiting for the group's builds
    QUEUED = "queued"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"  # an image exited or did not answer
    SKIPPED = "skipped"  # a build of the group did not succeed
    ERROR = "error"  # the test itself could not run

    FINAL = frozenset({PASSED, FAILED, SKIPPED, ERROR})


def parse_smoke(value: Any, images: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The group's ``smoke_test`` and its images' ``smoke`` settings, checked; None
    when no smoke test is asked for."""
    per_image = [image.get("smoke") for image in images]
    if value is None or value is False:
        if any(setting is not None for setting in per_image):
            raise InvalidRequest(
                "An image has 'smoke' settings but the group does not ask for "
                "'smoke_test'.",
                field="smoke",
            )
        return None
    if value is True:
        value = {}
    if not isinstance(value, Mapping):
        raise InvalidRequest(
            "'smoke_test' must be true, false or an object "
            "{'seconds', 'timeout_seconds'}.",
            field="smoke_test",
        )
    reject_unknown_fields(value, GROUP_FIELDS)
    seconds = _seconds(value, "seconds", DEFAULT_SECONDS, MAX_SECONDS)
    timeout = _seconds(value, "timeout_seconds", DEFAULT_TIMEOUT, MAX_TIMEOUT)
    if timeout < seconds:
        raise InvalidRequest(
            "'timeout_seconds' must be at least 'seconds'.", field="smoke_test"
        )
    settings = {}
    for index, (image, setting) in enumerate(zip(images, per_image, strict=True)):
        name = image.get("name") or f"image-{index}"
        try:
            settings[name] = parse_image_smoke(setting)
        except InvalidRequest as exc:
            raise InvalidRequest(
                f"Image {name!r}: {exc.message}", field="smoke", image=name
            ) from exc
    if not any(setting["start"] for setting in settings.values()):
        raise InvalidRequest(
            "The smoke test would start no image: every image says start false.",
            field="smoke",
        )
    return {"seconds": seconds, "timeout_seconds": timeout, "images": settings}


def parse_image_smoke(value: Any) -> dict[str, Any]:
    """One image's settings: whether to start it, the port and HTTP path to ask,
    and extra environment variables."""
    if value is None or value is True:
        value = {}
    elif value is False:
        value = {"start": False}
    if not isinstance(value, Mapping):
        raise InvalidRequest(
            "'smoke' must be an object {'start', 'port', 'path', 'env'}.",
            field="smoke",
        )
    reject_unknown_fields(value, IMAGE_FIELDS)
    start = value.get("start", True)
    if not isinstance(start, bool):
        raise InvalidRequest("'smoke.start' must be true or false.", field="smoke")
    port = value.get("port")
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536
    ):
        raise InvalidRequest(
            "'smoke.port' must be a TCP port number (1 to 65535).", field="smoke"
        )
    path = value.get("path")
    if path is not None and (not isinstance(path, str) or not _PATH.match(path)):
        raise InvalidRequest(
            "'smoke.path' must be an HTTP path starting with '/', without spaces, "
            "at most 256 characters.",
            field="smoke",
        )
    env = clean_variables(
        value.get("env") or {}, field="smoke", noun="Environment variable"
    )
    return {"start": start, "port": port, "path": path, "env": env}


def _seconds(value: Mapping[str, Any], key: str, default: int, most: int) -> int:
    seconds = value.get(key, default)
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise InvalidRequest(f"'{key}' must be a whole number.", field="smoke_test")
    if not 1 <= seconds <= most:
        raise InvalidRequest(
            f"'{key}' must be between 1 and {most}.", field="smoke_test"
        )
    return seconds


class GroupSmoke:
    """Moves each group's smoke test along as its builds end.

    Any process may call :meth:`advance`: state changes are conditional updates,
    so a test is queued at most once however many callers race.
    """

    def __init__(self, ledger: BuildLedger, queue: BuildQueue) -> None:
        self.ledger = ledger
        self.queue = queue

    def advance(self, group: BuildGroup) -> None:
        """Queue the test once every build succeeded; skip it if one did not."""
        if group.smoke_state != SmokeState.PENDING:
            return
        builds = [self.ledger.get(member["build_id"]) for member in group.members]
        states = {BuildState(build.state) for build in builds}
        if not all(state.final for state in states):
            return
        if states != {BuildState.SUCCEEDED}:
            failed = [
                member["name"]
                for member, build in zip(group.members, builds, strict=True)
                if build.state != BuildState.SUCCEEDED
            ]
            self.ledger.move_smoke_state(
                group.id,
                {SmokeState.PENDING},
                SmokeState.SKIPPED,
                result={"reason": f"Not built: {', '.join(failed)}."},
            )
            return
        if self.ledger.move_smoke_state(
            group.id, {SmokeState.PENDING}, SmokeState.QUEUED
        ):
            try:
                self.queue.enqueue_smoke(group.id, queue=builds[0].queue)
            except Exception:
                # Back to pending: the next sweep queues it again.
                self.ledger.move_smoke_state(
                    group.id, {SmokeState.QUEUED}, SmokeState.PENDING
                )
                raise

    def advance_groups_of(self, build_id: str) -> None:
        """Advance every waiting group that holds this build."""
        for group in self.ledger.groups_in_smoke_states({SmokeState.PENDING}):
            if any(member["build_id"] == build_id for member in group.members):
                self.advance(group)

    def sweep(self, *, now: datetime | None = None) -> None:
        """Advance every waiting group; hand a test whose node went silent to
        another node, or end it after its last attempt."""
        now = now or utcnow()
        waiting = self.ledger.groups_in_smoke_states(
            {SmokeState.PENDING, SmokeState.RUNNING}
        )
        for group in waiting:
            if group.smoke_state == SmokeState.PENDING:
                self.advance(group)
            elif _lost(group, now):
                self._recover(group)

    def _recover(self, group: BuildGroup) -> None:
        result = dict(group.smoke_result or {})
        node = result.get("node")
        if int(result.get("attempt", 1)) >= MAX_ATTEMPTS:
            self.ledger.move_smoke_state(
                group.id,
                {SmokeState.RUNNING},
                SmokeState.ERROR,
                result={
                    **result,
                    "error": {
                        "code": "smoke_lost",
                        "message": f"The node running the smoke test ({node}) "
                        f"stopped answering, on each of {MAX_ATTEMPTS} attempts.",
                    },
                },
            )
            logger.warning("group=%s: smoke test lost, given up", group.id)
            return
        if self.ledger.move_smoke_state(
            group.id, {SmokeState.RUNNING}, SmokeState.QUEUED, result=result
        ):
            first = self.ledger.get(group.members[0]["build_id"])
            self.queue.enqueue_smoke(group.id, queue=first.queue)
            logger.warning(
                "group=%s: smoke test node %s went silent; queued again", group.id, node
            )


def _lost(group: BuildGroup, now: datetime) -> bool:
    since = as_utc(group.smoke_updated_at)
    return since is not None and now - since > timedelta(seconds=LOST_AFTER_SECONDS)


def describe_smoke(group: BuildGroup) -> dict[str, Any] | None:
    """The group's smoke test for the API: state, settings and each image's result."""
    if not group.smoke:
        return None
    result = group.smoke_result or {}
    return {
        "state": group.smoke_state,
        "seconds": group.smoke["seconds"],
        "timeout_seconds": group.smoke["timeout_seconds"],
        "started_at": result.get("started_at"),
        "finished_at": result.get("finished_at"),
        "node": result.get("node"),
        "reason": result.get("reason"),
        "error": result.get("error"),
        "images": result.get("images", []),
    }


def smoke_finished(group: BuildGroup) -> bool:
    return not group.smoke or group.smoke_state in SmokeState.FINAL


def started_images(settings: Mapping[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    """The images a test starts, with their settings, in request order."""
    return [
        (name, image) for name, image in settings["images"].items() if image["start"]
    ]
