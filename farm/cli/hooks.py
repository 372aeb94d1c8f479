"""``farm hook``: an operator's commands for git push webhooks (GitHub, GitLab).

Like ``farm token`` they work on the farm's database directly, where the web app's
settings are.
"""

from __future__ import annotations

import json

import click

from farm.builds import BuildService
from farm.cli.client import parse_build_args
from farm.config import Settings
from farm.errors import FarmError
from farm.hooks import PROVIDERS, HookService, describe_hook


def _service() -> tuple[HookService, Settings]:
    settings = Settings.from_env()
    return HookService(BuildService.from_settings(settings)), settings


@click.group("hook")
def hook() -> None:
    """Build on git pushes: make, list and delete webhooks."""


@hook.command("create")
@click.option("--name", required=True, help="What the hook is for, e.g. shop-web.")
@click.option("--provider", required=True, type=click.Choice(PROVIDERS))
@click.option("--git-url", required=True, help="The repository the farm fetches.")
@click.option(
    "--branch",
    "branches",
    multiple=True,
    help="Branch or pattern to build (main, release/*); repeat. Default: all.",
)
@click.option("--context", default=None)
@click.option("--dockerfile", default=None)
@click.option("--target", default=None)
@click.option(
    "--tag", "tags", multiple=True, help="Image tag; {branch} and {sha} are filled in."
)
@click.option("--build-arg", "build_args", multiple=True, help="NAME=value.")
@click.option("--queue", default=None)
@click.option("--priority", type=click.Choice(["normal", "urgent"]), default=None)
def create(
    name: str,
    provider: str,
    git_url: str,
    branches: tuple[str, ...],
    context: str | None,
    dockerfile: str | None,
    target: str | None,
    tags: tuple[str, ...],
    build_args: tuple[str, ...],
    queue: str | None,
    priority: str | None,
) -> None:
    """Make a hook; print the URL and secret to give the git host."""
    options = {
        "context": context,
        "dockerfile": dockerfile,
        "target": target,
        "tags": list(tags),
        "build_args": parse_build_args(build_args),
        "queue": queue,
        "priority": priority,
    }
    service, settings = _service()
    try:
        made = service.create(
            name=name,
            provider=provider,
            git_url=git_url,
            branches=branches or ("*",),
            options={k: v for k, v in options.items() if v not in (None, [], {})},
        )
    except FarmError as exc:
        raise click.ClickException(exc.message) from exc
    described = describe_hook(made, base_url=settings.web_url)
    header = "Secret" if provider == "github" else "Secret token"
    click.echo(f"URL:     {described['url']}")
    click.echo(f"{header}: {made.secret}")
    click.echo(
        "Give both to the git host (content type application/json, push events); "
        f"pushes to {', '.join(made.branches)} of {made.repository} then build.",
        err=True,
    )


@hook.command("list")
def list_hooks() -> None:
    """List hooks (not their secrets)."""
    service, settings = _service()
    try:
        hooks = service.ledger.list_hooks()
    except FarmError as exc:
        raise click.ClickException(exc.message) from exc
    for made in hooks:
        click.echo(json.dumps(describe_hook(made, base_url=settings.web_url)))


@hook.command("delete")
@click.argument("hook_id")
def delete(hook_id: str) -> None:
    """Delete a hook: its URL answers 404 from then on."""
    service, _ = _service()
    try:
        service.ledger.delete_hook(hook_id)
    except FarmError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"hook {hook_id} deleted")
