"""Hostile and broken requests against a real farm with the default destination
policy: each gets a 4xx with a clear message before any git or tar process runs,
nothing is recorded, and nothing is written outside the farm's own folders.

The farm (in ``conftest.py``) runs with ``git`` and ``tar`` shims that note every
call, so "no process ran" is observed, not assumed.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
import zipfile
from pathlib import Path

import pytest
import requests

from farm.ledger import BuildLedger
from farm.local.stack import LocalFarm
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.integration

CANARY = f"farm-hostile-{uuid.uuid4().hex}"
SECRET = f"hunter-{uuid.uuid4().hex[:8]}"


def count_builds(stack: LocalFarm) -> int:
    ledger = BuildLedger.from_url(stack.env()["FARM_DATABASE_URL"])
    try:
        return sum(ledger.count_by_state().values())
    finally:
        ledger.engine.dispose()


def git_requests(bridge: str) -> list[tuple[str, dict, str]]:
    """(case, JSON body, the field the answer must name)."""
    # An address literal, so no name is ever looked up; the field tried is refused
    # before the destination would be checked.
    url = "https://192.0.2.10/app.git"
    return [
        ("ext-transport", {"git_url": f"ext::sh -c touch% /tmp/{CANARY}"}, "git_url"),
        ("ext-no-spaces", {"git_url": "ext::sh%20-c%20id"}, "git_url"),
        ("fd-transport", {"git_url": "fd::3"}, "git_url"),
        ("option-as-url", {"git_url": f"--upload-pack=touch /tmp/{CANARY}"}, "git_url"),
        ("dash-url", {"git_url": "-uhttp://127.0.0.1/x"}, "git_url"),
        ("loopback", {"git_url": "http://127.0.0.1:9/r.git"}, "git_url"),
        ("localhost", {"git_url": "http://localhost:9/r.git"}, "git_url"),
        ("loopback-v6", {"git_url": "http://[::1]:9/r.git"}, "git_url"),
        ("loopback-decimal", {"git_url": "http://2130706433:9/r.git"}, "git_url"),
        ("loopback-hex", {"git_url": "http://0x7f.1:9/r.git"}, "git_url"),
        ("unspecified", {"git_url": "http://0.0.0.0:9/r.git"}, "git_url"),
        ("mapped-v6", {"git_url": "http://[::ffff:127.0.0.1]:9/r.git"}, "git_url"),
        ("compat-v6", {"git_url": "http://[::127.0.0.1]:9/r.git"}, "git_url"),
        ("nat64-v6", {"git_url": "http://[64:ff9b::7f00:1]:9/r.git"}, "git_url"),
        ("6to4-v6", {"git_url": "http://[2002:7f00:1::]:9/r.git"}, "git_url"),
        ("private-bridge", {"git_url": f"http://{bridge}:9/r.git"}, "git_url"),
        ("scp-loopback", {"git_url": "git@127.0.0.1:r.git"}, "git_url"),
        (
            "credentials",
            {"git_url": f"https://bob:{SECRET}@127.0.0.1:9/r.git"},
            "git_url",
        ),
        ("option-ref", {"git_url": url, "git_ref": "--upload-pack=x"}, "git_ref"),
        ("dash-ref", {"git_url": url, "git_ref": "-b"}, "git_ref"),
        ("climbing-ref", {"git_url": url, "git_ref": "main/../../x"}, "git_ref"),
        ("reflog-ref", {"git_url": url, "git_ref": "@{-1}"}, "git_ref"),
        ("climbing-context", {"git_url": url, "context": "../.."}, "context"),
        (
            "absolute-dockerfile",
            {"git_url": url, "dockerfile": "/etc/passwd"},
            "dockerfile",
        ),
        (
            "huge-build-arg",
            {"git_url": url, "build_args": {"A": "x" * 100_000}},
            "build_args",
        ),
        (
            "many-build-args",
            {"git_url": url, "build_args": {f"A{n}": "1" for n in range(500)}},
            "build_args",
        ),
        ("many-tags", {"git_url": url, "tags": [f"t{n}" for n in range(200)]}, "tags"),
        (
            "other-registry-tag",
            {"git_url": url, "tags": ["evil.example:5000/x:1"]},
            "tags",
        ),
        (
            "base-image-tag",
            {"git_url": url, "tags": ["farm-base/busybox:latest"]},
            "tags",
        ),
        ("stage-cache-tag", {"git_url": url, "tags": ["farm-cache/web:x"]}, "tags"),
        ("untagged-repository-tag", {"git_url": url, "tags": ["builds:1"]}, "tags"),
        ("long-target", {"git_url": url, "target": "t" * 10_000}, "target"),
        (
            "callback-loopback",
            {"git_url": url, "callback_url": "http://127.0.0.1:1/x"},
            "callback_url",
        ),
        (
            "callback-private",
            {"git_url": url, "callback_url": f"http://{bridge}:1/x"},
            "callback_url",
        ),
        (
            "callback-file",
            {"git_url": url, "callback_url": "file:///etc/passwd"},
            "callback_url",
        ),
    ]


def tar_with(*members: tarfile.TarInfo, payload: bytes = b"x") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        dockerfile = tarfile.TarInfo("Dockerfile")
        body = b"FROM scratch\n"
        dockerfile.size = len(body)
        tar.addfile(dockerfile, io.BytesIO(body))
        for member in members:
            if member.isreg():
                member.size = len(payload)
                tar.addfile(member, io.BytesIO(payload))
            else:
                tar.addfile(member)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def bomb() -> bytes:
    """One entry declaring 64 GiB of zeros, a few kilobytes compressed."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = 64 * 1024**3

        class Zeros(io.RawIOBase):
            left = info.size

            def readinto(self, b: bytearray) -> int:  # type: ignore[override]
                n = min(len(b), self.left, 1024 * 1024)
                b[:n] = bytes(n)
                self.left -= n
                return n

        # Only the header and a little of the body: the rest is never sent.
        header = info.tobuf(format=tarfile.GNU_FORMAT)
        tar.fileobj.write(header)  # type: ignore[union-attr]
        tar.fileobj.write(bytes(1024 * 1024))  # type: ignore[union-attr]
    return buffer.getvalue()


