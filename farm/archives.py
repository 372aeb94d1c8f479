"""Uploaded source archives: checked on arrival, unpacked safely on a node."""

from __future__ import annotations

import io
import posixpath
import tarfile
from pathlib import Path

from farm.errors import InvalidRequest, SourceError

MAX_MEMBERS = 100_000
DEFAULT_MAX_UNPACKED_BYTES = 1024**3


def check_archive(
    content: bytes, *, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
) -> set[str]:
    """Refuse anything but a tar (optionally compressed) that unpacks safely.

    Returns the paths it holds, normalised (no leading ``./``). Raises
    :class:`InvalidRequest` before anything is recorded, so a bad upload never
    becomes a build.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:*") as tar:
            members = _read_members(tar, max_unpacked_bytes=max_unpacked_bytes)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidRequest(
            "The upload is not a readable .tar.gz or .tar archive.", field="archive"
        ) from exc
    except SourceError as exc:
        raise InvalidRequest(exc.message, field="archive") from exc
    return {posixpath.normpath(member.name) for member in members}


def require_paths(paths: set[str], *, context: str, dockerfile: str) -> None:
    """Refuse a request whose context folder or Dockerfile the archive lacks."""
    if context != "." and not any(
        p == context or p.startswith(context + "/") for p in paths
    ):
        raise InvalidRequest(f"The archive has no folder {context!r}.", field="context")
    if dockerfile not in paths:
        raise InvalidRequest(
            f"The archive has no Dockerfile at {dockerfile!r}.", field="dockerfile"
        )


def _read_members(
    tar: tarfile.TarFile, *, max_unpacked_bytes: int
) -> list[tarfile.TarInfo]:
    """Read the entries, stopping as soon as the archive is too big or too many."""
    members: list[tarfile.TarInfo] = []
    declared = 0
    for member in tar:
        members.append(member)
        declared += member.size
        if len(members) > MAX_MEMBERS:
            raise SourceError(f"The archive holds more than {MAX_MEMBERS} entries.")
        if declared > max_unpacked_bytes:
            raise SourceError(
                f"The archive unpacks to more than the {max_unpacked_bytes} bytes "
                "allowed."
            )
    links = {member.name.rstrip("/") for member in members if member.issym()}
    for member in members:
        _check_member(member, links)
    return members


def _check_member(member: tarfile.TarInfo, links: set[str]) -> None:
    name = member.name
    if name.startswith("/"):
        # The data filter would quietly strip the slash; refuse it outright.
        raise SourceError(f"The archive entry {name!r} has an absolute path.")
    parts = name.strip("/").split("/")
    through = ["/".join(parts[:n]) for n in range(1, len(parts))]
    if any(parent in links for parent in through):
        # An entry under a symlink can climb out through a chain of links.
        raise SourceError(f"The archive entry {name!r} lies beneath a symbolic link.")
    try:
        # The 'data' filter refuses '..', links that leave the folder and device
        # files (Python docs, "Extraction filters").
        tarfile.data_filter(member, "/nonexistent/farm-archive-root")
    except tarfile.FilterError as exc:
        raise SourceError(f"The archive entry {name!r} is refused: {exc}") from exc


def unpack_archive(
    content: bytes, dest: Path, *, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
) -> None:
    """Unpack an archive into ``dest``; nothing may land outside it."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:*") as tar:
            members = _read_members(tar, max_unpacked_bytes=max_unpacked_bytes)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SourceError(f"The uploaded archive could not be unpacked: {exc}") from exc
