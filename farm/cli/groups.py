"""``farm group``: several images of one source built together, and their smoke test."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from farm.cli.client import (
    EXIT_BUILD_FAILED,
    EXIT_INTERRUPTED,
    api_client,
    fail,
    looks_like_git_url,
    server_option,
)
from farm.client import ApiError, FarmClient


@click.group("group")
def group() -> None:
    """Build several images of one source together (like a compose file)."""


@group.command("submit")
@click.argument("source")
@click.option(
    "--file",
    "-f",
    "group_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON file: {name, smoke_test, images: [{name, context, tags, smoke, ...}]}.",
)
@click.option("--ref", default="", help="Git branch, tag or commit (git sources).")
@click.option("--wait", is_flag=True, help="Wait for the builds and the smoke test.")
@click.option("--json", "as_json", is_flag=True, help="Print the group as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the group id.")
@server_option
def submit(
    source: str,
    group_file: Path,
    ref: str,
    wait: bool,
    as_json: bool,
    quiet: bool,
    server: str,
) -> None:
    """Build the images that FILE names from SOURCE: a local folder (uploaded, each
    image's context relative to it) or a git URL."""
    try:
        request = json.loads(group_file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise click.BadParameter(
            f"{group_file} is not valid JSON: {exc}", param_hint="--file"
        ) from exc
    if not isinstance(request, dict):
        raise click.BadParameter(
            f"{group_file} must hold a JSON object.", param_hint="--file"
        )
    folder = Path(source)
    if ref and folder.is_dir():
        raise click.BadParameter(
            "--ref applies to git sources; a folder is uploaded as it is.",
            param_hint="--ref",
        )
    if not looks_like_git_url(source) and not folder.is_dir():
        raise click.BadParameter(
            f"{source!r} is neither a folder nor a git URL.", param_hint="SOURCE"
        )
    if folder.is_dir():
        _check_contexts(folder, request)
    client = api_client(server)
    try:
        described = (
            client.submit_group_folder(folder, request)
            if folder.is_dir()
            else client.submit_group_git(source, ref, request)
        )
        if quiet and not wait:
            click.echo(described["id"])
            return
        if wait:
            click.echo(f"group {described['id']} submitted; waiting", err=True)
            for image in described["images"]:
                click.echo(
                    f"  {image['name']}: build {image['id']} {image['submission']}  "
                    f"{image['page_url']}",
                    err=True,
                )
            described = _wait(client, described["id"])
    except ApiError as exc:
        fail(exc)
        return
    _conclude(described, as_json=as_json, waited=wait)


@group.command("status")
@click.argument("group_id")
@click.option("--wait", is_flag=True, help="Wait for the builds and the smoke test.")
@click.option("--json", "as_json", is_flag=True)
@server_option
def status(group_id: str, wait: bool, as_json: bool, server: str) -> None:
    """Show a group: each image's build and the smoke test. With --wait, exit 1
    unless every image was built and the smoke test (if asked for) passed."""
    client = api_client(server)
    try:
        described = _wait(client, group_id) if wait else client.get_group(group_id)
    except ApiError as exc:
        fail(exc)
        return
    _conclude(described, as_json=as_json, waited=wait)


@group.command("cancel")
@click.argument("group_id")
@server_option
def cancel(group_id: str, server: str) -> None:
    """Cancel every image of the group still queued or running."""
    try:
        described = api_client(server).cancel_group(group_id)
    except ApiError as exc:
        fail(exc)
        return
    _show(described, as_json=False)


def _check_contexts(folder: Path, request: dict[str, Any]) -> None:
    """Refuse, before packing, an image whose context or Dockerfile is missing."""
    images = request.get("images")
    for image in images if isinstance(images, list) else []:
        if not isinstance(image, dict):
            continue  # the farm says what is wrong with it
        context = folder / str(image.get("context") or ".")
        dockerfile = context / str(image.get("dockerfile") or "Dockerfile")
        if not context.is_dir() or not dockerfile.is_file():
            raise click.BadParameter(
                f"image {image.get('name')!r}: there is no {dockerfile} to build.",
                param_hint="--file",
            )


def succeeded(described: dict[str, Any]) -> bool:
    smoke = described.get("smoke_test")
    return described["state"] == "succeeded" and (
        smoke is None or smoke["state"] == "passed"
    )


def _conclude(described: dict[str, Any], *, as_json: bool, waited: bool) -> None:
    """Print the group; after waiting, exit 1 unless it all succeeded."""
    _show(described, as_json=as_json)
    if waited and not succeeded(described):
        sys.exit(EXIT_BUILD_FAILED)


def _wait(client: FarmClient, group_id: str) -> dict[str, Any]:
    try:
        return client.wait_group(group_id)
    except KeyboardInterrupt:
        click.echo(
            f"\nStopped waiting; the group goes on. To stop it: "
            f"farm group cancel {group_id}",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)


def _show(described: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    smoke = described.get("smoke_test")
    headline = f"group {described['id']}  {described['state']}"
    if smoke:
        headline += f"  smoke test {smoke['state']}"
    click.echo(f"{headline}  {described['page_url']}")
    width = max(len(image["name"]) for image in described["images"])
    for image in described["images"]:
        line = f"  {image['name']:<{width}}  {image['id']}  {image['state']}"
        if image.get("image"):
            line += f"  {image['image']['references'][0]}@{image['image']['digest']}"
        if image.get("error"):
            line += f"  error: {image['error']['message']}"
        click.echo(line)
    if not smoke:
        return
    if smoke.get("reason"):
        click.echo(f"smoke test {smoke['state']}: {smoke['reason']}")
    if smoke.get("error"):
        click.echo(f"smoke test {smoke['state']}: {smoke['error']['message']}")
    if smoke["images"]:
        click.echo(f"smoke test on {smoke['node']}:")
    for result in smoke["images"]:
        up = "stayed up" if result["stayed_up"] else "did not stay up"
        if result["answered"] is None:
            asked = "not asked" if result["port"] is None else "exited before asked"
        else:
            asked = "answered" if result["answered"] else "did not answer"
        click.echo(f"  {result['name']:<{width}}  {up}, {asked}  ({result['detail']})")
