"""``Idempotency-Key``: a client that retries a POST gets the answer of its first try.

The first request with a key runs and its outcome (what it made, and the status it
was answered with) is kept for a day under the caller's token and the key. A repeat
with the same key and the same request gets that outcome again; the same key with a
different request is refused, and repeats arriving together wait for the first.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from farm.errors import IdempotencyKeyReused, InvalidRequest
from farm.livestate import LiveState

KEEP_SECONDS = 24 * 3600
LOCK_SECONDS = 120
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass
class Claim:
    """One request's hold on its key: ``previous`` is the earlier outcome, if any;
    otherwise the request records its own with :meth:`record`."""

    previous: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None

    def record(self, **outcome: Any) -> None:
        self.outcome = outcome


def fingerprint(parts: Any) -> str:
    """A digest of what a request asked for, however it was encoded."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class IdempotencyKeys:
    def __init__(self, live: LiveState) -> None:
        self.live = live

    @contextmanager
    def claim(self, scope: str, key: str, request: str) -> Iterator[Claim]:
        """Hold ``key`` (for the caller ``scope``) while the request runs."""
        if not _KEY.match(key):
            raise InvalidRequest(
                "Idempotency-Key must be 1 to 255 visible ASCII characters.",
                field="Idempotency-Key",
            )
        name = f"idempotency:{scope}:{hashlib.sha256(key.encode()).hexdigest()}"
        with self.live.locked(name, seconds=LOCK_SECONDS):
            previous = self.live.recall(name)
            if previous is not None and previous.get("request") != request:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was used for a different request; "
                    "use a new key for a new request.",
                )
            claim = Claim(previous=previous)
            yield claim
            if previous is None and claim.outcome is not None:
                self.live.remember(
                    name, {"request": request, **claim.outcome}, seconds=KEEP_SECONDS
                )
