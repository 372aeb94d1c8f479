"""Uploaded source archives: checked on arrival, unpacked safely on a node."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from farm.errors import InvalidRequest, SourceError

MAX_MEMBERS = 100_000
MAX_UNPACKED_BYTES = 4 * 1024**3


def check_archive(content: bytes) -> int:
    """Refuse anything but a tar (optionally compressed) that unpacks safely.

    Returns the number of members. Raises :class:`InvalidRequest` before anything is
    recorded, so a bad upload never becomes a build.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:*") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidRequest(
            "The upload is not a readable .tar.gz or .tar archive.", field="archive"
        ) from exc
    try:
        _check_members(members)
    except SourceError as exc:
        raise InvalidRequest(exc.message, field="archive") from exc
    return len(members)


def _check_members(members: list[tarfile.TarInfo]) -> None:
    if len(members) > MAX_MEMBERS:
        raise SourceError(f"The archive holds more than {MAX_MEMBERS} entries.")
    declared = sum(member.size for member in members)
    if declared > MAX_UNPACKED_BYTES:
        raise SourceError(
            f"The archive would unpack to {declared} bytes, more than "
            f"the {MAX_UNPACKED_BYTES} allowed."
        )
    for member in members:
        if member.name.startswith("/"):
            # The data filter would quietly strip the slash; refuse it outright.
            raise SourceError(
                f"The archive entry {member.name!r} has an absolute path."
            )
        try:
            # The 'data' filter refuses absolute paths, '..', links that leave the
            # folder and device files (Python docs, "Extraction filters").
            tarfile.data_filter(member, "/nonexistent/farm-archive-root")
        except tarfile.FilterError as exc:
            raise SourceError(
                f"The archive entry {member.name!r} is refused: {exc}"
            ) from exc


def unpack_archive(content: bytes, dest: Path) -> None:
    """Unpack an archive into ``dest``; nothing may land outside it."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:*") as tar:
            members = tar.getmembers()
            _check_members(members)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SourceError(f"The uploaded archive could not be unpacked: {exc}") from exc
