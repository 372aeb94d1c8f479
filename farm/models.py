"""The durable records: builds, their logs, and uploaded source archives."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class BuildState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {BuildState.SUCCEEDED, BuildState.FAILED, BuildState.CANCELLED}
)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True)}


class Build(Base):
    """One build request and everything learned while running it."""

    __tablename__ = "builds"
    # Metrics read the builds that ended in a span (farm.ledger.ended_between).
    __table_args__ = (Index("ix_builds_state_finished_at", "state", "finished_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    queue: Mapped[str] = mapped_column(String(64))
    priority: Mapped[str | None] = mapped_column(String(16))
    source_kind: Mapped[str] = mapped_column(String(16))
    git_url: Mapped[str | None] = mapped_column(Text)
    git_ref: Mapped[str | None] = mapped_column(String(255))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    archive_sha256: Mapped[str | None] = mapped_column(
        ForeignKey("archives.sha256"), index=True
    )
    input_key: Mapped[str | None] = mapped_column(String(64), index=True)
    context: Mapped[str] = mapped_column(Text)
    dockerfile: Mapped[str] = mapped_column(Text)
    target: Mapped[str | None] = mapped_column(String(128))
    build_args: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    # When it was last handed back to the queue after it started (None: never).
    requeued_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts a stopping worker handed back on purpose (None: none): they do not
    # count as lost ones.
    handed_back: Mapped[int | None] = mapped_column(Integer)
    image_id: Mapped[str | None] = mapped_column(String(80))
    image_references: Mapped[list[str]] = mapped_column(JSON, default=list)
    image_digest: Mapped[str | None] = mapped_column(String(80))
    image_size_bytes: Mapped[int | None]  # unpacked, as the engine holds it
    # Config and layers in the registry, compressed: what a pull downloads at most.
    image_pushed_bytes: Mapped[int | None] = mapped_column(BigInteger)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Sharing the stage cache after success: "exporting", then "shared".
    cache_state: Mapped[str | None] = mapped_column(String(16))
    steps_total: Mapped[int] = mapped_column(Integer, default=0)
    steps_cached: Mapped[int] = mapped_column(Integer, default=0)
    # Build steps that ran rather than came from cache (a failed build's later
    # steps never start, so this is not steps_total - steps_cached).
    steps_run: Mapped[int | None] = mapped_column(Integer)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    wait_seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # What kind of failure ended it (farm.errors.failure_kind), "none" for success.
    failure: Mapped[str | None] = mapped_column(String(16))
    # Seconds taken to push the image's tags.
    push_seconds: Mapped[float | None] = mapped_column(Float)
    # farm.buildspec.project_name of the source and tags, and who asked (token name).
    project: Mapped[str | None] = mapped_column(String(255), index=True)
    # Bytes of each named stage's image the target builds on (a builder's size),
    # known once the stage cache was exported.
    stage_sizes: Mapped[dict[str, int] | None] = mapped_column(JSON)
    submitted_by: Mapped[str | None] = mapped_column(String(64))
    # Names of the build args whose values are secret (farm.redaction).
    secret_args: Mapped[list[str] | None] = mapped_column(JSON)


class BuildStage(Base):
    """How long the steps of one Dockerfile stage of a succeeded build ran, added
    up (waiting for other stages left out), for metrics.

    ``role`` keeps the figures few: "final" for the stage the image is made from,
    "builder" for any other.
    """

    __tablename__ = "build_stages"

    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"), primary_key=True)
    stage: Mapped[str] = mapped_column(String(128), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    duration_seconds: Mapped[float] = mapped_column(Float)
    steps_total: Mapped[int] = mapped_column(Integer, default=0)
    steps_cached: Mapped[int] = mapped_column(Integer, default=0)


class BuildLog(Base):
    """A finished build's whole log, kept once the live copy in Redis expires."""

    __tablename__ = "build_logs"

    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"), primary_key=True)
    text: Mapped[str] = mapped_column(Text)


class Archive(Base):
    """An uploaded source archive, stored in the database so any node can fetch it."""

    __tablename__ = "archives"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size_bytes: Mapped[int]
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BuildGroup(Base):
    """Several images requested together, like the build sections of a compose file."""

    __tablename__ = "build_groups"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # [{"name": image name in the group, "build_id": ..., "submission": created,
    # joined or reused}], in request order.
    members: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    # The smoke test asked for (farm.smoke.parse_smoke), None when none was;
    # its state (farm.smoke.SmokeState), when that last changed, and its outcome.
    smoke: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    smoke_state: Mapped[str | None] = mapped_column(String(16))
    smoke_updated_at: Mapped[datetime | None]
    smoke_result: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ApiToken(Base):
    """A bearer token for the API and the pages; only a hash of its secret is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Hook(Base):
    """A git push webhook: which repository and branches it builds, and how."""

    __tablename__ = "hooks"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(16))  # github or gitlab
    git_url: Mapped[str] = mapped_column(Text)  # what the farm fetches
    # farm.buildspec.project_name of the repository pushes must come from.
    repository: Mapped[str] = mapped_column(String(255))
    branches: Mapped[list[str]] = mapped_column(JSON, default=list)  # fnmatch patterns
    # Shared with the git host, which signs (GitHub) or sends (GitLab) it.
    secret: Mapped[str] = mapped_column(String(128))
    # Build options: context, dockerfile, target, build_args, tags, queue, priority.
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class HookDelivery(Base):
    """One delivery of a hook's event, recorded once so a re-delivery builds nothing."""

    __tablename__ = "hook_deliveries"

    hook_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    delivery: Mapped[str] = mapped_column(String(128), primary_key=True)
    build_id: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class Callback(Base):
    """A URL to tell when a build ends, and how telling it went."""

    __tablename__ = "callbacks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    build_id: Mapped[str] = mapped_column(String(32), index=True)
    url: Mapped[str] = mapped_column(Text)
    # pending, then delivered or failed (after its last retry)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
