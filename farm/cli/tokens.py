"""``farm token``: an operator's commands to make, list and revoke API tokens.

They work on the farm's database directly (``FARM_DATABASE_URL``), so they run where
the web app's settings are, and need no token themselves.
"""

from __future__ import annotations

import json

import click

from farm.config import Settings
from farm.errors import FarmError
from farm.ledger import BuildLedger
from farm.tokens import SCOPES, TokenService, describe_token


def _service() -> TokenService:
    ledger = BuildLedger.from_url(Settings.from_env().database_url)
    ledger.create_tables()
    return TokenService(ledger)


@click.group("token")
def token() -> None:
    """Make, list and revoke API tokens (on the farm's database)."""


@token.command("create")
@click.option("--name", required=True, help="Who or what holds it, e.g. alice or ci.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(SCOPES),
    default=("submit",),
    show_default=True,
    help="read: see builds; submit: also start, cancel, retry; admin: everything.",
)
def create(name: str, scopes: tuple[str, ...]) -> None:
    """Make a token and print it; it is shown this once and stored only hashed."""
    try:
        record, text = _service().create(name, scopes)
    except FarmError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(text)
    click.echo(
        f"token {record.id} for {record.name} ({', '.join(record.scopes)}); "
        "keep it secret: it cannot be shown again.",
        err=True,
    )


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_tokens(as_json: bool) -> None:
    """List tokens (never their secrets)."""
    try:
        tokens = [describe_token(t) for t in _service().list()]
    except FarmError as exc:
        raise click.ClickException(exc.message) from exc
    if as_json:
        click.echo(json.dumps(tokens, indent=2))
        return
    for t in tokens:
        state = f"revoked {t['revoked_at'][:19]}" if t["revoked_at"] else "live"
        click.echo(
            f"{t['id']}  {t['name']:<20}  {','.join(t['scopes']):<18}  "
            f"created {t['created_at'][:19]}  {state}"
        )


@token.command("revoke")
@click.argument("token_id")
def revoke(token_id: str) -> None:
    """Revoke a token at once: API calls with it fail, its page sessions end."""
    try:
        record = _service().revoke(token_id)
    except FarmError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"token {record.id} ({record.name}) revoked")
