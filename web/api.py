"""The JSON API under ``/api/v1``: submit, inspect, list, read logs, cancel."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request, url_for
from werkzeug.datastructures import FileStorage, MultiDict

from farm.builds import BuildService, Submission, describe_build
from farm.buildspec import BUILD_OPTION_FIELDS, reject_unknown_fields
from farm.callbacks import describe_callback
from farm.errors import InvalidRequest, TooManyFollowers
from farm.groups import GroupService
from farm.idempotency import IdempotencyKeys, fingerprint
from farm.models import Build, BuildState

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_PAGE_SIZE = 200
SSE_RETRY_MS = 2000
# A quiet stream writes a comment this often, so a client that left is noticed
# and its follower slot freed within seconds.
SSE_KEEPALIVE_SECONDS = 2
JSON_FIELDS = BUILD_OPTION_FIELDS | {"callback_url", "reuse", "git_url", "git_ref"}
GROUP_FIELDS = {"name", "images", "smoke_test"}
FORM_FIELDS = JSON_FIELDS | {"build_arg", "tag"}
LOG_FORMATS = ("json", "text")


def service() -> BuildService:
    return current_app.extensions["farm"]


def base_url() -> str:
    return request.host_url.rstrip("/")


@blueprint.get("/openapi.json")
def openapi() -> Any:
    """This API described as OpenAPI 3.1 (``web/openapi.yaml``)."""
    return jsonify(current_app.extensions["farm.openapi"])


@blueprint.post("/builds")
def submit_build() -> Any:
    """202 with a new build; 200 with the build an identical request joined or,
    with ``reuse``, the finished build that already made this image. With an
    ``Idempotency-Key``, a repeat of the request gets the first answer again."""
    return idempotent(_submit_build, _replay_build)


def _submit_build() -> tuple[Response, str]:
    if request.mimetype == "multipart/form-data":
        submission = submit_from_form(request.form, one_upload("archive"))
    else:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise InvalidRequest(
                "Send a JSON object, or multipart form data with an 'archive' file."
            )
        reject_unknown_fields(data, JSON_FIELDS)
        submission = service().submit_git(
            data,
            url=data.get("git_url"),
            ref=data.get("git_ref"),
            reuse=parse_flag(data.get("reuse"), field="reuse"),
            submitted_by=g.token.name,
        )
    response = build_response(
        submission.build,
        submission.outcome,
        status=202 if submission.created else 200,
    )
    return response, submission.build.id


def build_response(build: Build, outcome: str, *, status: int) -> Response:
    response = jsonify(
        {**describe_build(build, base_url=base_url()), "submission": outcome}
    )
    response.status_code = status
    response.headers["Location"] = url_for("api.get_build", build_id=build.id)
    return response


def _replay_build(previous: dict[str, Any]) -> Response:
    build = service().ledger.get(previous["id"])
    return build_response(build, previous["submission"], status=previous["status"])


def idempotent(
    run: Callable[[], tuple[Response, str]],
    replay: Callable[[dict[str, Any]], Response],
) -> Response:
    """Run a POST once per ``Idempotency-Key`` (per token); answer repeats with
    ``replay`` of what the first one made."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return run()[0]
    keys: IdempotencyKeys = current_app.extensions["farm.idempotency"]
    with keys.claim(g.token.id, key, request_fingerprint()) as claim:
        if claim.previous is not None:
            response = replay(claim.previous)
            response.headers["Idempotent-Replayed"] = "true"
            return response
        response, made = run()
        submission = (response.get_json() or {}).get("submission")
        claim.record(id=made, status=response.status_code, submission=submission)
        return response


def request_fingerprint() -> str:
    """What this POST asks for, independent of how its body was encoded (a retried
    multipart upload gets a new boundary)."""
    if request.mimetype == "multipart/form-data":
        files = {}
        for name, upload in request.files.items():
            files[name] = hashlib.sha256(upload.read()).hexdigest()
            upload.seek(0)
        # Field names can be empty or odd in a hostile request: order them as text.
        form = sorted(
            ([str(name), str(value)] for name, value in request.form.items(multi=True)),
        )
        return fingerprint({"path": request.path, "form": form, "files": files})
    body = request.get_json(silent=True)
    if body is None:
        body = hashlib.sha256(request.get_data()).hexdigest()
    return fingerprint({"path": request.path, "json": body})


def one_upload(name: str) -> FileStorage | None:
    """The file a multipart request sends as ``name``, if any. Two or more are
    refused: which one to build would be a guess."""
    uploads = request.files.getlist(name)
    if len(uploads) > 1:
        raise InvalidRequest(f"Send one '{name}' file, not {len(uploads)}.", field=name)
    return uploads[0] if uploads else None


