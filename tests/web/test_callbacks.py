"""Completion callbacks: signed, retried, recorded, and only to allowed hosts."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from farm.callbacks import sign
from tests.conftest import CALLBACK_SECRET
from tests.test_end_to_end import archive_of

pytestmark = pytest.mark.integration


class Receiver:
    """A loopback HTTP server that answers with the statuses it is given, in turn,
    and keeps what it received."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict[str, str], bytes, float]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body, time.monotonic()))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/farm-done"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def start(statuses: list[int]) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    yield start
    for server in made:
        server.close()


def submit(farm, tmp_path, base: str, callback_url: str, *, fail: bool = False):
    run = f"echo {uuid.uuid4().hex}" + (" && exit 5" if fail else "")
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nRUN {run}\n")
    return farm.http.post(
        farm.api("/builds"),
        data={"callback_url": callback_url},
        files={"archive": ("a.tar.gz", archive_of(tmp_path))},
        timeout=30,
    )


def wait_delivered(farm, build_id: str, timeout_seconds: float = 90) -> dict:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        build = farm.http.get(farm.api(f"/builds/{build_id}"), timeout=10).json()
        if build["callbacks"] and build["callbacks"][0]["state"] != "pending":
            return build
        time.sleep(0.5)
    raise AssertionError(f"the callback of {build_id} was not settled: {build}")


def test_the_result_is_posted_signed_and_retried_until_taken(
    farm, tiny_image, tmp_path, receiver
):
    server = receiver([503])  # the first attempt is refused
    response = submit(farm, tmp_path, tiny_image, server.url, fail=True)
    assert response.status_code == 202, response.text

    build = wait_delivered(farm, response.json()["id"])

    callback = build["callbacks"][0]
    assert (callback["state"], callback["attempts"]) == ("delivered", 2)
    assert callback["last_status"] == 200 and callback["delivered_at"]
    assert len(server.received) == 2
    (_, _, first_at), (headers, body, second_at) = server.received
    assert second_at - first_at >= 9  # retried after about 10 s
    expected = sign(CALLBACK_SECRET, headers["X-Farm-Timestamp"], body)
    assert headers["X-Farm-Signature"] == expected
    assert headers["X-Farm-Event"] == "build.finished"
    sent = json.loads(body)
    assert sent["event"] == "build.finished"
    assert (sent["build"]["id"], sent["build"]["state"]) == (build["id"], "failed")
    assert sent["build"]["error"]["dockerfile_line"] == 2


def test_a_joined_request_gets_its_own_callback(farm, tiny_image, tmp_path, receiver):
    first, second = receiver([]), receiver([])
    (tmp_path / "Dockerfile").write_text(
        f"FROM {tiny_image}\nRUN echo {uuid.uuid4().hex} && sleep 2\n"
    )
    archive = archive_of(tmp_path)
    ids = [
        farm.http.post(
            farm.api("/builds"),
            data={"callback_url": server.url},
            files={"archive": ("a.tar.gz", archive)},
            timeout=30,
        ).json()["id"]
        for server in (first, second)
    ]
    assert ids[0] == ids[1]  # joined
    build = wait_delivered(farm, ids[0])
    deadline = time.monotonic() + 60
    while len(second.received) < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(first.received) == 1 and len(second.received) == 1
    assert len(build["callbacks"]) == 2


def test_credentials_in_a_callback_url_are_not_shown(
    farm, tiny_image, tmp_path, receiver
):
    server = receiver([])
    secret_url = server.url.replace("http://", "http://user:hunter2@")
    response = submit(farm, tmp_path, tiny_image, secret_url)
    assert response.status_code == 202, response.text
    build = wait_delivered(farm, response.json()["id"])
    assert "hunter2" not in json.dumps(build)
    assert build["callbacks"][0]["state"] == "delivered"


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://10.0.0.5/done", "only reaches the hosts 127.0.0.1"),
        ("http://169.254.169.254/latest/meta-data", "only reaches the hosts"),
        ("ftp://127.0.0.1/x", "http:// or https://"),
    ],
)
def test_callbacks_go_only_where_allowed(farm, tiny_image, tmp_path, url, message):
    response = submit(farm, tmp_path, tiny_image, url)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["details"]["field"] == "callback_url"
    assert message in error["message"]
