import gzip
import io
import tarfile

import pytest

from farm.archives import check_archive, unpack_archive
from farm.errors import InvalidRequest, SourceError


def make_tar(
    entries: list[tarfile.TarInfo],
    payload: bytes = b"x",
    *,
    tar_format: int = tarfile.GNU_FORMAT,
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tar_format) as tar:
        for entry in entries:
            if entry.isreg():
                entry.size = len(payload)
                tar.addfile(entry, io.BytesIO(payload))
            else:
                tar.addfile(entry)
    return buffer.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def test_a_plain_archive_is_accepted_and_unpacked(tmp_path):
    content = make_tar([entry("Dockerfile"), entry("src/main.go")])
    assert check_archive(content) == {"Dockerfile", "src/main.go"}
    unpack_archive(content, tmp_path / "out")
    assert (tmp_path / "out/src/main.go").read_bytes() == b"x"


@pytest.mark.parametrize(
    "bad",
    [
        entry("../escape"),
        entry("/etc/passwd"),
        entry("link", tarfile.SYMTYPE, "/etc/passwd"),
        entry("link", tarfile.SYMTYPE, "../../outside"),
        entry("hard", tarfile.LNKTYPE, "/etc/passwd"),
        entry("dev", tarfile.CHRTYPE),
    ],
)
def test_entries_that_leave_the_folder_or_are_devices_are_refused(bad, tmp_path):
    content = make_tar([entry("ok"), bad])
    with pytest.raises(InvalidRequest) as caught:
        check_archive(content)
    assert caught.value.field == "archive"
    assert "archive-root" not in caught.value.message  # says why, not where
    assert not (tmp_path / "escape").exists()


def test_something_that_is_not_an_archive_is_refused():
    with pytest.raises(InvalidRequest, match="not a readable"):
        check_archive(b"hello, I am plain text\n" * 100)


def test_entries_beneath_a_symlink_are_refused():
    content = make_tar(
        [
            entry("a", tarfile.SYMTYPE, "."),
            entry("a/b", tarfile.SYMTYPE, ".."),
            entry("c", tarfile.SYMTYPE, "a/b/a/b/a/b/etc"),
        ]
    )
    with pytest.raises(InvalidRequest, match="beneath a symbolic link"):
        check_archive(content)


def test_an_archive_that_unpacks_too_big_is_refused_early():
    content = make_tar([entry("big")], payload=b"\0" * 10_000)
    assert check_archive(content, max_unpacked_bytes=10_000) == {"big"}
    with pytest.raises(InvalidRequest, match="more than the 9999 bytes"):
        check_archive(content, max_unpacked_bytes=9_999)


def test_entries_beneath_a_symlink_written_with_a_dot_are_refused():
    content = make_tar([entry("./a", tarfile.SYMTYPE, "."), entry("a/b")])
    with pytest.raises(InvalidRequest, match="beneath a symbolic link"):
        check_archive(content)


def test_a_hard_link_to_an_earlier_file_is_unpacked(tmp_path):
    content = make_tar([entry("a"), entry("b", tarfile.LNKTYPE, "./a")])
    assert check_archive(content) == {"a", "b"}
    unpack_archive(content, tmp_path / "out")
    assert (tmp_path / "out/b").read_bytes() == b"x"


@pytest.mark.parametrize(
    "entries",
    [
        [entry("a", tarfile.LNKTYPE, "missing")],
        [entry("d", tarfile.DIRTYPE), entry("a", tarfile.LNKTYPE, "d")],
        [entry("a", tarfile.LNKTYPE, "b"), entry("b")],
        # tarfile would copy the dangling symlink to 'h', where '../x' leaves.
        [
            entry("d", tarfile.DIRTYPE),
            entry("d/f", tarfile.SYMTYPE, "../x"),
            entry("h", tarfile.LNKTYPE, "d/f"),
        ],
    ],
)
def test_hard_links_to_anything_but_an_earlier_file_are_refused(entries, tmp_path):
    content = make_tar(entries)
    with pytest.raises(InvalidRequest, match="hard link") as caught:
        check_archive(content)
    assert caught.value.field == "archive"
    with pytest.raises(SourceError, match="hard link"):
        unpack_archive(content, tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())


def test_a_pax_number_that_does_not_parse_is_refused(tmp_path):
    bad = entry("a")
    bad.pax_headers = {"GNU.sparse.size": "nan"}
    content = make_tar([bad], tar_format=tarfile.PAX_FORMAT)
    with pytest.raises(InvalidRequest, match="not a readable"):
        check_archive(content)
    with pytest.raises(SourceError):
        unpack_archive(content, tmp_path / "out")


@pytest.mark.parametrize("mtime", ["nan", "1e300"])
def test_a_modification_time_no_file_can_have_fails_the_unpacking(mtime, tmp_path):
    odd = entry("a")
    odd.pax_headers = {"mtime": mtime}
    content = make_tar([odd], tar_format=tarfile.PAX_FORMAT)
    with pytest.raises(SourceError, match="could not be unpacked"):
        unpack_archive(content, tmp_path / "out")


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
def test_a_metadata_header_too_large_to_read_is_refused_unread(kind, tmp_path):
    # tarfile would read the whole declared size into memory at once.
    header = entry("a", kind)
    header.size = 2**40
    content = make_tar([header])
    with pytest.raises(InvalidRequest, match="metadata header") as caught:
        check_archive(content)
    assert caught.value.field == "archive"
    with pytest.raises(SourceError, match="metadata header"):
        unpack_archive(content, tmp_path / "out")


def test_a_symlink_to_nothing_is_refused():
    with pytest.raises(InvalidRequest, match="link to nothing"):
        check_archive(make_tar([entry("s", tarfile.SYMTYPE, "")]))


def test_thousands_of_chained_name_headers_are_refused():
    long_name = entry("././@LongLink", tarfile.GNUTYPE_LONGNAME)
    long_name.size = 2
    block = long_name.tobuf(tarfile.USTAR_FORMAT) + b"a\0".ljust(
        tarfile.BLOCKSIZE, b"\0"
    )
    content = gzip.compress(block * 2000 + b"\0" * 2 * tarfile.BLOCKSIZE)
    with pytest.raises(InvalidRequest, match="not a readable"):
        check_archive(content)


@pytest.mark.parametrize(
    "entries",
    [
        [entry("a", tarfile.DIRTYPE), entry("a", tarfile.SYMTYPE, "a")],
        [entry("f"), entry("f/s", tarfile.SYMTYPE, "s")],
    ],
)
def test_a_link_that_cannot_be_made_fails_the_unpacking(entries, tmp_path):
    # tarfile copies the entry the link names instead, here the link itself.
    with pytest.raises(SourceError, match="could not be unpacked"):
        unpack_archive(make_tar(entries), tmp_path / "out")


@pytest.mark.parametrize(
    "name", ["x" * 256, "src/" + "y" * 5000, "/".join(["d" * 200] * 21)]
)
def test_a_name_no_file_system_holds_is_refused_at_the_check(name):
    with pytest.raises(InvalidRequest, match="name too long") as caught:
        check_archive(make_tar([entry("Dockerfile"), entry(name)]))
    assert "/var/tmp" not in caught.value.message


def test_names_at_the_file_systems_limits_are_accepted(tmp_path):
    longest = "/".join(["d" * 254] * 15) + "/" + "f" * 255
    assert len(longest) <= 4095
    content = make_tar([entry("Dockerfile"), entry("n" * 255)])
    assert check_archive(content) == {"Dockerfile", "n" * 255}
    assert check_archive(make_tar([entry(longest)])) == {longest}