# Form fields that may come more than once; any other given twice is refused.
REPEATABLE_FORM_FIELDS = {"build_arg", "tag", "tags"}


def reject_repeated_fields(form: MultiDict[str, str]) -> None:
    """Refuse a form that gives a one-value field twice: which to use would be a
    guess."""
    for name in sorted(set(form.keys()) - REPEATABLE_FORM_FIELDS):
        values = form.getlist(name)
        if len(values) > 1:
            raise InvalidRequest(
                f"Send '{name}' once, not {len(values)} times.", field=name
            )


def parse_flag(value: Any, *, field: str) -> bool:
    text = str(value).strip().lower() if value is not None else ""
    if value is False or text in ("", "0", "false", "no", "off"):
        return False
    if value is True or text in ("1", "true", "yes", "on"):
        return True
    raise InvalidRequest(f"{field} must be true or false.", field=field)


def submit_from_form(form: MultiDict[str, str], archive: Any) -> Submission:
    """Submit from form fields: an uploaded archive, or else a git URL and ref."""
    reject_unknown_fields(form, FORM_FIELDS)
    reject_repeated_fields(form)
    options = options_from_form(form)
    reuse = parse_flag(form.get("reuse"), field="reuse")
    if archive is not None and archive.filename:
        return service().submit_archive(
            options,
            content=archive.read(),
            filename=archive.filename,
            reuse=reuse,
            submitted_by=g.token.name,
        )
    return service().submit_git(
        options,
        url=form.get("git_url"),
        ref=form.get("git_ref"),
        reuse=reuse,
        submitted_by=g.token.name,
    )


def options_from_form(form: MultiDict[str, str]) -> dict[str, Any]:
    """Build options from form fields; build args as JSON or repeated NAME=value."""
    build_args: Any = form.getlist("build_arg")
    raw_args = form.get("build_args", "").strip()
    if raw_args.startswith("{"):
        try:
            build_args = json.loads(raw_args)
        except ValueError as exc:
            raise InvalidRequest(
                "build_args is not valid JSON.", field="build_args"
            ) from exc
    elif raw_args:
        build_args += [line for line in raw_args.splitlines() if line.strip()]
    tags: list[str] = []
    for value in form.getlist("tags") + form.getlist("tag"):
        tags += value.replace(",", " ").split()
    return {
        "callback_url": form.get("callback_url"),
        "queue": form.get("queue"),
        "priority": form.get("priority"),
        "context": form.get("context"),
        "dockerfile": form.get("dockerfile"),
        "target": form.get("target"),
        "build_args": build_args,
        "tags": tags,
    }


@blueprint.get("/builds")
def list_builds() -> Any:
    states = [s for s in request.args.get("state", "").split(",") if s]
    known = {state.value for state in BuildState}
    if unknown := [s for s in states if s not in known]:
        raise InvalidRequest(
            f"Unknown state {unknown[0]!r}; use one of {', '.join(sorted(known))}.",
            field="state",
        )
    limit = _int_arg("limit", 50, maximum=MAX_PAGE_SIZE)
    offset = _int_arg("offset", 0, maximum=10**9)
    builds = service().ledger.recent(
        states=states,
        project=request.args.get("project") or None,
        ref=request.args.get("ref") or None,
        limit=limit,
        offset=offset,
    )
    return {
        "builds": [describe_build(b, base_url=base_url()) for b in builds],
        "limit": limit,
        "offset": offset,
    }


