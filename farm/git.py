"""Running git safely, shared by the web app (resolving refs) and the workers.

Every call switches off the transports that run commands (``ext::``, ``fd::``), keeps
``file://`` off unless allowed, never prompts for credentials and runs no hooks.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

from farm.buildspec import redact_url
from farm.errors import SourceError

logger = logging.getLogger(__name__)

_CREDENTIALS = re.compile(r"//[^/\s@]+@")
FULL_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class GitCheckout:
    """Runs git in one folder with transports that run commands switched off."""

    def __init__(
        self, dest: Path, *, timeout_seconds: float = 600, allow_file: bool = False
    ) -> None:
        self.dest = dest
        self.timeout_seconds = timeout_seconds
        self.allow_file = allow_file

    def run(self, *args: str) -> str:
        # ext:: and fd:: stay off whatever the URL says; git never prompts on a node.
        file_policy = "always" if self.allow_file else "never"
        argv = [
            "git",
            "-c",
            "protocol.ext.allow=never",
            "-c",
            "protocol.fd.allow=never",
            "-c",
            f"protocol.file.allow={file_policy}",
            "-c",
            "core.hooksPath=/dev/null",
            # The host was checked, not where it redirects to: follow none.
            "-c",
            "http.followRedirects=false",
            *args,
        ]
        env = {
            **os.environ,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false",
            # ssh:// and user@host: URLs: never ask for a password or a host key.
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o ConnectTimeout=15",
        }
        logger.debug("git %s", " ".join(redact_url(arg) for arg in args))
        try:
            done = subprocess.run(
                argv,
                cwd=self.dest,
                env=env,
                capture_output=True,
                text=True,
                timeout=self.timeout_seconds,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise SourceError(
                f"git {args[0]} took longer than {self.timeout_seconds:.0f}s."
            ) from exc
        if done.returncode != 0:
            raise SourceError(
                f"git {args[0]} failed: {git_reason(done.stderr)}",
                returncode=done.returncode,
            )
        return done.stdout.strip()


def git_reason(stderr: str, *, limit: int = 600) -> str:
    """What git said went wrong: its ``fatal:``/``error:`` lines (the advice it
    adds after them reads as if it were the cause), else its last lines; with
    credentials masked."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = [line for line in lines if line.startswith(("fatal:", "error:"))]
    reason = " ".join(said or lines[-3:])
    reason = _CREDENTIALS.sub("//***@", reason)
    return reason if len(reason) <= limit else f"{reason[: limit - 1]}…"


def resolve_ref(
    url: str, ref: str, *, allow_file: bool = False, timeout_seconds: float = 20
) -> str | None:
    """The commit ``ref`` names in ``url`` now, or None when git cannot tell us
    (an abbreviated commit id, which only a fetch resolves).

    Raises SourceError when the repository cannot be reached or has no such ref.
    """
    if FULL_COMMIT.match(ref):
        return ref
    git = GitCheckout(Path("/"), timeout_seconds=timeout_seconds, allow_file=allow_file)
    listing = git.run("ls-remote", "--", url, ref)
    found: dict[str, str] = {}
    for line in listing.splitlines():
        commit, _, name = line.partition("\t")
        found[name] = commit
    for name in (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}", ref):
        if name in found:
            return found[name]
    if re.fullmatch(r"[0-9a-f]{7,39}", ref):
        return None
    raise SourceError(
        f"The repository {redact_url(url)} has no branch or tag {ref!r}.", ref=ref
    )
