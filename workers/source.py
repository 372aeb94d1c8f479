"""Getting a build's source ready on this node: a git checkout, and the context
folder and Dockerfile inside the source."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from farm.buildspec import redact_url
from farm.dockerfile import parse_dockerfile
from farm.errors import BuildFailed, InvalidRequest, SourceError
from farm.git import GitCheckout

logger = logging.getLogger(__name__)

_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")
ALL_REFS = "+refs/*:refs/remotes/farm/*"
OUTSIDE_DOCKERFILE_NAME = ".farm.Dockerfile"


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


@dataclass(frozen=True)
class PreparedSource:
    """The unpacked source, the build context inside it and the Dockerfile to use."""

    context_dir: Path
    dockerfile: str
    dockerfile_text: str


def locate_dockerfile(root: Path, context: str, dockerfile: str) -> PreparedSource:
    """Find the context folder and Dockerfile inside the fetched source."""
    context_dir = (root / context).resolve()
    if not context_dir.is_relative_to(root.resolve()) or not context_dir.is_dir():
        raise SourceError(
            f"The context folder {context!r} does not exist in the source."
        )
    dockerfile_path = (context_dir / dockerfile).resolve()
    if (
        not dockerfile_path.is_relative_to(root.resolve())
        or not dockerfile_path.is_file()
    ):
        raise SourceError(
            f"The Dockerfile {dockerfile!r} was not found in the context "
            f"folder {context!r}."
        )
    text = dockerfile_path.read_text(errors="replace")
    if dockerfile_path.is_relative_to(context_dir):
        name = dockerfile_path.relative_to(context_dir).as_posix()
    else:
        # BuildKit reads the Dockerfile from the context; bring one from outside in.
        name = OUTSIDE_DOCKERFILE_NAME
        (context_dir / name).write_text(text)
    return PreparedSource(
        context_dir=context_dir, dockerfile=name, dockerfile_text=text
    )


def check_target(dockerfile_text: str, target: str | None) -> None:
    """Fail early, naming the stages there are, when the target stage is not one."""
    if not target:
        return
    try:
        dockerfile = parse_dockerfile(dockerfile_text)
    except InvalidRequest:
        return  # BuildKit reports a Dockerfile it cannot read better than we can
    if not dockerfile.has_stage(target):
        stages = ", ".join(dockerfile.stage_names) or "none are named"
        raise BuildFailed(
            f"The Dockerfile has no stage named {target!r} (stages: {stages})."
        )
