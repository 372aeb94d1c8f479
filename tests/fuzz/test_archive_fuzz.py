"""Fuzzing the uploaded-archive reader with hostile tars, zips and bytes.

Each example builds an archive in memory from generated entries (paths with ``..``,
absolute paths, links with any target, devices, false sizes, damaged bytes) and
unpacks it into a folder deep inside a private sandbox. Whatever the archive holds,
the reader either refuses it with the farm's own error or unpacks it without
touching anything outside the folder.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from farm import archives
from farm.archives import check_archive, unpack_archive
from farm.errors import InvalidRequest, SourceError

# Stands for the sandbox's absolute path in generated names; replaced on building.
ROOT = "@ROOT@"
# The target folder lies this deep in the sandbox, so chains of '..' land in it.
DEPTH = 5
DATA_TYPES = {tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE}

components = st.one_of(
    st.sampled_from(
        ["a", "b", "c", "src", "Dockerfile", "..", ".", "", "...", "a b", "é"]
        + ["..\\x", "neighbour.txt", "outside.txt", ROOT, "x" * 120]
    ),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=8),
)
paths = st.builds(
    lambda prefix, parts, suffix: prefix + "/".join(parts) + suffix,
    st.sampled_from(["", "", "", "/", "./", "//", ROOT + "/"]),
    st.lists(components, min_size=1, max_size=DEPTH + 1),
    st.sampled_from(["", "", "/"]),
)
kinds = st.one_of(
    st.sampled_from(
        [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]
    ),
    st.sampled_from(
        [tarfile.AREGTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE]
        + [tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE, tarfile.XHDTYPE, b"V"]
        + [tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK]
    ),
    st.binary(min_size=1, max_size=1),
)
pax_headers = st.one_of(
    st.just({}),
    st.dictionaries(
        st.one_of(
            st.sampled_from(
                ["path", "linkpath", "size", "mtime", "uid", "gid", "hdrcharset"]
                + ["GNU.sparse.map", "GNU.sparse.size", "GNU.sparse.major"]
                + ["GNU.sparse.minor", "GNU.sparse.name", "GNU.sparse.offset"]
                + ["GNU.sparse.numbytes", "GNU.sparse.realsize"]
            ),
            st.text(st.characters(codec="utf-8"), min_size=1, max_size=10),
        ),
        st.one_of(
            st.sampled_from(
                ["nan", "inf", "-inf", "1e400", "-1", "0", "1", "2", "1,2,3", "x,y"]
                + ["18446744073709551616", "../../escape", ROOT + "/escape"]
                + ["BINARY"]
            ),
            st.text(st.characters(codec="utf-8"), max_size=20),
        ),
        max_size=3,
    ),
)


@dataclass(frozen=True)
class Entry:
    """One generated archive entry, as a hostile uploader might write it."""

    name: str
    kind: bytes
    link: str
    data: bytes
    declared_size: int | None
    mode: int
    mtime: int
    pax: dict[str, str] = field(default_factory=dict)

    def to_bytes(self, root: Path, tar_format: int) -> bytes:
        """Header and data; a size other than the data's length is kept as a lie."""
        info = tarfile.TarInfo(self.name.replace(ROOT, str(root)))
        info.type, info.linkname = self.kind, self.link.replace(ROOT, str(root))
        info.mode, info.mtime = self.mode, self.mtime
        carries_data = (
            self.kind in DATA_TYPES or self.kind not in tarfile.SUPPORTED_TYPES
        )
        data = self.data if carries_data else b""
        info.size = len(data) if self.declared_size is None else self.declared_size
        info.pax_headers = {
            key: value.replace(ROOT, str(root)) for key, value in self.pax.items()
        }
        for candidate in (tar_format, tarfile.GNU_FORMAT):
            try:
                header = info.tobuf(candidate, "utf-8", "surrogateescape")
            except ValueError:
                continue  # a field this format cannot hold
            padding = -len(data) % tarfile.BLOCKSIZE
            return header + data + b"\0" * padding
        return b""


