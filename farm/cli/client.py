"""Commands that talk to a running farm over its API: submit, status, logs, cancel."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from farm.client import ApiError, FarmClient

LOCAL_TOKEN_FILE = Path("/var/lib/farm/local/token")
EXIT_BUILD_FAILED = 1
EXIT_API_ERROR = 3
EXIT_INTERRUPTED = 130

server_option = click.option(
    "--server",
    default=lambda: os.environ.get("FARM_SERVER", "http://127.0.0.1:8000"),
    show_default="$FARM_SERVER or http://127.0.0.1:8000",
    help="The farm's web address.",
)


def api_client(server: str) -> FarmClient:
    return FarmClient(server, token=find_token())


def find_token() -> str | None:
    """The token to call the farm with: ``FARM_TOKEN``, else the file named by
    ``FARM_TOKEN_FILE``, else the one ``farm local up`` made, if readable. Tokens
    are never taken on the command line, where other users could see them."""
    if os.environ.get("FARM_TOKEN"):
        return os.environ["FARM_TOKEN"].strip()
    named = os.environ.get("FARM_TOKEN_FILE")
    path = Path(named or LOCAL_TOKEN_FILE)
    try:
        return path.read_text().strip() or None
    except OSError as exc:
        if named:
            click.echo(f"Warning: FARM_TOKEN_FILE {named}: {exc.strerror}", err=True)
        return None


def fail(exc: ApiError) -> None:
    click.echo(f"Error: {exc.message} ({exc.code})", err=True)
    sys.exit(EXIT_API_ERROR)


def follow_build(client: FarmClient, build: dict[str, Any]) -> dict[str, Any]:
    """Print the build's log as it grows, with a progress line on a terminal, and
    return the build once it ended."""
    progress = ProgressLine(live=sys.stderr.isatty())
    try:
        for kind, data in client.follow(build["id"]):
            if kind == "line":
                progress.clear()
                click.echo(data, err=True)
                progress.draw()
            elif kind == "progress":
                progress.update(data)
            elif kind == "end":
                progress.clear()
                return dict(data)
    except KeyboardInterrupt:
        progress.clear()
        click.echo(
            f"\nStopped following; the build goes on. To stop it: "
            f"farm cancel {build['id']}",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    finally:
        progress.clear()
    return client.get(build["id"])


class ProgressLine:
    """``state · steps done/total · cached`` kept on the terminal's last line; off a
    terminal, a line each time the state changes."""

    def __init__(self, *, live: bool) -> None:
        self.live = live
        self.text = ""
        self.state = ""

    def update(self, progress: dict[str, Any]) -> None:
        self.text = (
            f"[{progress['state']}] {progress['steps_done']}/{progress['steps_total']} "
            f"steps done, {progress['steps_cached']} cached"
        )
        if self.live:
            self.draw()
        elif progress["state"] != self.state:
            click.echo(self.text, err=True)
        self.state = progress["state"]

    def draw(self) -> None:
        if self.live and self.text:
            click.echo(f"\r\x1b[K{self.text}", err=True, nl=False)

    def clear(self) -> None:
        if self.live and self.text:
            click.echo("\r\x1b[K", err=True, nl=False)


def parse_build_args(assignments: tuple[str, ...]) -> dict[str, str]:
    """``--build-arg NAME=value`` options as a mapping; a usage error otherwise."""
    parsed = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            raise click.BadParameter(
                f"{assignment!r} must look like NAME=value.", param_hint="--build-arg"
            )
        parsed[name] = value
    return parsed


def looks_like_git_url(source: str) -> bool:
    """A URL with a scheme, or git's user@host:path form."""
    return "://" in source or ("@" in source and ":" in source.split("/", 1)[0])


def _summary(build: dict[str, Any]) -> str:
    line = f"{build['id']}  {build['state']}"
    if build.get("image"):
        line += f"  {build['image']['references'][0]}@{build['image']['digest']}"
    if build.get("error"):
        error = build["error"]
        where = ", ".join(
            f"{k} {error[k]}" for k in ("stage", "dockerfile_line") if error.get(k)
        )
        line += f"  error: {error['message']}" + (f" ({where})" if where else "")
    return line


@click.command()
@click.argument("source")
@click.option("--ref", default="", help="Git branch, tag or commit (git sources).")
@click.option(
    "--context",
    default=".",
    show_default=True,
    help="Folder inside the source to use as build context.",
)
@click.option(
    "--dockerfile",
    "-f",
    default="Dockerfile",
    show_default=True,
    help="Dockerfile path, relative to the context.",
)
@click.option("--target", default=None, help="Stage to build.")
@click.option("--tag", "-t", "tags", multiple=True, help="Image name[:tag] to push.")
@click.option("--build-arg", "build_args", multiple=True, help="NAME=value.")
@click.option("--queue", default=None, help="A named queue (the farm's default else).")
@click.option(
    "--priority",
    type=click.Choice(["normal", "urgent"]),
    default=None,
    help="urgent builds go before any normal one.",
)
@click.option(
    "--follow",
    "--wait",
    "wait",
    is_flag=True,
    help="Follow the log live with a progress line; exit 1 if the build fails.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the build as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the build id.")
