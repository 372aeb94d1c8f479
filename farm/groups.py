"""Groups of images built together from one source, reported as a whole."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from farm.archives import check_archive, require_paths
from farm.builds import BuildService, describe_build
from farm.buildspec import (
    BUILD_OPTION_FIELDS,
    ArchiveSource,
    BuildSpec,
    Source,
    parse_git_source,
    parse_spec,
    reject_unknown_fields,
)
from farm.errors import Conflict, InvalidRequest, StoreUnavailable
from farm.ledger import as_utc, new_build_id
from farm.models import Build, BuildGroup, BuildState
from farm.smoke import (
    GroupSmoke,
    SmokeState,
    describe_smoke,
    parse_smoke,
    smoke_finished,
)

logger = logging.getLogger(__name__)

MAX_IMAGES = 20
MAX_NAME_CHARS = 128
IMAGE_FIELDS = BUILD_OPTION_FIELDS | {"name", "smoke"}
_IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class GroupService:
    """Submit and describe groups; each image becomes a build (or joins one)."""

    def __init__(self, builds: BuildService) -> None:
        self.builds = builds
        self.smoke = GroupSmoke(builds.ledger, builds.queue)

    def submit_git(
        self, payload: Mapping[str, Any], *, submitted_by: str | None = None
    ) -> BuildGroup:
        source = parse_git_source(
            payload.get("git_url"),
            payload.get("git_ref"),
            allow_file_urls=self.builds.allow_file_urls,
        )
        images, smoke = self._validate(payload, source)
        commit = self.builds.resolve_commit(source)
        return self._submit(
            payload, images, smoke, commit=commit, submitted_by=submitted_by
        )

    def submit_archive(
        self,
        payload: Mapping[str, Any],
        content: bytes,
        *,
        submitted_by: str | None = None,
    ) -> BuildGroup:
        if not content:
            raise InvalidRequest("The uploaded archive is empty.", field="archive")
        paths = check_archive(content, max_unpacked_bytes=self.builds.max_source_bytes)
        source = ArchiveSource(
            sha256=hashlib.sha256(content).hexdigest(), size_bytes=len(content)
        )
        images, smoke = self._validate(payload, source)
        for name, spec, _ in images:
            with _naming(name):
                require_paths(
                    paths, context=spec.context, dockerfile=spec.dockerfile_in_context
                )
                self.builds.check_uploaded_dockerfile(content, spec)
        self.builds.ledger.store_archive(content)
        return self._submit(payload, images, smoke, submitted_by=submitted_by)

    def _validate(
        self, payload: Mapping[str, Any], source: Source
    ) -> tuple[list[tuple[str, BuildSpec, tuple[str, str]]], dict[str, Any] | None]:
        """Check every image before anything is recorded: all of them or none."""
        name = payload.get("name") or ""
        if not isinstance(name, str):
            raise InvalidRequest("The group's 'name' must be a string.", field="name")
        if len(name) > MAX_NAME_CHARS:
            raise InvalidRequest(
                f"The group's 'name' is longer than {MAX_NAME_CHARS} characters.",
                field="name",
            )
        images = payload.get("images")
        if not isinstance(images, list) or not 1 <= len(images) <= MAX_IMAGES:
            raise InvalidRequest(
                f"Give 'images': a list of 1 to {MAX_IMAGES} images.", field="images"
            )
        checked, names = [], set()
        for index, image in enumerate(images):
            if not isinstance(image, Mapping):
                raise InvalidRequest(
                    f"Image {index} must be an object.", field="images"
                )
            reject_unknown_fields(image, IMAGE_FIELDS)
            name = image.get("name") or f"image-{index}"
            if (
                not isinstance(name, str)
                or not _IMAGE_NAME.match(name)
                or name in names
            ):
                raise InvalidRequest(
                    f"Image {index} needs a unique lowercase name.", field="images"
                )
            names.add(name)
            with _naming(name):
                checked.append(
                    (name, parse_spec(image, source), self.builds.route(image))
                )
        tags = [tag for _, spec, _ in checked for tag in spec.tags]
        if len(tags) != len(set(tags)):
            raise InvalidRequest(
                "Two images of the group name the same tag.", field="tags"
            )
        return checked, parse_smoke(payload.get("smoke_test"), images)

    def _submit(
        self,
        payload: Mapping[str, Any],
        images: list[tuple[str, BuildSpec, tuple[str, str]]],
        smoke: dict[str, Any] | None,
        *,
        commit: str | None = None,
        submitted_by: str | None = None,
    ) -> BuildGroup:
        members = []
        for name, spec, route in images:
            submission = self.builds.submit(
                spec, route, commit=commit, submitted_by=submitted_by
            )
            members.append(
                {
                    "name": name,
                    "build_id": submission.build.id,
                    "submission": submission.outcome,
                }
            )
        group = BuildGroup(
            id=new_build_id(),
            name=str(payload.get("name") or ""),
            members=members,
            smoke=smoke,
            smoke_state=SmokeState.PENDING if smoke else None,
        )
        self.builds.ledger.save_group(group)
        logger.info("group=%s: %d images submitted", group.id, len(members))
        # Images answered from earlier builds may all be done already.
        try:
            self.smoke.advance(group)
        except StoreUnavailable as exc:
            logger.warning(
                "group=%s: smoke test waits for the sweep: %s", group.id, exc
            )
        return self.builds.ledger.get_group(group.id)

    def cancel(self, group_id: str) -> None:
        """Cancel every image of the group still queued or running, and its smoke
        test unless it started; 409 if there is nothing left to cancel."""
        group = self.builds.ledger.get_group(group_id)
        builds = [self.builds.ledger.get(m["build_id"]) for m in group.members]
        active = [b for b in builds if b.state in ("queued", "running")]
        smoke_waits = group.smoke_state in (SmokeState.PENDING, SmokeState.QUEUED)
        if not active and not smoke_waits:
            state = group_state(builds, group.smoke_state)
            raise Conflict(
                f"Group {group_id} has nothing left to cancel ({state}).", state=state
            )
        for build in active:
            self.builds.cancel(build.id)
        self.builds.ledger.move_smoke_state(
            group_id,
            {SmokeState.PENDING, SmokeState.QUEUED},
            SmokeState.SKIPPED,
            result={"reason": "The group was cancelled."},
        )
        logger.info("group=%s: cancelled", group_id)

    def describe(self, group_id: str, *, base_url: str = "") -> dict[str, Any]:
        group = self.builds.ledger.get_group(group_id)
        builds = {
            m["build_id"]: self.builds.ledger.get(m["build_id"]) for m in group.members
        }
        created = as_utc(group.created_at)
        builds_ended = all(BuildState(b.state).final for b in builds.values())
        return {
            "id": group.id,
            "url": f"{base_url}/api/v1/groups/{group.id}",
            "page_url": f"{base_url}/groups/{group.id}",
            "name": group.name,
            "created_at": created.isoformat() if created else None,
            "state": group_state(list(builds.values()), group.smoke_state),
            "finished": builds_ended and smoke_finished(group),
            "images": [
                {
                    "name": m["name"],
                    **describe_build(builds[m["build_id"]], base_url=base_url),
                    # created, joined (the same inputs in progress) or reused
                    "submission": m.get("submission"),
                }
                for m in group.members
            ],
            "smoke_test": describe_smoke(group),
        }


@contextmanager
def _naming(image: str) -> Iterator[None]:
    """Say which image of the group an error is about."""
    try:
        yield
    except InvalidRequest as exc:
        raise InvalidRequest(
            f"Image {image!r}: {exc.message}", field=exc.field, image=image
        ) from exc


def group_state(builds: list[Build], smoke_state: str | None = None) -> str:
    """One state for the group: running while any build runs, queued while all
    wait; once all ended, failed or cancelled if one did not succeed; then, with a
    smoke test, testing until it reports and failed unless it passed."""
    states = {build.state for build in builds}
    if states & {"queued", "running"}:
        return "running" if states - {"queued"} else "queued"
    for final in ("failed", "cancelled"):
        if final in states:
            return final
    if smoke_state in (SmokeState.PENDING, SmokeState.QUEUED, SmokeState.RUNNING):
        return "testing"
    if smoke_state in (SmokeState.FAILED, SmokeState.ERROR):
        return "failed"
    return "succeeded"