hostile_entries = st.builds(
    Entry,
    name=paths,
    kind=kinds,
    link=paths,
    data=st.binary(max_size=64),
    declared_size=st.one_of(
        st.none(), st.none(), st.none(), st.integers(0, 2**44), st.just(8**11)
    ),
    mode=st.one_of(
        st.sampled_from([0o644, 0o755, 0o4755, 0o2755, 0o1777, 0o7777, 0]),
        st.integers(0, 0o7777),
    ),
    mtime=st.one_of(
        st.integers(0, 2**33),
        st.sampled_from([-1, -(2**40), 8**11, 2**63, 256**11 - 1]),
    ),
    pax=pax_headers,
)
# Ordinary entries over a few shared names, so that links, folders and files meet:
# a link to a folder, a file under a link, the same name twice.
few_names = st.lists(
    st.sampled_from(["a", "b", "c", "Dockerfile"]), min_size=1, max_size=3
).map("/".join)
few_targets = st.lists(
    st.sampled_from(["a", "b", "c", "Dockerfile", "..", "."]), min_size=1, max_size=4
).map("/".join)
ordinary_entries = st.builds(
    Entry,
    name=st.one_of(few_names, few_names.map("./{}".format)),
    kind=st.sampled_from(
        [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]
    ),
    link=few_targets,
    data=st.binary(max_size=8),
    declared_size=st.none(),
    mode=st.sampled_from([0o644, 0o755]),
    mtime=st.just(1_700_000_000),
)
entries = st.one_of(ordinary_entries, ordinary_entries, hostile_entries)


@dataclass(frozen=True)
class Upload:
    """A generated tar: its entries, format, compression and damage."""

    entries: tuple[Entry, ...]
    tar_format: int
    compression: str
    chain: int  # GNU long-name headers before the entries, each naming the next
    copies: int  # tiny extra files, to pass the entry limit
    end_blocks: int  # zero blocks closing the tar; fewer than 2 leaves it open
    damage: tuple[tuple[int, int], ...]  # (offset, byte) overwrites in the tar
    cut: int | None  # keep only this many bytes of the compressed archive

    def build(self, root: Path) -> bytes:
        long_name = Entry("n", tarfile.GNUTYPE_LONGNAME, "", b"n\0", None, 0, 0)
        raw = bytearray(long_name.to_bytes(root, tarfile.USTAR_FORMAT) * self.chain)
        for entry in self.entries:
            raw += entry.to_bytes(root, self.tar_format)
        for index in range(self.copies):
            extra = Entry(f"many/{index}", tarfile.REGTYPE, "", b"m", None, 0o644, 0)
            raw += extra.to_bytes(root, self.tar_format)
        raw += b"\0" * (tarfile.BLOCKSIZE * self.end_blocks)
        for offset, byte in self.damage:
            if raw:
                raw[offset % len(raw)] = byte
        content = compress(bytes(raw), self.compression)
        return content if self.cut is None else content[: self.cut]


def compress(raw: bytes, compression: str) -> bytes:
    if compression == "gz":
        return gzip.compress(raw, mtime=0)
    if compression == "bz2":
        return bz2.compress(raw)
    if compression == "xz":
        return lzma.compress(raw)
    return raw


uploads = st.builds(
    Upload,
    entries=st.lists(entries, max_size=10).map(tuple),
    tar_format=st.sampled_from(
        [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]
    ),
    compression=st.sampled_from(["", "gz", "bz2", "xz"]),
    chain=st.sampled_from([0, 0, 0, 0, 0, 0, 0, 1, 2, 1200]),
    copies=st.one_of(st.just(0), st.just(0), st.integers(0, 40)),
    end_blocks=st.sampled_from([2, 2, 2, 2, 0, 1]),
    damage=st.one_of(
        st.just(()),
        st.just(()),
        st.just(()),
        st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=4).map(
            tuple
        ),
    ),
    cut=st.one_of(st.none(), st.none(), st.none(), st.integers(0, 4096)),
)
# Tight limits, so that generated archives cross them often.
member_limits = st.integers(1, 50)
byte_limits = st.one_of(
    st.integers(0, 4096), st.just(archives.DEFAULT_MAX_UNPACKED_BYTES)
)


@dataclass
class Sandbox:
    """A private folder tree with the target folder deep inside it."""

    base: Path
    dest: Path

    def outside_state(self) -> dict[str, tuple[Any, ...]]:
        """Everything outside ``dest``: type, mode, size, times, links, content."""
        state = {".": _describe(self.base)}
        for dirpath, dirnames, filenames in os.walk(self.base):
            here = Path(dirpath)
            dirnames[:] = [name for name in dirnames if here / name != self.dest]
            for name in dirnames + filenames:
                path = here / name
                state[str(path.relative_to(self.base))] = _describe(path)
        return state

    def outside_inodes(self) -> set[int]:
        return {entry[-1] for entry in self.outside_state().values()}


def _describe(path: Path) -> tuple[Any, ...]:
    info = path.lstat()
    link = os.readlink(path) if stat.S_ISLNK(info.st_mode) else None
    content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
    return (
        info.st_mode,
        info.st_size,
        info.st_mtime_ns,
        info.st_nlink,
        link,
        content,
        info.st_ino,
    )