def many_files() -> bytes:
    return tar_with(*(member(f"f/{n}") for n in range(120_000)), payload=b"")


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Dockerfile", "FROM scratch\n")
    return buffer.getvalue()


def archive_requests() -> list[tuple[str, bytes]]:
    return [
        ("climbing-path", tar_with(member(f"../../tmp/{CANARY}"))),
        ("absolute-path", tar_with(member(f"/tmp/{CANARY}"))),
        ("symlink-out", tar_with(member("out", tarfile.SYMTYPE, "/tmp"))),
        ("symlink-climbing", tar_with(member("up", tarfile.SYMTYPE, "../../.."))),
        ("hardlink-out", tar_with(member("h", tarfile.LNKTYPE, "/etc/passwd"))),
        ("device", tar_with(member("dev", tarfile.CHRTYPE))),
        ("fifo", tar_with(member("pipe", tarfile.FIFOTYPE))),
        (
            "beneath-symlink",
            tar_with(member("d", tarfile.SYMTYPE, "sub"), member("d/x")),
        ),
        ("declared-huge", bomb()),
        ("many-files", many_files()),
        ("not-an-archive", b"just some text, not a tar"),
        ("zip", zip_archive()),
        ("empty", b""),
    ]


def assert_refused(answer, field: str | None = None) -> dict:
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    error = answer.json()["error"]
    assert error["code"] in {"invalid_request", "payload_too_large"}
    assert len(error["message"]) > 10
    if field is not None:
        assert error.get("details", {}).get("field") == field, error
    return error


