"""Uploaded source archives: checked on arrival, unpacked safely on a node."""

from __future__ import annotations

import copy
import io
import os
import posixpath
import tarfile
from pathlib import Path
from typing import Self

from farm.errors import InvalidRequest, SourceError

MAX_MEMBERS = 100_000
DEFAULT_MAX_UNPACKED_BYTES = 1024**3
# What tarfile raises on a damaged or hostile archive: a PAX number that does not
# parse (GNU.sparse.size=nan) is a ValueError, and so is a modification time of
# NaN when set on a file; a time past what the system holds is an OverflowError.
# tarfile recurses once per header that describes the next one (long names, PAX),
# and, when it cannot make a link, into the entry the link names, which may be the
# link itself: thousands of chained headers or such a link are a RecursionError.
_UNREADABLE = (
    tarfile.TarError,
    EOFError,
    OSError,
    ValueError,
    OverflowError,
    RecursionError,
)
# tarfile reads a PAX or GNU long-name header whole, as large as it says it is;
# real ones hold a few names, so anything past this is refused before the read.
MAX_HEADER_BYTES = 1024**2
_WHOLE_READ_TYPES = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)


class _BoundedHeader(tarfile.TarInfo):
    """A tar header that refuses metadata too large to read into memory."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        header = super().frombuf(buf, encoding, errors)
        if header.type in _WHOLE_READ_TYPES and header.size > MAX_HEADER_BYTES:
            raise SourceError(
                f"The archive has a {header.size}-byte metadata header; at most "
                f"{MAX_HEADER_BYTES} bytes are read."
            )
        return header


# What Linux file systems hold: a name within a folder, and a whole path.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4095


def _open(content: bytes) -> tarfile.TarFile:
    """Open a tar, plain or compressed, from memory with bounded headers."""
    return tarfile.open(fileobj=io.BytesIO(content), mode="r:*", tarinfo=_BoundedHeader)


def check_archive(
    content: bytes, *, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
) -> set[str]:
    """Refuse anything but a tar (optionally compressed) that unpacks safely.

    Returns the paths it holds, normalised (no leading ``./``). Raises
    :class:`InvalidRequest` before anything is recorded, so a bad upload never
    becomes a build.
    """
    try:
        with _open(content) as tar:
            members = _read_members(tar, max_unpacked_bytes=max_unpacked_bytes)
    except _UNREADABLE as exc:
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


def read_file(content: bytes, path: str, *, max_bytes: int = 1024**2) -> bytes | None:
    """The bytes of regular file ``path`` in an archive ``check_archive`` accepted;
    None if it is a link or absent. Refuses a file over ``max_bytes``."""
    try:
        with _open(content) as tar:
            for member in tar:
                if posixpath.normpath(member.name) != path or not member.isreg():
                    continue
                if member.size > max_bytes:
                    raise InvalidRequest(
                        f"{path} is larger than {max_bytes} bytes.", field="dockerfile"
                    )
                stream = tar.extractfile(member)
                return stream.read() if stream else None
    except _UNREADABLE as exc:
        raise InvalidRequest(
            "The upload is not a readable .tar.gz or .tar archive.", field="archive"
        ) from exc
    return None


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
    links = {posixpath.normpath(member.name) for member in members if member.issym()}
    latest: dict[str, tarfile.TarInfo] = {}
    for member in members:
        _check_member(member, links, latest)
        latest[posixpath.normpath(member.name)] = member
    return members


def _check_member(
    member: tarfile.TarInfo, links: set[str], earlier: dict[str, tarfile.TarInfo]
) -> None:
    """Refuse one entry; ``earlier`` maps each path to the last entry before it."""
    name = member.name
    if name.startswith("/"):
        # The data filter would quietly strip the slash; refuse it outright.
        raise SourceError(f"The archive entry {name!r} has an absolute path.")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if len(name.encode()) > MAX_PATH_BYTES or any(
        len(part.encode()) > MAX_NAME_BYTES for part in parts
    ):
        # No file system here could hold it: refused now, not when unpacked.
        raise SourceError(
            f"The archive entry {name[:80]!r}… has a name too long for a file "
            f"system: at most {MAX_NAME_BYTES} bytes per name, {MAX_PATH_BYTES} "
            "for the whole path."
        )
    through = [posixpath.normpath("/".join(parts[:n])) for n in range(1, len(parts))]
    if any(parent in links for parent in through):
        # An entry under a symlink can climb out through a chain of links.
        raise SourceError(f"The archive entry {name!r} lies beneath a symbolic link.")
    if member.issym() and not member.linkname:
        # No symlink can be made to nothing; tarfile would skip it in silence.
        raise SourceError(f"The archive entry {name!r} is a link to nothing.")
    if member.islnk():
        # tarfile copies a missing target from the archive, a symlink included,
        # as if it stood at the link's place; only a stored file may be linked.
        target = earlier.get(posixpath.normpath(member.linkname))
        if target is None or not (target.isreg() or target.islnk()):
            raise SourceError(
                f"The archive entry {name!r} is a hard link to "
                f"{member.linkname!r}, which is not a file stored before it."
            )
    if member.isdev():
        raise SourceError(
            f"The archive entry {name!r} is a device, pipe or other special file."
        )
    if _climbs_out(name):
        raise SourceError(f"The archive entry {name!r} would land outside its folder.")
    if member.issym() or member.islnk():
        if member.linkname.startswith("/"):
            raise SourceError(f"The archive entry {name!r} links to an absolute path.")
        # A symlink's target is read from its own folder; a hard link's from the top.
        start = posixpath.dirname(name) if member.issym() else ""
        if _climbs_out(posixpath.join(start, member.linkname)):
            raise SourceError(
                f"The archive entry {name!r} links outside the archive's folder."
            )


def _climbs_out(path: str) -> bool:
    """Whether a relative path leads out of the folder it is read from."""
    normal = posixpath.normpath(path)
    return normal == ".." or normal.startswith("../")


def _as_plain_data(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """The entry as it is unpacked: owned by whoever unpacks it, with no set-id,
    sticky or group and world write bits, readable and writable by its owner."""
    member = copy.copy(member)
    member.uid, member.gid = os.getuid(), os.getgid()
    member.uname = member.gname = ""
    if member.isreg() or member.islnk():
        member.mode = (member.mode & 0o755) | 0o600
    elif member.isdir():
        member.mode = (member.mode & 0o755) | 0o700
    return member


def unpack_archive(
    content: bytes, dest: Path, *, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
) -> None:
    """Unpack an archive into ``dest``; nothing may land outside it."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with _open(content) as tar:
            members = _read_members(tar, max_unpacked_bytes=max_unpacked_bytes)
            plain = [_as_plain_data(member) for member in members]
            if hasattr(tarfile, "data_filter"):
                # Where Python has extraction filters (3.11.4 and later), its own
                # 'data' filter checks every entry again as it is written.
                tar.extractall(dest, members=plain, filter="data")
            else:
                tar.extractall(dest, members=plain)
    except _UNREADABLE as exc:
        raise SourceError(f"The uploaded archive could not be unpacked: {exc}") from exc
