"""API tokens: made by an operator, shown once, stored only as a hash.

A token reads ``farm_<id>_<secret>``. The id finds the record; the secret is checked
against its SHA-256 (the secret is 256 random bits, so a fast hash is enough). Scopes
nest: ``read`` sees builds, ``submit`` also submits, cancels and retries them, and
``admin`` also manages tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable
from typing import Any

from farm.errors import Forbidden, InvalidRequest, Unauthorized
from farm.ledger import BuildLedger, as_utc
from farm.models import ApiToken

logger = logging.getLogger(__name__)

SCOPES = ("read", "submit", "admin")
PREFIX = "farm_"
_TOKEN = re.compile(r"^farm_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")


def grants(scopes: Iterable[str], needed: str) -> bool:
    """Whether a token with ``scopes`` may do what needs ``needed``."""
    rank = SCOPES.index(needed)
    return any(SCOPES.index(scope) >= rank for scope in scopes if scope in SCOPES)


def clean_scopes(values: Iterable[str]) -> list[str]:
    given = set(values)
    unknown = sorted(str(scope) for scope in given - set(SCOPES))
    if unknown or not given:
        raise InvalidRequest(
            f"Scopes are {', '.join(SCOPES)}; give at least one "
            f"(not {', '.join(unknown) or 'none'}).",
            field="scopes",
        )
    return sorted(given, key=SCOPES.index)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenService:
    """Create, check, list and revoke tokens in the farm's database."""

    def __init__(self, ledger: BuildLedger) -> None:
        self.ledger = ledger

    def create(self, name: str, scopes: Iterable[str]) -> tuple[ApiToken, str]:
        """Record a new token; return it and the only copy of its full text."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequest(
                "A token needs a name: letters, digits, space, '.', '_', '@', '-', "
                "at most 64 characters.",
                field="name",
            )
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        token = ApiToken(
            id=token_id,
            name=name,
            scopes=clean_scopes(scopes),
            secret_hash=_hash(secret),
        )
        self.ledger.save_token(token)
        logger.info("token=%s name=%s scopes=%s: created", token_id, name, token.scopes)
        return token, f"{PREFIX}{token_id}_{secret}"

    def check(self, text: str | None, needed: str) -> ApiToken:
        """The live token ``text`` names, if it grants ``needed``."""
        token = self.identify(text)
        if not grants(token.scopes, needed):
            raise Forbidden(
                f"This token's scopes ({', '.join(token.scopes)}) do not allow this; "
                f"it needs {needed!r}.",
                needed=needed,
            )
        return token

    def identify(self, text: str | None) -> ApiToken:
        """The live token ``text`` names, whatever its scopes."""
        match = _TOKEN.match(text or "")
        if match is None and text:
            raise Unauthorized(
                "That is not a farm token: they look like farm_<12 hex>_<secret>."
            )
        if match is None:
            raise Unauthorized(
                "Send a farm token: 'Authorization: Bearer farm_…' "
                "(an operator makes one with 'farm token create')."
            )
        token = self.ledger.find_token(match.group(1))
        if token is None or not hmac.compare_digest(
            token.secret_hash, _hash(match.group(2))
        ):
            raise Unauthorized("This token is not known to the farm.")
        if token.revoked_at is not None:
            raise Unauthorized("This token was revoked.")
        return token

    def live(self, token_id: str) -> ApiToken | None:
        """The token with this id unless it is gone or revoked (for sessions)."""
        token = self.ledger.find_token(token_id)
        return token if token is not None and token.revoked_at is None else None

    def revoke(self, token_id: str) -> ApiToken:
        token = self.ledger.revoke_token(token_id)
        logger.info("token=%s: revoked", token_id)
        return token

    def list(self) -> list[ApiToken]:
        return self.ledger.list_tokens()


def describe_token(token: ApiToken) -> dict[str, Any]:
    created = as_utc(token.created_at)
    revoked = as_utc(token.revoked_at)
    return {
        "id": token.id,
        "name": token.name,
        "scopes": list(token.scopes),
        "created_at": created.isoformat() if created else None,
        "revoked_at": revoked.isoformat() if revoked else None,
    }