def _int_arg(name: str, default: int, *, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > maximum:
        raise InvalidRequest(
            f"{name} must be a whole number from 0 to {maximum}.", field=name
        )
    return int(raw)


@blueprint.get("/builds/<build_id>")
def get_build(build_id: str) -> Any:
    build = service().ledger.get(build_id)
    return {
        **describe_build(build, base_url=base_url()),
        "waiting": service().waiting(build),
        "callbacks": [
            describe_callback(c) for c in service().ledger.callbacks_of(build.id)
        ],
    }


@blueprint.get("/builds/<build_id>/log")
def get_log(build_id: str) -> Any:
    """The log from line ``start``: JSON, plain text, or with ``follow=1`` (or
    ``Accept: text/event-stream``) Server-Sent Events until the build ends."""
    start = _int_arg("start", 0, maximum=10**9)
    log_format = request.args.get("format") or "json"
    if log_format not in LOG_FORMATS:
        raise InvalidRequest(
            f"Unknown log format {log_format[:40]!r}; use json or text.",
            field="format",
        )
    if parse_flag(request.args.get("follow"), field="follow") or (
        request.accept_mimetypes.best == "text/event-stream"
    ):
        resume = request.headers.get("Last-Event-ID", "")
        if resume.isdigit():
            start = int(resume)
        return stream_log(build_id, start)
    lines, finished = service().read_log(build_id, start=start)
    if log_format == "text":
        response = Response(
            "".join(line + "\n" for line in lines), mimetype="text/plain"
        )
        response.headers["X-Farm-Next-Line"] = str(start + len(lines))
        response.headers["X-Farm-Build-Finished"] = "1" if finished else "0"
        return response
    return {
        "lines": lines,
        "start": start,
        "next": start + len(lines),
        "finished": finished,
    }


def stream_log(build_id: str, start: int) -> Response:
    """Server-Sent Events: ``line`` events whose id is the line to resume from,
    ``progress`` events, and a last ``end`` event with the build's JSON."""
    builds = service()
    builds.ledger.get(build_id)  # a 404 now, not inside the stream
    url = base_url()
    followers: threading.BoundedSemaphore = current_app.extensions["farm.followers"]
    if not followers.acquire(blocking=False):
        raise TooManyFollowers(
            "Too many live logs are being followed on this farm right now; read "
            "the log without follow=1, or try again shortly."
        )

    def events() -> Iterator[str]:
        yield f"retry: {SSE_RETRY_MS}\n\n"
        quiet_since = time.monotonic()
        for event in builds.follow_log(build_id, start=start):
            if event is None:
                if time.monotonic() - quiet_since >= SSE_KEEPALIVE_SECONDS:
                    quiet_since = time.monotonic()
                    yield ": still running\n\n"
                continue
            quiet_since = time.monotonic()
            if event.kind == "line":
                data = event.data.replace("\r", "")
            elif event.kind == "end":
                data = json.dumps(describe_build(event.data, base_url=url))
            else:
                data = json.dumps(event.data)
            yield f"event: {event.kind}\nid: {event.position}\ndata: {data}\n\n"

    response = Response(
        events(),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    # The server closes the response when the stream ends or the client leaves.
    response.call_on_close(followers.release)
    return response


@blueprint.post("/builds/<build_id>/retry")
def retry_build(build_id: str) -> Any:
    """A new build of an ended build's inputs (200 if it joined one in progress)."""
    submission = service().retry(build_id, submitted_by=g.token.name)
    return build_response(
        submission.build,
        submission.outcome,
        status=202 if submission.created else 200,
    )


@blueprint.post("/builds/<build_id>/cancel")
def cancel_build(build_id: str) -> Any:
    build = service().cancel(build_id)
    return jsonify(describe_build(build, base_url=base_url())), 202


@blueprint.get("/nodes")
def list_nodes() -> Any:
    return {"nodes": service().nodes()}


@blueprint.get("/queues")
def list_queues() -> Any:
    """Each named queue: what waits in it (oldest first) and the nodes serving it."""
    return {"queues": service().queue_overview()}


@blueprint.post("/groups")
def submit_group() -> Any:
    """Several images from one source: JSON with a git source, or multipart with an
    'archive' file and a 'group' field holding the same JSON without the source."""
    return idempotent(
        _submit_group, lambda previous: group_response(previous["id"], status=202)
    )


def _submit_group() -> tuple[Response, str]:
    groups: GroupService = current_app.extensions["farm.groups"]
    if request.mimetype == "multipart/form-data":
        reject_repeated_fields(request.form)
        try:
            payload = json.loads(request.form.get("group") or "{}")
        except ValueError as exc:
            raise InvalidRequest(
                "The 'group' field is not valid JSON.", field="group"
            ) from exc
        archive = one_upload("archive")
        if not isinstance(payload, dict) or archive is None:
            raise InvalidRequest("Send an 'archive' file and a 'group' JSON object.")
        reject_unknown_fields(payload, GROUP_FIELDS)
        group = groups.submit_archive(
            payload, archive.read(), submitted_by=g.token.name
        )
    else:
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            raise InvalidRequest("Send a JSON object with git_url and images.")
        reject_unknown_fields(payload, GROUP_FIELDS | {"git_url", "git_ref"})
        group = groups.submit_git(payload, submitted_by=g.token.name)
    return group_response(group.id, status=202), group.id


def group_response(group_id: str, *, status: int) -> Response:
    groups: GroupService = current_app.extensions["farm.groups"]
    response = jsonify(groups.describe(group_id, base_url=base_url()))
    response.status_code = status
    response.headers["Location"] = url_for("api.get_group", group_id=group_id)
    return response


@blueprint.get("/groups/<group_id>")
def get_group(group_id: str) -> Any:
    groups: GroupService = current_app.extensions["farm.groups"]
    return groups.describe(group_id, base_url=base_url())


@blueprint.post("/groups/<group_id>/cancel")
def cancel_group(group_id: str) -> Any:
    groups: GroupService = current_app.extensions["farm.groups"]
    groups.cancel(group_id)
    return jsonify(groups.describe(group_id, base_url=base_url())), 202
