"""Unit tests for base image logic that needs no engine: sources, CAs, tars, plans."""

from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path
from typing import Any

import docker
import pytest

from workers.baseimages import BASE_IMAGES, BaseImageError, BaseImageSettings, builder
from workers.baseimages.catalog import RECIPES, BaseImageCatalog
from workers.baseimages.certs import (
    CA_BUNDLE,
    CA_DIR,
    extend_bundle,
    install_extra_cas,
    local_ca_files,
    make_extra_ca,
    read_extra_cas,
)
from workers.baseimages.engine import (
    Message,
    build_image,
    check_stream,
    dockerfile_context,
    push_digest,
    stream_lines,
)
from workers.baseimages.mirror import (
    detect_debian_mirror,
    parse_deb822_sources,
    parse_one_line_sources,
)
from workers.baseimages.registry import registry_ref
from workers.baseimages.rootfs import (
    DebianRootfsSpec,
    busybox_rootfs_tar,
    debootstrap_argv,
    has_interpreter,
)

PEM = b"-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----"
DEBIAN_SOURCES = """\
Types: deb
# a comment inside the stanza
URIs: http://mirror.example.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example.invalid/debian-security
Suites: bookworm-security
Components: main
"""
NODESOURCE_SOURCES = """\
Types: deb
URIs: https://node.example.invalid/node_20.x
Suites: nodistro
Components: main
"""


def write_apt_dir(root: Path, files: dict[str, str]) -> Path:
    (root / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def fake_elf(program_header_types: list[int]) -> bytes:
    """A 64-bit little-endian ELF header followed by program headers of these types."""
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)
    struct.pack_into("<HH", header, 0x36, 56, len(program_header_types))
    table = b"".join(
        struct.pack("<I", kind) + bytes(52) for kind in program_header_types
    )
    return bytes(header) + table


def tar_members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {member.name: member for member in tar.getmembers()}


def test_one_line_sources_keep_binary_entries_and_drop_options() -> None:
    text = (
        "# deb http://commented.invalid/debian bookworm main\n"
        "deb-src http://src.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://a.invalid/debian bookworm main\n"
        "deb http://b.invalid/debian sid main # trailing comment\n"
        "deb [unclosed http://c.invalid/debian bookworm main\n"
    )
    sources = parse_one_line_sources(text)
    assert [(s.uri, s.suites) for s in sources] == [
        ("http://a.invalid/debian", ("bookworm",)),
        ("http://b.invalid/debian", ("sid",)),
    ]


def test_deb822_sources_read_every_uri_and_skip_disabled_stanzas() -> None:
    text = DEBIAN_SOURCES + "\nTypes: deb\nURIs: http://off.invalid/d\n"
    text += "Suites: bookworm\nEnabled: no\n"
    uris = [source.uri for source in parse_deb822_sources(text)]
    assert uris == [
        "http://mirror.example.invalid/debian",
        "http://mirror.example.invalid/debian-security",
    ]


def test_detect_debian_mirror_reads_deb822_and_ignores_other_repositories(
    tmp_path: Path,
) -> None:
    apt_dir = write_apt_dir(
        tmp_path,
        {
            "sources.list": "",
            "sources.list.d/nodesource.sources": NODESOURCE_SOURCES,
            "sources.list.d/debian.sources": DEBIAN_SOURCES,
            "sources.list.d/old.list.disabled": "deb http://off.invalid/d sid main\n",
        },
    )
    assert detect_debian_mirror(apt_dir) == "http://mirror.example.invalid/debian"


def test_detect_debian_mirror_prefers_the_entry_listing_the_suite(
    tmp_path: Path,
) -> None:
    apt_dir = write_apt_dir(
        tmp_path,
        {
            "sources.list": "deb http://sid.invalid/debian/ sid main\n"
            "deb http://stable.invalid/debian/ bookworm main\n",
        },
    )
    assert detect_debian_mirror(apt_dir) == "http://sid.invalid/debian"
    assert detect_debian_mirror(apt_dir, suite="bookworm") == (
        "http://stable.invalid/debian"
    )


def test_detect_debian_mirror_says_so_when_only_other_repositories_exist(
    tmp_path: Path,
) -> None:
    apt_dir = write_apt_dir(
        tmp_path,
        {
            "sources.list.d/nodesource.sources": NODESOURCE_SOURCES,
            "sources.list.d/sec.list": "deb http://s.invalid/s bookworm-security main",
        },
    )
    with pytest.raises(BaseImageError, match="No Debian archive mirror"):
        detect_debian_mirror(apt_dir)


def test_extra_ca_is_named_crt_and_ends_with_a_newline() -> None:
    ca = make_extra_ca("proxy.pem", PEM)
    assert (ca.name, ca.pem) == ("proxy.crt", PEM + b"\n")