@click.option(
    "--reuse",
    is_flag=True,
    help="Answer with an earlier build of the same inputs if one succeeded.",
)
@server_option
def submit(
    source: str,
    ref: str,
    context: str,
    dockerfile: str,
    target: str | None,
    tags: tuple[str, ...],
    build_args: tuple[str, ...],
    queue: str | None,
    priority: str | None,
    wait: bool,
    as_json: bool,
    quiet: bool,
    reuse: bool,
    server: str,
) -> None:
    """Build SOURCE: a local folder (uploaded) or a git URL."""
    client = api_client(server)
    if ref and Path(source).is_dir():
        raise click.BadParameter(
            "--ref applies to git sources; a folder is uploaded as it is.",
            param_hint="--ref",
        )
    if not looks_like_git_url(source) and not Path(source).is_dir():
        raise click.BadParameter(
            f"{source!r} is neither a folder nor a git URL.", param_hint="SOURCE"
        )
    parse_build_args(build_args)
    options: dict[str, Any] = {
        "context": context,
        "dockerfile": dockerfile,
        "target": target,
        "tags": list(tags),
        "build_arg": list(build_args),
        "reuse": reuse,
    }
    options |= {k: v for k, v in (("queue", queue), ("priority", priority)) if v}
    try:
        if Path(source).is_dir():
            build = client.submit_folder(Path(source), options)
        else:
            options["build_args"] = options.pop("build_arg")
            build = client.submit_git(source, ref, options)
        if quiet and not wait:
            click.echo(build["id"])
            return
        if not wait:
            click.echo(
                json.dumps(build, indent=2)
                if as_json
                else f"{build['id']}  {build['state']}  {build['submission']}  "
                f"{build['page_url']}"
            )
            return
        click.echo(
            f"build {build['id']} {build['submission']}: {build['page_url']}", err=True
        )
        build = follow_build(client, build)
    except ApiError as exc:
        fail(exc)
        return
    click.echo(json.dumps(build, indent=2) if as_json else _summary(build))
    if build["state"] != "succeeded":
        sys.exit(EXIT_BUILD_FAILED)


@click.command()
@click.argument("build_id", required=False)
@click.option("--state", "states", multiple=True, help="Only builds in this state.")
@click.option("--json", "as_json", is_flag=True)
@server_option
def status(
    build_id: str | None, states: tuple[str, ...], as_json: bool, server: str
) -> None:
    """Show one build, or list recent builds."""
    try:
        builds = (
            [api_client(server).get(build_id)]
            if build_id
            else api_client(server).list(states=states)
        )
    except ApiError as exc:
        fail(exc)
        return
    for build in builds:
        click.echo(json.dumps(build, indent=2) if as_json else _summary(build))


@click.command()
@click.argument("build_id")
@click.option(
    "--follow", "-f", is_flag=True, help="Keep printing until the build ends."
)
@server_option
def logs(build_id: str, follow: bool, server: str) -> None:
    """Print a build's log."""
    client = api_client(server)
    try:
        lines = client.follow_log(build_id) if follow else client.log(build_id)["lines"]
        for line in lines:
            click.echo(line)
    except ApiError as exc:
        fail(exc)


@click.command()
@click.argument("build_id")
@server_option
def cancel(build_id: str, server: str) -> None:
    """Cancel a queued or running build."""
    try:
        build = api_client(server).cancel(build_id)
    except ApiError as exc:
        fail(exc)
        return
    click.echo(_summary(build))
    if build["state"] != "cancelled":
        click.echo(
            "Cancel requested: the worker stops the build within seconds "
            "(a build whose worker died ends when it is swept).",
            err=True,
        )


@click.command()
@click.argument("build_id")
@click.option("--follow", is_flag=True, help="Follow the new build's log.")
@server_option
def retry(build_id: str, follow: bool, server: str) -> None:
    """Build an ended build's inputs again (the same commit or archive)."""
    client = api_client(server)
    try:
        build = client.retry(build_id)
        click.echo(f"build {build['id']} {build['submission']}: {build['page_url']}")
        if not follow:
            return
        build = follow_build(client, build)
    except ApiError as exc:
        fail(exc)
        return
    click.echo(_summary(build))
    if build["state"] != "succeeded":
        sys.exit(EXIT_BUILD_FAILED)


@click.command()
@click.argument("build_ids", nargs=-1, required=True)
@server_option
def wait(build_ids: tuple[str, ...], server: str) -> None:
    """Wait for builds to end; exit 1 unless all of them succeeded."""
    client = api_client(server)
    try:
        builds = [client.wait(build_id) for build_id in build_ids]
    except ApiError as exc:
        fail(exc)
        return
    for build in builds:
        click.echo(_summary(build))
    if any(build["state"] != "succeeded" for build in builds):
        sys.exit(EXIT_BUILD_FAILED)