@contextmanager
def sandbox() -> Iterator[Sandbox]:
    base = Path(os.path.realpath(tempfile.mkdtemp(prefix="farm-fuzz-")))
    try:
        (base / "outside.txt").write_text("outside")
        level = base
        for depth in range(DEPTH):
            level = level / str(depth)
            level.mkdir()
            (level / "neighbour.txt").write_text(f"neighbour {depth}")
        (level / "link-to-base").symlink_to(base)
        dest = level / "dest"
        dest.mkdir()
        yield Sandbox(base, dest)
    finally:
        shutil.rmtree(base)


def assert_safe_tree(dest: Path, outside_inodes: set[int]) -> None:
    """Only files, folders and links that stay inside; no set-id bits, no devices."""
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                target = Path(os.path.realpath(path))
                assert target.is_relative_to(dest), (
                    f"{path} -> {os.readlink(path)} leaves the folder"
                )
            elif stat.S_ISREG(mode):
                assert not mode & (stat.S_ISUID | stat.S_ISGID), f"{path} is set-id"
                assert path.lstat().st_ino not in outside_inodes, (
                    f"{path} is a hard link to a file outside"
                )
            else:
                assert stat.S_ISDIR(mode), f"{path} is a device, fifo or socket"


def assert_inside_paths(paths: set[str]) -> None:
    for path in paths:
        assert not path.startswith("/"), path
        assert ".." not in path.split("/"), path


def read_members(content: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(content), mode="r:*") as tar:
        return tar.getmembers()


def check_and_unpack(
    content: bytes, box: Sandbox, *, member_limit: int, byte_limit: int
) -> tuple[set[str] | None, bool]:
    """Check then unpack ``content``; return what check accepted and if unpacked."""
    before = box.outside_state()
    inodes = box.outside_inodes()
    with mock.patch.object(archives, "MAX_MEMBERS", member_limit):
        try:
            accepted: set[str] | None = check_archive(
                content, max_unpacked_bytes=byte_limit
            )
        except InvalidRequest as exc:
            assert exc.field == "archive"
            accepted = None
        try:
            unpack_archive(content, box.dest, max_unpacked_bytes=byte_limit)
            unpacked = True
        except SourceError:
            unpacked = False
    assert box.outside_state() == before, "something outside the folder changed"
    assert_safe_tree(box.dest, inodes)
    return accepted, unpacked


@given(upload=uploads, member_limit=member_limits, byte_limit=byte_limits)
def test_generated_tars_are_refused_or_unpacked_inside_the_folder(
    upload: Upload, member_limit: int, byte_limit: int
) -> None:
    with sandbox() as box:
        content = upload.build(box.base)
        accepted, unpacked = check_and_unpack(
            content, box, member_limit=member_limit, byte_limit=byte_limit
        )
        if accepted is None:
            return
        assert_inside_paths(accepted)
        members = read_members(content)
        assert len(members) <= member_limit
        assert sum(member.size for member in members) <= byte_limit
        if unpacked:
            for path in accepted:
                assert os.path.lexists(box.dest / path), f"{path} was not unpacked"


zip_names = paths.map(lambda path: path.replace(ROOT, "/tmp").replace("\0", "") or "x")


@given(
    names=st.lists(zip_names, min_size=1, max_size=6, unique=True),
    compression=st.sampled_from(
        [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2]
    ),
)
def test_zip_archives_are_refused(names: list[str], compression: int) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for index, name in enumerate(names):
            archive.writestr(name, f"{index}")
    with sandbox() as box:
        accepted, unpacked = check_and_unpack(
            buffer.getvalue(),
            box,
            member_limit=archives.MAX_MEMBERS,
            byte_limit=archives.DEFAULT_MAX_UNPACKED_BYTES,
        )
        assert accepted is None and not unpacked
        assert not any(box.dest.iterdir())


@given(
    content=st.builds(
        lambda head, body, packing: compress(head + body, packing),
        st.sampled_from([b"", b"\x1f\x8b\x08", b"BZh9", b"\xfd7zXZ\x00", b"ustar"]),
        st.binary(max_size=2048),
        st.sampled_from(["", "", "gz", "bz2", "xz"]),
    ),
    byte_limit=byte_limits,
)
def test_arbitrary_bytes_are_refused_or_unpacked_inside_the_folder(
    content: bytes, byte_limit: int
) -> None:
    with sandbox() as box:
        accepted, unpacked = check_and_unpack(
            content, box, member_limit=archives.MAX_MEMBERS, byte_limit=byte_limit
        )
        if accepted is not None:
            assert_inside_paths(accepted)