def test_hostile_requests_are_refused_before_anything_runs(
    hostile_farm, shims, bridge_address
):
    http = hostile_farm.api_session()
    api = f"{hostile_farm.web_url}/api/v1/builds"
    calls = shims / "calls.log"
    before, calls_before = count_builds(hostile_farm), calls.read_text()
    tried = refused = 0
    outcomes = {}
    for case, body, field in git_requests(bridge_address):
        error = assert_refused(http.post(api, json=body, timeout=30), field)
        assert SECRET not in json.dumps(error), case
        outcomes[case] = error["message"]
        tried, refused = tried + 1, refused + 1
    for case, content in archive_requests():
        answer = http.post(api, files={"archive": ("a.tar.gz", content)}, timeout=60)
        outcomes[case] = assert_refused(answer)["message"]
        tried, refused = tried + 1, refused + 1

    assert count_builds(hostile_farm) == before, "a hostile request was recorded"
    assert calls.read_text() == calls_before, "git or tar ran for a hostile request"
    assert not Path(f"/tmp/{CANARY}").exists()
    assert not list(Path("/").glob(f"*/{CANARY}"))
    logs = "".join(
        p.log_path.read_text(errors="replace") for p in hostile_farm.processes
    )
    assert SECRET not in logs
    (ARTIFACTS / "hostile-requests.json").write_text(
        json.dumps({"tried": tried, "refused": refused, "answers": outcomes}, indent=2)
    )


def test_the_shims_do_see_git_when_a_request_is_fine(hostile_farm, shims):
    """The control: a request that passes validation does run git (here on a
    local path that holds no repository, so it fails cleanly)."""
    http = hostile_farm.api_session()
    answer = http.post(
        f"{hostile_farm.web_url}/api/v1/builds",
        json={"git_url": f"file:///tmp/{CANARY}-none"},
        timeout=60,
    )
    assert answer.status_code in {400, 422}, answer.text
    assert " ls-remote -- file:///tmp/" in (shims / "calls.log").read_text()


@pytest.mark.parametrize("length", [4_100, 7_990, 100_000])
def test_an_overlong_url_is_refused_in_the_apis_own_shape(hostile_farm, length):
    """Past the app's limit, the answer is the API's JSON (for a page, the farm's
    error page); past the server's request-line limit, the API's JSON too, never
    the server's own page."""
    web = hostile_farm.web_url
    query = "?project=" + "x" * length
    answer = hostile_farm.api_session().get(f"{web}/api/v1/builds{query}", timeout=30)
    page = requests.get(f"{web}/{query}", timeout=30)  # no token: a browser
    if length + len("/api/v1/builds") <= 8000:
        assert answer.status_code == 200, answer.text[:300]
        return
    assert answer.status_code == 414, answer.text[:300]
    assert answer.json()["error"]["code"] == "uri_too_long"
    assert page.status_code == 414
    if length < 8190:
        assert page.headers["Content-Type"].startswith("text/html")
        assert "this farm reads URLs (path and query) of at most 8000" in page.text
    else:
        assert page.json()["error"]["code"] == "uri_too_long"
        assert "request lines of at most 8190 bytes" in page.json()["error"]["message"]


def test_overlong_headers_are_still_refused_by_the_server(hostile_farm):
    http = hostile_farm.api_session()
    api = f"{hostile_farm.web_url}/api/v1/builds"
    answer = http.get(api, headers={"X-Padding": "x" * 9_000}, timeout=30)
    assert answer.status_code == 431, answer.status_code
    assert answer.json()["error"]["code"] == "headers_too_large"
    many = {f"X-Padding-{n}": "x" for n in range(120)}
    answer = http.get(api, headers=many, timeout=30)
    assert answer.status_code == 431, answer.status_code
    assert "at most 100 fields" in answer.json()["error"]["message"]
    assert http.get(api, timeout=30).status_code == 200
