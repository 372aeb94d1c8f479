"""Packing a build context folder into the tar the Engine API's /build reads."""

from __future__ import annotations

import logging
import os
import tarfile
import tempfile
from pathlib import Path
from typing import IO

from docker.utils.build import exclude_paths

from farm.errors import SourceError

logger = logging.getLogger(__name__)


def make_context_tar(directory: Path, *, dockerfile: str = "Dockerfile") -> IO[bytes]:
    """Pack a build context folder into a GNU tar, honouring ``.dockerignore``.

    GNU, because the engine took a PAX tar that starts with an extended header
    (Python writes one for sub-second mtimes) for the Dockerfile itself. Entries are
    sorted, owned by root and stamped in whole seconds, so the same folder packs the
    same way. Symbolic links that lead outside the folder are refused. The result is
    an unnamed temporary file positioned at its start; the caller closes it.
    """
    root = directory.resolve()
    if not root.is_dir():
        raise SourceError(f"The build context {directory} is not a folder.")
    paths = sorted(exclude_paths(str(root), _dockerignore(root), dockerfile=dockerfile))
    archive = tempfile.TemporaryFile()  # noqa: SIM115 - returned open
    try:
        with tarfile.open(fileobj=archive, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for relative in paths:
                _add_entry(tar, root, relative)
    except BaseException:
        archive.close()
        raise
    archive.seek(0)
    return archive


def _dockerignore(root: Path) -> list[str]:
    """The context's .dockerignore patterns, without comments and blank lines."""
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text(errors="replace").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _add_entry(tar: tarfile.TarFile, root: Path, relative: str) -> None:
    full = root / relative
    info = tar.gettarinfo(str(full), arcname=relative.replace(os.sep, "/"))
    if info.issym() and not Path(os.path.realpath(full)).is_relative_to(root):
        raise SourceError(
            f"The symbolic link {relative} points outside the build context "
            f"({info.linkname}); copy the file in or remove the link.",
            path=relative,
        )
    if not (info.isfile() or info.isdir() or info.issym() or info.islnk()):
        logger.debug("context tar: skipped special file %s", relative)
        return
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = int(info.mtime)
    if info.isfile():
        with open(full, "rb") as content:
            tar.addfile(info, content)
    else:
        tar.addfile(info)
