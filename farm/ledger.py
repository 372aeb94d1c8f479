"""The build ledger: the durable record of every build, in a SQL database.

SQLite is the embedded default for one machine; PostgreSQL serves several. Every
SQLAlchemy error is translated here, at one choke point, into a :class:`FarmError`.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Engine,
    case,
    cast,
    create_engine,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from farm.buildspec import ArchiveSource, BuildSpec, GitSource, project_name
from farm.errors import (
    AttemptLost,
    Conflict,
    FarmError,
    NotFound,
    StoreUnavailable,
    failure_kind,
)
from farm.models import (
    FINAL_STATES,
    ApiToken,
    Archive,
    Base,
    Build,
    BuildGroup,
    BuildLog,
    BuildStage,
    BuildState,
    Callback,
    Hook,
    HookDelivery,
    utcnow,
)

logger = logging.getLogger(__name__)

Row = TypeVar("Row", bound=Base)

CREATE_ATTEMPTS = 5


ENDED = [state.value for state in FINAL_STATES]


def ended_between(
    states: Sequence[str], since: datetime | None, until: datetime | None
) -> ColumnElement[bool]:
    """Builds in ``states`` for figures over a span of end times.

    Ended builds count if they ended at or after ``since`` and before ``until``
    (either may be None: no bound). One without an end time (recorded before
    it was kept) counts in the span with no ``since``. Builds in states that
    have not ended count only in the span with no ``until``, the one reaching
    up to now. So spans that meet, the last open, count every build once.
    """
    ended = [state for state in states if state in ENDED]
    condition: ColumnElement[bool] = Build.state.in_(ended)
    if since is not None:
        condition = condition & (Build.finished_at >= since)
    if until is not None:
        before = Build.finished_at < until
        if since is None:
            before = or_(before, Build.finished_at.is_(None))
        condition = condition & before
    live = [state for state in states if state not in ENDED]
    if live and until is None:
        condition = or_(condition, Build.state.in_(live))
    return condition


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without a zone; every stored time is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def new_build_id() -> str:
    """A short id that sorts roughly by creation time."""
    return f"{int(utcnow().timestamp()):x}{secrets.token_hex(4)}"


def open_database(url: str) -> Engine:
    """Create the SQLAlchemy engine, preparing SQLite for several processes."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        # The database holds git URLs with their credentials: only its owner reads.
        path.touch(mode=0o600, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


def _tune_sqlite(connection: Any, _record: Any) -> None:
    # WAL lets the web app read while a worker writes (https://sqlite.org/wal.html).
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def counts_as_build_step(step: dict[str, Any]) -> bool:
    """Whether a step runs or copies something, as opposed to BuildKit's own work."""
    instruction = (step.get("instruction") or "").upper()
    return not step.get("internal") and not instruction.startswith("FROM ")


class BuildLedger:
    """Create, claim, update and query build records."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str) -> BuildLedger:
        return cls(open_database(url))

    def create_tables(self) -> None:
        """Create missing tables; safe when several processes start at once."""
        for attempt in range(CREATE_ATTEMPTS):
            try:
                with self._translated():
                    Base.metadata.create_all(self.engine)
                    self._add_missing_columns()
                    self._fill_failure_kinds()
                return
            except StoreUnavailable:
                # Another process created a table between our check and our
                # CREATE; the next pass sees it and goes on.
                if attempt == CREATE_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _add_missing_columns(self) -> None:
        """Add columns (and their indexes) a newer farm defines to tables an older
        one made.

        Only additive, nullable columns are ever introduced, so this is the whole
        migration story for now.
        """
        inspector = inspect(self.engine)
        for table in Base.metadata.sorted_tables:
            present = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present:
                    continue
                kind = column.type.compile(dialect=self.engine.dialect)
                with self.engine.begin() as connection:
                    connection.execute(
                        text(
                            f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"
                        )
                    )
                logger.info("database: added column %s.%s", table.name, column.name)
            for index in table.indexes:
                index.create(self.engine, checkfirst=True)

    def _fill_failure_kinds(self) -> None:
        """Give builds that ended before failure kinds were kept theirs, from the
        state and error code they recorded."""
        query = select(Build.id, Build.state, Build.error).where(
            Build.failure.is_(None),
            Build.state.in_([state.value for state in FINAL_STATES]),
        )
        with self._session() as session:
            rows = session.execute(query).all()
            for build_id, state, error in rows:
                session.execute(
                    update(Build)
                    .where(Build.id == build_id)
                    .values(failure=failure_kind(state, error))
                )
        if rows:
            logger.info("database: failure kinds filled in for %d builds", len(rows))

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except FarmError:
            raise
        except SQLAlchemyError as exc:
            logger.debug("database call failed: %s", exc)
            raise StoreUnavailable(
                "The build database could not be reached; try again shortly."
            ) from exc

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._translated(), self._sessions.begin() as session:
            yield session

    # -- archives ---------------------------------------------------------------

    def store_archive(self, content: bytes, *, filename: str = "") -> ArchiveSource:
        """Keep an uploaded archive once, by content, so any node can fetch it."""
        sha256 = hashlib.sha256(content).hexdigest()
        source = ArchiveSource(
            sha256=sha256, size_bytes=len(content), filename=filename
        )
        try:
            with self._session() as session:
                if session.get(Archive, sha256) is None:
                    session.add(
                        Archive(sha256=sha256, size_bytes=len(content), content=content)
                    )
        except StoreUnavailable as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
        return source

    def forget_archive_if_unused(self, sha256: str) -> bool:
        """Remove an archive no build refers to (its build was not taken)."""
        used = select(Build.id).where(Build.archive_sha256 == sha256).exists()
        with self._session() as session:
            result = session.execute(
                delete(Archive).where(Archive.sha256 == sha256, ~used)
            )
            return bool(getattr(result, "rowcount", 0))

    def load_archive(self, sha256: str) -> bytes:
        with self._session() as session:
            archive = session.get(Archive, sha256)
            if archive is None:
                raise NotFound(f"Archive {sha256} is not stored.")
            return archive.content

    # -- builds -----------------------------------------------------------------

    def create(
        self,
        spec: BuildSpec,
        *,
        queue: str,
        priority: str = "normal",
        input_key: str | None = None,
        git_commit: str | None = None,
        submitted_by: str | None = None,
        secret_args: Sequence[str] = (),
    ) -> Build:
        source = spec.source
        build = Build(
            id=new_build_id(),
            state=BuildState.QUEUED,
            queue=queue,
            priority=priority,
            source_kind=source.kind,
            git_url=source.url if isinstance(source, GitSource) else None,
            git_ref=source.ref if isinstance(source, GitSource) else None,
            archive_sha256=source.sha256 if isinstance(source, ArchiveSource) else None,
            input_key=input_key,
            git_commit=git_commit,
            context=spec.context,
            dockerfile=spec.dockerfile,
            target=spec.target,
            build_args=dict(spec.build_args),
            tags=list(spec.tags),
            created_at=utcnow(),
            attempts=0,
            steps=[],
            image_references=[],
            steps_total=0,
            steps_cached=0,
            project=project_name(
                source.url if isinstance(source, GitSource) else None, spec.tags
            ),
            submitted_by=submitted_by,
            secret_args=list(secret_args),
        )
        with self._session() as session:
            session.add(build)
        logger.info("build=%s queue=%s: recorded", build.id, queue)
        return build

    def find_by_inputs(self, input_key: str, *, limit: int = 50) -> list[Build]:
        """The newest builds of exactly these inputs, newest first."""
        query = (
            select(Build)
            .where(Build.input_key == input_key)
            .order_by(Build.created_at.desc(), Build.id.desc())
            .limit(limit)
        )
        with self._session() as session:
            return list(session.scalars(query))

    def save_group(self, group: BuildGroup) -> None:
        with self._session() as session:
            session.add(group)

    def get_group(self, group_id: str) -> BuildGroup:
        return self._fetch(BuildGroup, group_id, "group")

    def move_smoke_state(
        self,
        group_id: str,
        from_states: set[str],
        to_state: str,
        *,
        result: dict[str, Any] | None = None,
    ) -> bool:
        """Move the group's smoke test on if it is still in one of ``from_states``;
        False if another process moved it first."""
        values: dict[str, Any] = {"smoke_state": to_state, "smoke_updated_at": utcnow()}
        if result is not None:
            values["smoke_result"] = result
        with self._session() as session:
            outcome = session.execute(
                update(BuildGroup)
                .where(
                    BuildGroup.id == group_id,
                    BuildGroup.smoke_state.in_(sorted(from_states)),
                )
                .values(**values)
            )
            moved = bool(getattr(outcome, "rowcount", 0))
        if moved:
            logger.info("group=%s: smoke test %s", group_id, to_state)
        return moved

    def touch_smoke(self, group_id: str) -> None:
        """Say that the node running the group's smoke test is still at it."""
        with self._session() as session:
            session.execute(
                update(BuildGroup)
                .where(BuildGroup.id == group_id, BuildGroup.smoke_state == "running")
                .values(smoke_updated_at=utcnow())
            )

    def groups_in_smoke_states(self, states: set[str]) -> list[BuildGroup]:
        query = select(BuildGroup).where(BuildGroup.smoke_state.in_(sorted(states)))
        with self._session() as session:
            return list(session.scalars(query))

    # -- tokens -------------------------------------------------------------------

    def save_token(self, token: ApiToken) -> None:
        with self._session() as session:
            session.add(token)

    def find_token(self, token_id: str) -> ApiToken | None:
        with self._session() as session:
            return session.get(ApiToken, token_id)

    def list_tokens(self) -> list[ApiToken]:
        query = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
        with self._session() as session:
            return list(session.scalars(query))

    def revoke_token(self, token_id: str) -> ApiToken:
        with self._session() as session:
            token = session.get(ApiToken, token_id, with_for_update=True)
            if token is None:
                raise NotFound(f"There is no token {token_id!r}.", token_id=token_id)
            if token.revoked_at is not None:
                raise Conflict(f"Token {token_id} was already revoked.")
            token.revoked_at = utcnow()
            return token

    # -- callbacks ----------------------------------------------------------------

    def add_callback(self, build_id: str, url: str) -> Callback:
        callback = Callback(
            id=new_build_id(), build_id=build_id, url=url, state="pending", attempts=0
        )
        with self._session() as session:
            session.add(callback)
        return callback

    def callbacks_of(self, build_id: str) -> list[Callback]:
        query = (
            select(Callback)
            .where(Callback.build_id == build_id)
            .order_by(Callback.created_at, Callback.id)
        )
        with self._session() as session:
            return list(session.scalars(query))

    def take_due_callbacks(
        self, *, lease_seconds: int, build_id: str | None = None, limit: int = 50
    ) -> list[tuple[Callback, Build]]:
        """Pending callbacks of ended builds whose time has come, each leased for
        ``lease_seconds`` so that no other node sends it meanwhile."""
        now = utcnow()
        query = (
            select(Callback, Build)
            .join(Build, Build.id == Callback.build_id)
            .where(
                Callback.state == "pending",
                Callback.next_at <= now,
                Build.state.in_([str(state) for state in FINAL_STATES]),
            )
            .order_by(Callback.next_at)
            .limit(limit)
        )
        if build_id is not None:
            query = query.where(Callback.build_id == build_id)
        taken = []
        with self._session() as session:
            for callback, build in session.execute(query).all():
                same = (Callback.id == callback.id) & (
                    Callback.next_at == callback.next_at
                )
                leased = session.execute(
                    update(Callback)
                    .where(same)
                    .values(next_at=now + timedelta(seconds=lease_seconds))
                )
                if getattr(leased, "rowcount", 0):
                    taken.append((callback, build))
        return taken

    def record_callback(self, callback_id: str, **values: Any) -> None:
        with self._session() as session:
            session.execute(
                update(Callback).where(Callback.id == callback_id).values(**values)
            )

    # -- hooks --------------------------------------------------------------------

    def save_hook(self, hook: Hook) -> None:
        with self._session() as session:
            session.add(hook)

    def get_hook(self, hook_id: str) -> Hook:
        return self._fetch(Hook, hook_id, "hook")

    def list_hooks(self) -> list[Hook]:
        with self._session() as session:
            return list(session.scalars(select(Hook).order_by(Hook.created_at)))

    def delete_hook(self, hook_id: str) -> None:
        with self._session() as session:
            if session.get(Hook, hook_id) is None:
                raise NotFound(f"There is no hook {hook_id!r}.", hook_id=hook_id)
            session.execute(delete(HookDelivery).where(HookDelivery.hook_id == hook_id))
            session.execute(delete(Hook).where(Hook.id == hook_id))

    def claim_delivery(self, hook_id: str, delivery: str) -> HookDelivery | None:
        """Record a delivery; if it was recorded before, return that record."""
        try:
            with self._translated(), self._sessions.begin() as session:
                session.add(HookDelivery(hook_id=hook_id, delivery=delivery))
            return None
        except StoreUnavailable as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
        with self._session() as session:
            return session.get(HookDelivery, (hook_id, delivery))

    def settle_delivery(self, hook_id: str, delivery: str, build_id: str) -> None:
        with self._session() as session:
            session.execute(
                update(HookDelivery)
                .where(
                    HookDelivery.hook_id == hook_id, HookDelivery.delivery == delivery
                )
                .values(build_id=build_id)
            )

    def forget_delivery(self, hook_id: str, delivery: str) -> None:
        """Drop a delivery that built nothing, so the host's retry is taken."""
        with self._session() as session:
            session.execute(
                delete(HookDelivery).where(
                    HookDelivery.hook_id == hook_id, HookDelivery.delivery == delivery
                )
            )

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        with self._session() as session:
            session.execute(select(1))

    def discard(self, build_id: str) -> None:
        """Remove a build that was never handed to the queue."""
        with self._session() as session:
            session.execute(delete(BuildLog).where(BuildLog.build_id == build_id))
            session.execute(delete(Build).where(Build.id == build_id))
        logger.info("build=%s: discarded, the queue did not take it", build_id)

    def get(self, build_id: str) -> Build:
        return self._fetch(Build, build_id, "build")

    def _fetch(self, model: type[Row], key: str, noun: str) -> Row:
        """The record ``key`` of ``model``, or NotFound naming the ``noun``."""
        with self._session() as session:
            found = session.get(model, key)
            if found is None:
                raise NotFound(f"There is no {noun} {key!r}.", **{f"{noun}_id": key})
            return found

    def recent(
        self,
        *,
        states: Sequence[str] = (),
        project: str | None = None,
        ref: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Build]:
        """Builds newest first, optionally only those in ``states``, of ``project``
        and built from git ``ref``."""
        query = select(Build).order_by(Build.created_at.desc(), Build.id.desc())
        if states:
            query = query.where(Build.state.in_(list(states)))
        if project:
            query = query.where(Build.project == project)
        if ref:
            query = query.where(Build.git_ref == ref)
        with self._session() as session:
            return list(session.scalars(query.limit(limit).offset(offset)))

    def queued_before(self, moment: datetime, *, limit: int) -> list[Build]:
        """Builds still queued that were recorded before ``moment``, oldest first."""
        query = (
            select(Build)
            .where(Build.state == BuildState.QUEUED, Build.created_at < moment)
            .order_by(Build.created_at, Build.id)
            .limit(limit)
        )
        with self._session() as session:
            return list(session.scalars(query))

    def claim(self, build_id: str, *, worker: str) -> Build | None:
        """Move a queued build to running for ``worker``; None if it is not queued."""
        now = utcnow()
        with self._session() as session:
            build = session.get(Build, build_id, with_for_update=True)
            if build is None or build.state != BuildState.QUEUED:
                return None
            build.state = BuildState.RUNNING
            build.worker = worker
            build.started_at = now
            build.attempts += 1
            created = as_utc(build.created_at)
            if build.wait_seconds is None and created:
                # The wait until its first start: a build handed back to the queue
                # keeps it, so the figure (and the histogram of it) never changes.
                build.wait_seconds = (now - created).total_seconds()
        logger.info("build=%s worker=%s: running", build_id, worker)
        return build

    def record_cache_state(self, build_id: str, state: str) -> None:
        self._update(build_id, cache_state=state)

    def record_stage_sizes(self, build_id: str, sizes: dict[str, int]) -> None:
        self._update(build_id, stage_sizes=sizes)

    def record_commit(self, build_id: str, commit: str) -> None:
        self._update(build_id, git_commit=commit)

    def record_steps(
        self, build_id: str, steps: list[dict[str, Any]], *, attempt: int | None = None
    ) -> None:
        """Keep the steps, counting those that build something and how many of those
        came from cache (BuildKit never reports a FROM as cached: it only names the
        base image, so it is listed but not counted).

        With ``attempt``, only while that attempt still runs the build: one that was
        handed on must not overwrite the steps of the attempt that holds it now, or
        of the one that ended it."""
        counted = [step for step in steps if counts_as_build_step(step)]
        held = [Build.state == BuildState.RUNNING, Build.attempts == attempt]
        self._update(
            build_id,
            *(held if attempt is not None else []),
            steps=steps,
            steps_total=len(counted),
            steps_cached=sum(1 for step in counted if step.get("cached")),
            steps_run=sum(
                1
                for step in counted
                if step.get("started_at") and not step.get("cached")
            ),
        )

    def _update(
        self, build_id: str, *conditions: ColumnElement[bool], **values: Any
    ) -> None:
        query = update(Build).where(Build.id == build_id, *conditions)
        with self._session() as session:
            session.execute(query.values(**values))

    def finish(
        self,
        build_id: str,
        state: BuildState,
        *,
        log_text: str = "",
        attempt: int | None = None,
        **values: Any,
    ) -> Build:
        """Record the final state, outcome fields and the whole log in one go.

        With ``attempt``, only the worker still holding that attempt may finish the
        build: one whose build was handed to another node gets :class:`AttemptLost`.
        """
        assert state in FINAL_STATES
        now = utcnow()
        with self._session() as session:
            build = session.get(Build, build_id, with_for_update=True)
            if build is None:
                raise NotFound(f"There is no build {build_id!r}.")
            if attempt is not None and (
                build.state != BuildState.RUNNING or build.attempts != attempt
            ):
                raise AttemptLost(
                    f"Build {build_id} attempt {attempt} no longer holds the build "
                    f"({build.state}, attempt {build.attempts})."
                )
            build.state = state
            build.finished_at = now
            build.failure = failure_kind(state, values.get("error"))
            started = as_utc(build.started_at)
            build.duration_seconds = (
                (now - started).total_seconds() if started else None
            )
            for name, value in values.items():
                setattr(build, name, value)
            session.merge(BuildLog(build_id=build_id, text=log_text))
        logger.info("build=%s: %s", build_id, state.value)
        return build

    def holds(self, build_id: str, *, attempt: int) -> bool:
        """Whether ``attempt`` is still the running attempt of the build."""
        query = select(func.count()).where(
            Build.id == build_id,
            Build.state == BuildState.RUNNING,
            Build.attempts == attempt,
        )
        with self._session() as session:
            return bool(session.execute(query).scalar_one())

    def requeue(self, build_id: str, *, attempt: int, on_purpose: bool = False) -> bool:
        """Hand a running build back to the queue if ``attempt`` still holds it;
        ``on_purpose``: its worker is stopping (it was not lost)."""
        values: dict[str, Any] = {
            "state": BuildState.QUEUED,
            "worker": None,
            "requeued_at": utcnow(),
        }
        if on_purpose:
            values["handed_back"] = func.coalesce(Build.handed_back, 0) + 1
        with self._session() as session:
            result = session.execute(
                update(Build)
                .where(
                    Build.id == build_id,
                    Build.state == BuildState.RUNNING,
                    Build.attempts == attempt,
                )
                .values(**values)
            )
            return bool(getattr(result, "rowcount", 0))

    def append_log(self, build_id: str, lines: list[str]) -> None:
        """Add lines to a finished build's stored log."""
        if not lines:
            return
        with self._session() as session:
            log = session.get(BuildLog, build_id, with_for_update=True)
            if log is not None:
                log.text += "".join(line + "\n" for line in lines)

    def cancel_if_queued(self, build_id: str) -> bool:
        """Cancel a build that no worker has started; False if it had started."""
        with self._session() as session:
            result = session.execute(
                update(Build)
                .where(Build.id == build_id, Build.state == BuildState.QUEUED)
                .values(
                    state=BuildState.CANCELLED,
                    finished_at=utcnow(),
                    failure=failure_kind(BuildState.CANCELLED, None),
                )
            )
            return bool(getattr(result, "rowcount", 0))

    def log_text(self, build_id: str) -> str | None:
        with self._session() as session:
            log = session.get(BuildLog, build_id)
            return log.text if log else None

    def record_stages(
        self,
        build_id: str,
        stages: Sequence[BuildStage],
        *,
        attempt: int | None = None,
    ) -> None:
        """Keep how long each stage of a succeeded build took; with ``attempt``,
        only while that attempt still runs the build (see :meth:`record_steps`)."""
        with self._session() as session:
            if attempt is not None:
                build = session.get(Build, build_id, with_for_update=True)
                if build is None or (build.state, build.attempts) != (
                    BuildState.RUNNING,
                    attempt,
                ):
                    return
            for stage in stages:
                stage.build_id = build_id
                session.merge(stage)

    # -- figures for metrics ----------------------------------------------------

    def count_queued(self, build_ids: Sequence[str]) -> int:
        """How many of ``build_ids`` are builds still waiting to start."""
        if not build_ids:
            return 0
        query = select(func.count()).where(
            Build.id.in_(list(build_ids)), Build.state == BuildState.QUEUED
        )
        with self._session() as session:
            return int(session.execute(query).scalar_one())

    def count_by_state(self) -> dict[str, int]:
        with self._session() as session:
            rows = session.execute(
                select(Build.state, func.count()).group_by(Build.state)
            )
            return {state: count for state, count in rows}

    def count_ended(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> dict[tuple[str, str], int]:
        """Ended builds per (final state, failure kind); with ``since`` and
        ``until``, only those that ended in that span (see :func:`ended_between`)."""
        query = (
            select(Build.state, Build.failure, func.count())
            .where(ended_between(ENDED, since, until))
            .group_by(Build.state, Build.failure)
        )
        with self._session() as session:
            return {
                (state, failure or "unknown"): count
                for state, failure, count in session.execute(query)
            }

    def count_running_by(self, column: str) -> dict[str, int]:
        """Running builds per value of ``column`` ("queue" or "worker")."""
        group = getattr(Build, column)
        query = (
            select(group, func.count())
            .where(Build.state == BuildState.RUNNING)
            .group_by(group)
        )
        with self._session() as session:
            return {value or "": count for value, count in session.execute(query)}

    def waiting(self) -> list[tuple[str, str, int, datetime]]:
        """Per queue and priority: how many builds wait to start and since when
        the oldest has waited: since it was submitted, or handed back to the
        queue after it started (what it waited before that is in its history)."""
        entered = func.coalesce(Build.requeued_at, Build.created_at)
        query = (
            select(Build.queue, Build.priority, func.count(), func.min(entered))
            .where(Build.state == BuildState.QUEUED)
            .group_by(Build.queue, Build.priority)
        )
        with self._session() as session:
            return [
                (queue, priority or "normal", count, as_utc(oldest) or utcnow())
                for queue, priority, count, oldest in session.execute(query)
            ]

    def step_totals(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> tuple[int, int]:
        """Build steps of ended builds (of those that ended in a span, as
        :meth:`count_ended`): how many ran, and how many came from cache (builds
        recorded before steps_run was kept count their uncached steps)."""
        run = func.coalesce(Build.steps_run, Build.steps_total - Build.steps_cached)
        query = select(
            func.coalesce(func.sum(run), 0),
            func.coalesce(func.sum(Build.steps_cached), 0),
        ).where(ended_between(ENDED, since, until))
        with self._session() as session:
            run_count, cached = session.execute(query).one()
        return int(run_count), int(cached)

    def histogram(
        self,
        column: str,
        buckets: Sequence[float],
        *,
        states: Sequence[str],
        by: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        units: int = 1,
    ) -> dict[str, tuple[list[int], int, int]]:
        """Cumulative counts of ``column`` per upper bound, plus total count and sum,
        for builds in ``states``; per value of ``by`` (a column of builds, or
        "role" for stage durations), else under the key "". With ``since`` and
        ``until``, ended builds count only if they ended in that span (see
        :func:`ended_between`).

        The sum is of the values in whole ``units`` per 1 (1000: milliseconds of
        seconds), each rounded: whole numbers add up the same in any order, so
        the sum of the same builds is always the same and sums of spans add up.

        ``column`` is a column of builds, or "stage_seconds" for the durations of
        the stages of those builds.
        """
        table: Any = BuildStage if column == "stage_seconds" else Build
        value = getattr(table, "duration_seconds" if table is BuildStage else column)
        bounds = [func.sum(case((value <= bound, 1), else_=0)) for bound in buckets]
        whole = cast(func.round(value * units), BigInteger)
        figures = [*bounds, func.count(value), func.coalesce(func.sum(whole), 0)]
        group = [getattr(table, by)] if by else []
        query = select(*group, *figures)
        if table is BuildStage:
            query = query.join(Build, Build.id == BuildStage.build_id)
        query = query.where(ended_between(states, since, until), value.is_not(None))
        if by:
            query = query.group_by(*group)
        with self._session() as session:
            rows = [tuple(row) for row in session.execute(query)]
        if not by:
            rows = [("", *row) for row in rows]
        return {
            str(row[0] or ""): (
                [int(n or 0) for n in row[1:-2]],
                int(row[-2]),
                int(row[-1]),
            )
            for row in rows
        }
