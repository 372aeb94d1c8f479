"""Completion callbacks: when a build ends, POST its result to the URL it named.

Each delivery is signed with the farm's ``FARM_CALLBACK_SECRET``: the headers carry
``X-Farm-Timestamp`` (Unix seconds) and ``X-Farm-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``<timestamp>.<body>``, so a receiver can check both who sent it and
that it is fresh. A delivery that does not get a 2xx answer is tried again after 10 s,
1 min, 5 min, 30 min and 2 h, then given up; every attempt is recorded on the build.
Only allowed destinations are reached (``farm.destinations``), and redirects are not
followed, so a callback cannot be bounced to an internal address.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import requests

from farm.buildspec import redact_url
from farm.destinations import DestinationPolicy
from farm.errors import FarmError, InvalidRequest
from farm.ledger import BuildLedger, as_utc
from farm.models import Build, Callback, utcnow

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = (10, 60, 300, 1800, 7200)
SEND_TIMEOUT_SECONDS = 10
LEASE_SECONDS = 60
MAX_URL_CHARS = 2048


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Farm-Signature`` value of a delivery."""
    message = timestamp.encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def clean_callback_url(
    value: Any, *, policy: DestinationPolicy, secret: str
) -> str | None:
    """A callback URL a request may name: http(s), to an allowed host."""
    if value in (None, ""):
        return None
    if not secret:
        raise InvalidRequest(
            "This farm sends no callbacks: its operator has not set "
            "FARM_CALLBACK_SECRET.",
            field="callback_url",
        )
    if (
        not isinstance(value, str)
        or len(value) > MAX_URL_CHARS
        or not value.startswith(("http://", "https://"))
        or any(ch.isspace() for ch in value)
    ):
        raise InvalidRequest(
            "callback_url must be an http:// or https:// URL.", field="callback_url"
        )
    policy.check_url(value, field="callback_url")
    return value


def describe_callback(callback: Callback) -> dict[str, Any]:
    delivered = as_utc(callback.delivered_at)
    return {
        "url": redact_url(callback.url),
        "state": callback.state,
        "attempts": callback.attempts,
        "last_status": callback.last_status,
        "last_error": callback.last_error,
        "delivered_at": delivered.isoformat() if delivered else None,
    }


class CallbackSender:
    """Sends the callbacks whose builds ended, on any node, each by one node."""

    def __init__(
        self,
        ledger: BuildLedger,
        *,
        secret: str,
        policy: DestinationPolicy,
        describe: Callable[[Build], dict[str, Any]],
        session: requests.Session | None = None,
    ) -> None:
        self.ledger = ledger
        self.describe = describe
        self.secret = secret
        self.policy = policy
        self.session = session or requests.Session()
        self.session.trust_env = False  # never through a proxy from the environment

    def deliver_due(self, *, build_id: str | None = None) -> int:
        """Send every callback that is due (of one build, or all); return how many
        were attempted."""
        if not self.secret:
            return 0
        taken = self.ledger.take_due_callbacks(
            lease_seconds=LEASE_SECONDS, build_id=build_id
        )
        for callback, build in taken:
            self._send(callback, self.describe(build))
        return len(taken)

    def _send(self, callback: Callback, build: dict[str, Any]) -> None:
        body = json.dumps({"event": "build.finished", "build": build}).encode()
        timestamp = str(int(time.time()))
        attempt = callback.attempts + 1
        status: int | None = None
        try:
            self.policy.check_url(callback.url, field="callback_url")
            answer = self.session.post(
                callback.url,
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": "farm-callbacks",
                    "X-Farm-Event": "build.finished",
                    "X-Farm-Delivery": callback.id,
                    "X-Farm-Timestamp": timestamp,
                    "X-Farm-Signature": sign(self.secret, timestamp, body),
                },
                timeout=SEND_TIMEOUT_SECONDS,
                allow_redirects=False,
            )
            status = answer.status_code
            error = None if 200 <= status < 300 else f"answered HTTP {status}"
        except FarmError as exc:
            error = exc.message
        except requests.RequestException as exc:
            error = f"could not be reached ({type(exc).__name__})"
        if error is None:
            self.ledger.record_callback(
                callback.id,
                state="delivered",
                attempts=attempt,
                last_status=status,
                last_error=None,
                delivered_at=utcnow(),
            )
            logger.info("build=%s: callback delivered", callback.build_id)
            return
        if attempt > len(RETRY_AFTER_SECONDS):
            values: dict[str, Any] = {"state": "failed"}
        else:
            delay = RETRY_AFTER_SECONDS[attempt - 1]
            values = {"next_at": utcnow() + timedelta(seconds=delay)}
        values.update(attempts=attempt, last_status=status, last_error=error)
        self.ledger.record_callback(callback.id, **values)
        logger.warning(
            "build=%s: callback attempt %d %s", callback.build_id, attempt, error
        )
