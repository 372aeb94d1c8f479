"""The farm's exception tree: one root, one class per kind of failure.

Each class carries a stable ``code`` and the HTTP ``status`` the API answers with, so
the web layer turns any of them into ``{"error": {"code", "message"}}`` in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class FarmError(Exception):
    """Root of every error the farm raises on purpose."""

    code = "farm_error"
    status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidRequest(FarmError):
    """The request is malformed or names something impossible; nothing was recorded."""

    code = "invalid_request"
    status = 400

    def __init__(
        self, message: str, *, field: str | None = None, **details: Any
    ) -> None:
        if field is not None:
            details["field"] = field
        super().__init__(message, **details)
        self.field = field


class PayloadTooLarge(InvalidRequest):
    code = "payload_too_large"
    status = 413


class UriTooLong(InvalidRequest):
    """The request's URL (path and query) is longer than the web app reads."""

    code = "uri_too_long"
    status = 414


class NotFound(FarmError):
    code = "not_found"
    status = 404


class Conflict(FarmError):
    code = "conflict"
    status = 409


class AttemptLost(Conflict):
    """A worker tried to record a build that was meanwhile handed to another node."""

    code = "attempt_lost"


class StoreUnavailable(FarmError):
    """The database or Redis could not be reached."""

    code = "store_unavailable"
    status = 503


class SourceError(FarmError):
    """The build's source could not be fetched or unpacked."""

    code = "source_failed"
    status = 422


class EngineError(FarmError):
    """The Docker engine refused or failed a call."""

    code = "engine_failed"
    status = 502


class BuildFailed(FarmError):
    """BuildKit reported a failed step or a Dockerfile it could not read.

    ``stage``, ``dockerfile_line`` and ``step`` also go into ``details`` when known;
    ``log_tail`` keeps the failed step's last output lines for the build record.
    """

    code = "build_failed"
    status = 422

    def __init__(
        self,
        message: str,
        *,
        stage: str | None = None,
        dockerfile_line: int | None = None,
        step: str | None = None,
        log_tail: Sequence[str] = (),
    ) -> None:
        known = {"stage": stage, "dockerfile_line": dockerfile_line, "step": step}
        super().__init__(message, **{k: v for k, v in known.items() if v is not None})
        self.stage = stage
        self.dockerfile_line = dockerfile_line
        self.step = step
        self.log_tail = list(log_tail)


class BuildTimedOut(FarmError):
    """A build ran past the farm's time limit and was stopped."""

    code = "timed_out"
    status = 422


class BuildLogTooLarge(FarmError):
    """A build's log grew past the farm's limit and the build was stopped."""

    code = "log_too_large"
    status = 422


class HandedBack(FarmError):
    """The build's worker is stopping and gave the build back to the queue."""

    code = "handed_back"
    status = 503


class ImageTooLarge(FarmError):
    """A build made an image larger than the farm pushes."""

    code = "image_too_large"
    status = 422


class DiskFull(FarmError):
    """The engine's disk ran low while the build ran, and the build was stopped."""

    code = "disk_full"
    status = 507


class BuildCancelled(FarmError):
    """A build was stopped on request before it finished; nothing was produced."""

    code = "build_cancelled"
    status = 409


class PushFailed(FarmError):
    code = "push_failed"
    status = 502


class Unauthorized(FarmError):
    """No token, or one that is unknown, malformed or revoked."""

    code = "unauthorized"
    status = 401


class Forbidden(FarmError):
    """A valid token without the scope the call needs."""

    code = "forbidden"
    status = 403


class IdempotencyKeyReused(FarmError):
    """An Idempotency-Key sent again with a different request."""

    code = "idempotency_key_reused"
    status = 422


class TooManyFollowers(FarmError):
    """As many live logs are followed as the web app lets at once."""

    code = "too_many_followers"
    status = 503


# What went wrong, by the error code a failed build recorded: the user's Dockerfile
# or request, their source, or the time limit; any other code is the farm's own
# infrastructure (engine, registry, a lost worker).
FAILURE_KINDS = {
    BuildFailed.code: "dockerfile",
    InvalidRequest.code: "dockerfile",
    SourceError.code: "source",
    PayloadTooLarge.code: "source",
    BuildTimedOut.code: "timeout",
    BuildLogTooLarge.code: "dockerfile",
    ImageTooLarge.code: "dockerfile",
    "cancelled": "cancelled",
}


def failure_kind(state: str, error: Mapping[str, Any] | None) -> str:
    """The kind of failure that ended a build in ``state``: "none" for success."""
    if state == "succeeded":
        return "none"
    if state == "cancelled":
        return "cancelled"
    code = (error or {}).get("code")
    return FAILURE_KINDS.get(str(code), "infrastructure")
