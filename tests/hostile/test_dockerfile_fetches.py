"""A Dockerfile is a way out too: the engine itself fetches ``ADD`` URLs, base
images from registries and ``# syntax`` frontends. On a farm with the default
destination policy, a Dockerfile that would make it reach an internal host is
refused (an upload's at submit, a git source's on the node before building), and
a listener on loopback sees no connection. The control, on a farm whose operator
allows private destinations, shows the engine does reach the listener."""

from __future__ import annotations

import io
import json
import socketserver
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.local.process import free_port
from farm.local.stack import LocalFarm
from tests.conftest import (
    ARTIFACTS,
    RunningFarm,
    dockerfile_archive,
    running,
)
from tests.hostile.test_requests import assert_refused, count_builds

pytestmark = pytest.mark.integration


class Listener(socketserver.ThreadingTCPServer):
    """An HTTP server on loopback that counts who connects and answers 200."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.connections = 0
        super().__init__(("127.0.0.1", free_port()), Answer)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class Answer(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.server.connections += 1  # type: ignore[attr-defined]
        self.rfile.readline()
        body = b"fetched\n"
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def fetching_dockerfiles(
    base: str, port: int, bridge: str
) -> list[tuple[str, str, dict]]:
    """(case, Dockerfile, build args): each makes the engine reach loopback or a
    private address of this machine."""
    url = f"http://127.0.0.1:{port}/x"
    return [
        ("add-loopback", f"FROM {base}\nADD {url} /x\n", {}),
        ("add-private", f"FROM {base}\nADD http://{bridge}:{port}/x /x\n", {}),
        ("add-json-form", f'FROM {base}\nADD ["{url}", "/x"]\n', {}),
        ("add-git-remote", f"FROM {base}\nADD git@{bridge}:team/app.git /src\n", {}),
        ("add-from-env", f"FROM {base}\nENV U={url}\nADD $U /x\n", {}),
        ("add-from-build-arg", f"FROM {base}\nARG SRC\nADD $SRC /x\n", {"SRC": url}),
        ("add-from-base-env", f"FROM {base}\nADD $UNSET_HERE /x\n", {}),
        ("from-loopback-registry", f"FROM 127.0.0.1:{port}/evil:1\n", {}),
        ("from-arg-registry", f"ARG R={bridge}:{port}\nFROM ${{R}}/evil\n", {}),
        ("syntax-frontend", f"# syntax=127.0.0.1:{port}/front:1\nFROM {base}\n", {}),
        ("copy-from-image", f"FROM {base}\nCOPY --from=localhost:{port}/i /a /a\n", {}),
        ("add-quoted", f'FROM {base}\nADD "{url}" /x\n', {}),
        ("add-escaped", f"FROM {base}\nADD http\\://127.0.0.1:{port}/x /x\n", {}),
        (
            "add-from-chained-env",
            f"FROM {base}\nENV A=http://127.0.0.1:{port}\nENV U=$A/x\nADD $U /x\n",
            {},
        ),
        ("onbuild-add", f"FROM {base}\nONBUILD ADD {url} /x\n", {}),
        ("heredoc-add", f"FROM {base}\nRUN <<CMD\nADD {url} /x\nCMD\n", {}),
        (
            "mount-from-quoted",
            f'FROM {base}\nRUN --mount=type=bind,"from=127.0.0.1:{port}/i",'
            "target=/i true\n",
            {},
        ),
        (
            "mount-from-image",
            f"FROM {base}\nRUN --mount=type=bind,from=127.0.0.1:{port}/i,target=/i "
            "true\n",
            {},
        ),
    ]


def test_uploads_whose_dockerfile_reaches_inside_are_refused_at_submit(
    hostile_farm, listener, tiny_image, bridge_address
):
    http = hostile_farm.api_session()
    api = f"{hostile_farm.web_url}/api/v1"
    before = count_builds(hostile_farm)
    answers = {}
    cases = fetching_dockerfiles(tiny_image, listener.port, bridge_address)
    for case, text, args in cases:
        answer = http.post(
            f"{api}/builds",
            files={"archive": ("s.tar.gz", dockerfile_archive(text))},
            data={"build_args": json.dumps(args)} if args else {},
            timeout=30,
        )
        error = assert_refused(answer, "dockerfile")
        assert error["message"].startswith("Dockerfile line "), (case, error)
        answers[case] = error["message"]
    # The frontend image may not come through a build arg either.
    answer = http.post(
        f"{api}/builds",
        files={"archive": ("s.tar.gz", dockerfile_archive(f"FROM {tiny_image}\n"))},
        data={"build_arg": f"BUILDKIT_SYNTAX=127.0.0.1:{listener.port}/front"},
        timeout=30,
    )
    answers["buildkit-syntax-arg"] = assert_refused(answer, "build_args")["message"]
    # A secret in a refused URL is not said back.
    answer = http.post(
        f"{api}/builds",
        files={
            "archive": (
                "s.tar.gz",
                dockerfile_archive(
                    f"FROM {tiny_image}\nARG API_TOKEN\n"
                    f"ADD http://127.0.0.1:{listener.port}/x?t=${{API_TOKEN}} /x\n"
                ),
            )
        },
        data={"build_arg": "API_TOKEN=hunter-in-refusal-42"},
        timeout=30,
    )
    refused = assert_refused(answer, "dockerfile")["message"]
    assert "hunter-in-refusal-42" not in refused and "***" in refused
    answers["secret-in-refused-url"] = refused
    # A group is checked image by image, all before any is recorded.
    group = {
        "images": [
            {"name": "fine", "tags": ["fine:1"]},
            {"name": "reaching", "dockerfile": "reach/Dockerfile"},
        ]
    }
    answer = http.post(
        f"{api}/groups",
        files={"archive": ("s.tar.gz", two_dockerfiles(tiny_image, listener.port))},
        data={"group": json.dumps(group)},
        timeout=30,
    )
    answers["group"] = assert_refused(answer, "dockerfile")["message"]
    assert "reaching" in answers["group"]

    assert listener.connections == 0
    assert count_builds(hostile_farm) == before
    (ARTIFACTS / "hostile-dockerfile-fetches.json").write_text(
        json.dumps({"tried": len(answers), "refused": answers}, indent=2)
    )


def two_dockerfiles(base: str, port: int) -> bytes:
    buffer = io.BytesIO()
    files = {
        "Dockerfile": f"FROM {base}\n",
        "reach/Dockerfile": f"FROM {base}\nADD http://127.0.0.1:{port}/x /x\n",
    }
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return buffer.getvalue()


def repository_with(dockerfile: str, folder: Path) -> str:
    """A git repository holding only this Dockerfile; its file:// URL."""
    folder.mkdir()
    (folder / "Dockerfile").write_text(dockerfile)
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "Dockerfile"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "d"],
    ):
        subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)
    return f"file://{folder}"