def test_extra_ca_without_a_certificate_is_refused() -> None:
    with pytest.raises(BaseImageError, match="no PEM certificate"):
        make_extra_ca("notes.txt", b"hello")


def test_extra_ca_files_must_have_distinct_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    paths = [tmp_path / "a" / "ca.crt", tmp_path / "b" / "ca.crt"]
    for path in paths:
        path.write_bytes(PEM)
    with pytest.raises(BaseImageError, match="distinct names"):
        read_extra_cas(paths)


def test_extend_bundle_appends_on_a_new_line_and_only_once() -> None:
    ca = make_extra_ca("proxy.crt", PEM)
    bundle = extend_bundle(b"-----BEGIN CERTIFICATE-----\nOLD", [ca])
    assert bundle == b"-----BEGIN CERTIFICATE-----\nOLD\n" + PEM + b"\n"
    assert extend_bundle(bundle, [ca]) == bundle


def test_install_extra_cas_writes_the_folder_and_the_bundle(tmp_path: Path) -> None:
    (tmp_path / CA_BUNDLE).parent.mkdir(parents=True)
    (tmp_path / CA_BUNDLE).write_bytes(b"SYSTEM\n")
    install_extra_cas(tmp_path, [make_extra_ca("proxy.crt", PEM)])
    assert (tmp_path / CA_DIR / "proxy.crt").read_bytes() == PEM + b"\n"
    assert (tmp_path / CA_BUNDLE).read_bytes() == b"SYSTEM\n" + PEM + b"\n"


def test_install_extra_cas_needs_the_rootfs_bundle(tmp_path: Path) -> None:
    with pytest.raises(BaseImageError, match="no CA bundle"):
        install_extra_cas(tmp_path, [make_extra_ca("proxy.crt", PEM)])


def test_local_ca_files_lists_only_crt_files_in_order(tmp_path: Path) -> None:
    for name in ("b.crt", "a.crt", "README"):
        (tmp_path / name).write_bytes(PEM)
    assert local_ca_files(tmp_path) == (tmp_path / "a.crt", tmp_path / "b.crt")
    assert local_ca_files(tmp_path / "missing") == ()


def test_rootfs_cache_key_changes_with_cas_and_mirror() -> None:
    plain = DebianRootfsSpec("http://m.invalid/debian", "bookworm")
    with_ca = DebianRootfsSpec(plain.mirror, "bookworm", (make_extra_ca("p.crt", PEM),))
    other = DebianRootfsSpec("http://n.invalid/debian", "bookworm")
    keys = {plain.cache_key(), with_ca.cache_key(), other.cache_key()}
    assert len(keys) == 3
    assert plain.cache_key() == DebianRootfsSpec(plain.mirror, "bookworm").cache_key()


def test_debootstrap_argv_asks_for_minbase_with_ca_certificates() -> None:
    spec = DebianRootfsSpec("http://m.invalid/debian", "bookworm")
    argv = debootstrap_argv(spec, Path("/tmp/r"))
    assert argv[:3] == ["debootstrap", "--variant=minbase", "--include=ca-certificates"]
    assert argv[3:] == ["bookworm", "/tmp/r", "http://m.invalid/debian"]


def test_has_interpreter_tells_static_from_dynamic_binaries() -> None:
    assert has_interpreter(fake_elf([6, 3, 1]))
    assert not has_interpreter(fake_elf([1, 1, 4]))
    with pytest.raises(BaseImageError, match="not an ELF"):
        has_interpreter(b"#!/bin/sh\n")


def test_busybox_rootfs_links_each_applet_to_the_binary() -> None:
    applets = ["bin/busybox", "bin/sh", "usr/bin/wget", "sbin/init", "linuxrc"]
    members = tar_members(busybox_rootfs_tar(fake_elf([1]), applets))
    assert members["bin/busybox"].isfile()
    assert members["usr/bin/wget"].linkname == "/bin/busybox"
    assert members["usr/bin"].isdir() and members["sbin"].isdir()
    assert members["tmp"].mode == 0o1777
    assert "linuxrc" not in members
    assert "etc/passwd" in members


def test_busybox_rootfs_refuses_a_dynamically_linked_busybox() -> None:
    with pytest.raises(BaseImageError, match="busybox-static"):
        busybox_rootfs_tar(fake_elf([3]), ["bin/sh"])


def test_base_image_names_are_the_documented_contract() -> None:
    assert BASE_IMAGES[:2] == ["farm-base/debian:bookworm", "farm-base/busybox:latest"]
    for name in ("golang", "node", "node-runtime", "python", "python-runtime"):
        assert f"farm-base/{name}:bookworm" in BASE_IMAGES


