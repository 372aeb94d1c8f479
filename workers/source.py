"""Fetching a build's git source onto this node."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from farm.buildspec import redact_url
from farm.errors import SourceError
from farm.git import GitCheckout

logger = logging.getLogger(__name__)

_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")
ALL_REFS = "+refs/*:refs/remotes/farm/*"


def fetch_git(
    url: str,
    ref: str,
    dest: Path,
    *,
    timeout_seconds: float = 600,
    allow_file: bool = False,
    commit: str | None = None,
) -> str:
    """Check out ``ref`` of ``url`` into ``dest``; return the commit id.

    With ``commit`` (the commit the ref named when the build was accepted), that
    commit is built even if the branch has moved on since.
    """
    dest.mkdir(parents=True, exist_ok=True)
    git = GitCheckout(dest, timeout_seconds=timeout_seconds, allow_file=allow_file)
    git.run("init", "-q", ".")
    target = _fetch(git, url, ref)
    fetched = git.run("rev-parse", "--verify", f"{target}^{{commit}}")
    if commit and fetched != commit:
        git.run("fetch", "-q", "--", url, ALL_REFS)
        fetched = git.run("rev-parse", "--verify", f"{commit}^{{commit}}")
    git.run("checkout", "-q", "--detach", fetched)
    logger.info("source: checked out %s at %s", redact_url(url), fetched)
    return fetched


def _fetch(git: GitCheckout, url: str, ref: str) -> str:
    """Fetch ``ref`` as cheaply as the server allows; return what to check out."""
    attempts = [
        # A shallow fetch of just the ref is cheapest; dumb HTTP servers can't.
        (["fetch", "-q", "--depth=1", "--no-tags", "--", url, ref], "FETCH_HEAD"),
        (["fetch", "-q", "--no-tags", "--", url, ref], "FETCH_HEAD"),
    ]
    if _COMMIT.match(ref):
        # Servers may refuse a commit id as a fetch target: take everything then.
        attempts.append((["fetch", "-q", "--", url, ALL_REFS], ref))
    failure = None
    for args, target in attempts:
        try:
            git.run(*args)
            return target
        except SourceError as exc:
            failure = exc
    assert failure is not None
    raise SourceError(
        f"Could not fetch {ref!r} from {redact_url(url)}: {failure.message}"
    ) from failure
