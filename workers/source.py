"""Fetching a build's git source onto this node."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

from farm.buildspec import redact_url
from farm.errors import SourceError

logger = logging.getLogger(__name__)

_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")


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
            *args,
        ]
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false"}
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
            lines = done.stderr.strip().splitlines()
            raise SourceError(
                f"git {args[0]} failed: {lines[-1] if lines else ''}",
                returncode=done.returncode,
            )
        return done.stdout.strip()


def fetch_git(
    url: str,
    ref: str,
    dest: Path,
    *,
    timeout_seconds: float = 600,
    allow_file: bool = False,
) -> str:
    """Check out exactly ``ref`` of ``url`` into ``dest``; return the commit id."""
    dest.mkdir(parents=True, exist_ok=True)
    git = GitCheckout(dest, timeout_seconds=timeout_seconds, allow_file=allow_file)
    git.run("init", "-q", ".")
    try:
        git.run("fetch", "-q", "--depth=1", "--no-tags", "--", url, ref)
        target = "FETCH_HEAD"
    except SourceError as exc:
        if not _COMMIT.match(ref):
            raise SourceError(
                f"Could not fetch ref {ref!r} from {redact_url(url)}: "
                "check the URL and that the branch or tag exists."
            ) from exc
        # Some servers refuse a commit id as a fetch target: take everything instead.
        git.run("fetch", "-q", "--", url, "+refs/*:refs/remotes/farm/*")
        target = ref
    commit = git.run("rev-parse", "--verify", f"{target}^{{commit}}")
    git.run("checkout", "-q", "--detach", commit)
    logger.info("source: checked out %s at %s", redact_url(url), commit)
    return commit