def test_every_dockerfile_recipe_builds_on_its_parent_argument() -> None:
    for recipe in RECIPES:
        if recipe.source == "dockerfile":
            lines = recipe.dockerfile.read_text().splitlines()
            assert "FROM ${BASE_IMAGE}" in lines, recipe.dockerfile


def test_with_parents_adds_the_debian_base_first() -> None:
    catalog = BaseImageCatalog("ns", "trixie")
    assert catalog.with_parents(["ns/node:trixie", "ns/busybox:latest"]) == [
        "ns/debian:trixie",
        "ns/busybox:latest",
        "ns/node:trixie",
    ]


def test_unknown_image_name_lists_the_known_ones() -> None:
    with pytest.raises(BaseImageError, match="farm-base/debian:bookworm"):
        BaseImageCatalog().recipe("farm-base/ruby:bookworm")


class FakeEngine:
    """Just enough of docker.APIClient for ensure_base_images: which images exist."""

    def __init__(self, present: set[str]) -> None:
        self.present = present

    def inspect_image(self, name: str) -> dict[str, Any]:
        if name not in self.present:
            raise docker.errors.ImageNotFound(name)
        return {"Id": f"sha256:{name}", "Size": 1}


def test_ensure_base_images_makes_only_missing_images_parents_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[str] = []

    def make(api: FakeEngine, settings: BaseImageSettings, name: str) -> str:
        made.append(name)
        api.present.add(name)
        return f"sha256:{name}"

    for source in ("debootstrap", "busybox", "dockerfile"):
        monkeypatch.setitem(builder.MAKERS, source, make)
    api = FakeEngine({"farm-base/busybox:latest"})
    settings = BaseImageSettings(mirror="http://m.invalid/debian")
    wanted = ["farm-base/golang:bookworm", "farm-base/busybox:latest"]
    assert builder.ensure_base_images(api, settings, names=wanted) == wanted  # type: ignore[arg-type]
    assert made == ["farm-base/debian:bookworm", "farm-base/golang:bookworm"]
    builder.ensure_base_images(api, settings, names=wanted)  # type: ignore[arg-type]
    assert len(made) == 2


class FailingBuildEngine:
    """A docker.APIClient stand-in whose builds fail at a RUN step."""

    def build(self, **_: Any) -> list[Message]:
        return [
            {"stream": "Step 2/2 : RUN apt-get install nothing"},
            {"stream": "E: Unable to locate package nothing"},
            {"errorDetail": {"message": "returned a non-zero code: 100"}},
        ]


def test_failed_toolchain_build_reports_the_engine_error_and_log_tail(
    tmp_path: Path,
) -> None:
    dockerfile = tmp_path / "x.Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    with pytest.raises(BaseImageError) as caught:
        build_image(
            FailingBuildEngine(),  # type: ignore[arg-type]
            dockerfile,
            "ns/x:1",
            buildargs={},
            labels={},
        )
    assert "non-zero code: 100" in caught.value.message
    assert "Unable to locate package" in caught.value.details["log"]
    assert caught.value.image == "ns/x:1"


def test_check_stream_raises_the_engine_error_message() -> None:
    messages: list[Message] = [
        {"status": "Preparing"},
        {"errorDetail": {"message": "denied"}},
    ]
    with pytest.raises(BaseImageError, match="denied"):
        check_stream(messages, "img")


def test_push_digest_comes_from_the_final_aux_message() -> None:
    messages: list[Message] = [
        {"status": "Pushed"},
        {"status": "latest: digest: sha256:ab size: 527"},
        {"aux": {"Tag": "latest", "Digest": "sha256:ab", "Size": 527}},
    ]
    assert push_digest(messages, "img") == "sha256:ab"
    with pytest.raises(BaseImageError, match="no digest"):
        push_digest(messages[:2], "img")


def test_import_answer_lines_are_parsed_as_json() -> None:
    assert stream_lines('{"status":"sha256:1"}\r\n\r\n') == [{"status": "sha256:1"}]


def test_dockerfile_context_is_a_gnu_tar_holding_the_dockerfile() -> None:
    data = dockerfile_context(b"FROM scratch\n")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["Dockerfile"]
        assert tar.extractfile("Dockerfile").read() == b"FROM scratch\n"  # type: ignore[union-attr]
    assert b"ustar  \x00" in data[:512]  # the GNU magic, not POSIX/PAX


def test_registry_ref_prefixes_the_host_and_refuses_a_scheme() -> None:
    assert registry_ref("127.0.0.1:5000/", "farm-base/debian:bookworm") == (
        "127.0.0.1:5000/farm-base/debian:bookworm"
    )
    with pytest.raises(BaseImageError, match="host:port"):
        registry_ref("http://127.0.0.1:5000", "farm-base/debian:bookworm")
