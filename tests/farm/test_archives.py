import io
import tarfile

import pytest

from farm.archives import check_archive, unpack_archive
from farm.errors import InvalidRequest


def make_tar(entries: list[tarfile.TarInfo], payload: bytes = b"x") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
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
