"""Taking build requests: record, enqueue, cancel, and describe builds."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from farm.archives import DEFAULT_MAX_UNPACKED_BYTES, check_archive
from farm.buildspec import (
    ArchiveSource,
    BuildSpec,
    parse_git_source,
    parse_spec,
    redact_url,
)
from farm.errors import Conflict, InvalidRequest, StoreUnavailable
from farm.ledger import BuildLedger, as_utc
from farm.livestate import LiveState
from farm.models import Build, BuildState
from farm.queue import BuildQueue

logger = logging.getLogger(__name__)


class BuildService:
    """The operations the web app and API offer on builds."""

    def __init__(
        self,
        ledger: BuildLedger,
        queue: BuildQueue,
        live: LiveState,
        *,
        default_queue: str,
        allow_file_urls: bool = False,
        max_archive_bytes: int = 256 * 1024 * 1024,
        max_source_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    ) -> None:
        self.ledger = ledger
        self.queue = queue
        self.live = live
        self.default_queue = default_queue
        self.allow_file_urls = allow_file_urls
        self.max_archive_bytes = max_archive_bytes
        self.max_source_bytes = max_source_bytes

    def submit_git(self, options: Mapping[str, Any], *, url: Any, ref: Any) -> Build:
        """Validate and submit a build of a git repository at a ref."""
        source = parse_git_source(url, ref, allow_file_urls=self.allow_file_urls)
        return self.submit(parse_spec(options, source))

    def submit_archive(
        self, options: Mapping[str, Any], *, content: bytes, filename: str = ""
    ) -> Build:
        """Validate everything, then keep the archive and submit its build."""
        if not content:
            raise InvalidRequest("The uploaded archive is empty.", field="archive")
        if len(content) > self.max_archive_bytes:
            raise InvalidRequest(
                f"The archive is larger than {self.max_archive_bytes} bytes.",
                field="archive",
            )
        check_archive(content, max_unpacked_bytes=self.max_source_bytes)
        source = ArchiveSource(
            sha256=hashlib.sha256(content).hexdigest(),
            size_bytes=len(content),
            filename=filename,
        )
        spec = parse_spec(options, source)
        self.ledger.store_archive(content, filename=filename)
        return self.submit(spec)

    def submit(self, spec: BuildSpec) -> Build:
        """Record the build durably, then enqueue it; never leave one half-made.

        If the queue cannot take it, the record is removed again, so a client that
        retries after the 503 does not leave failed builds behind.
        """
        build = self.ledger.create(spec, queue=self.default_queue)
        try:
            self.queue.enqueue(build.id, queue=build.queue)
        except StoreUnavailable:
            self.ledger.discard(build.id)
            raise
        return build

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

    def read_log(self, build_id: str, *, start: int = 0) -> tuple[list[str], bool]:
        """Log lines from ``start`` on, and whether the build has ended."""
        build = self.ledger.get(build_id)
        if BuildState(build.state).final:
            text = self.ledger.log_text(build_id) or ""
            return text.splitlines()[start:], True
        return self.live.read_log(build_id, start=start), False


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
            "id": build.image_id,
        }
    return {
        "id": build.id,
        "url": f"{base_url}/api/v1/builds/{build.id}",
        "page_url": f"{base_url}/builds/{build.id}",
        "state": build.state,
        "queue": build.queue,
        "source": source,
        "context": build.context,
        "dockerfile": build.dockerfile,
        "target": build.target,
        "build_args": build.build_args,
        "tags": build.tags,
        "created_at": _iso(build.created_at),
        "started_at": _iso(build.started_at),
        "finished_at": _iso(build.finished_at),
        "wait_seconds": build.wait_seconds,
        "duration_seconds": build.duration_seconds,
        "worker": build.worker,
        "attempts": build.attempts,
        "image": image,
        "steps_total": build.steps_total,
        "steps_cached": build.steps_cached,
        "steps": build.steps,
        "error": build.error,
    }
