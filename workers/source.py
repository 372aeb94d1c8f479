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
    fetched = git.run("rev-parse", "--verify", f"{target}^{{commit}}")
    if commit and fetched != commit:
        git.run("fetch", "-q", "--", url, "+refs/*:refs/remotes/farm/*")
        fetched = git.run("rev-parse", "--verify", f"{commit}^{{commit}}")
    git.run("checkout", "-q", "--detach", fetched)
    logger.info("source: checked out %s at %s", redact_url(url), fetched)
    return fetched