def test_a_git_sources_dockerfile_reaching_inside_fails_before_building(
    hostile_farm, listener, tiny_image, tmp_path
):
    text = f"FROM {tiny_image}\nADD http://127.0.0.1:{listener.port}/x /x\n"
    farm = RunningFarm(hostile_farm)
    answer = farm.http.post(
        farm.api("/builds"),
        json={"git_url": repository_with(text, tmp_path / "repo")},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    build = farm.wait_for(answer.json()["id"], timeout_seconds=120)
    assert build["state"] == "failed"
    assert build["error"]["code"] == "build_failed"
    assert build["error"]["dockerfile_line"] == 2
    assert "internal address (127.0.0.1)" in build["error"]["message"]
    assert build["steps"] == []  # the engine was never asked to build
    assert listener.connections == 0


@pytest.fixture(scope="module")
def open_farm(services) -> Iterator[LocalFarm]:
    """A farm whose operator lets builds reach private destinations."""
    stack = services.farm(
        "open-destinations",
        nodes=("open-a",),
        env={"FARM_PRIVATE_DESTINATIONS": "true"},
    )
    yield from running(stack)


def test_control_the_engine_does_fetch_what_an_operator_allows(
    open_farm, listener, tiny_image
):
    farm = RunningFarm(open_farm)
    text = f"FROM {tiny_image}\nADD http://127.0.0.1:{listener.port}/x /x\n"
    answer = farm.http.post(
        farm.api("/builds"),
        files={"archive": ("s.tar.gz", dockerfile_archive(text))},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    build = farm.wait_for(answer.json()["id"], timeout_seconds=300)
    assert build["state"] == "succeeded", build["error"]
    assert listener.connections >= 1
