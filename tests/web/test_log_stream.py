"""Following a build's log live over Server-Sent Events, against the real farm."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from farm.client import parse_event_stream
from tests.test_end_to_end import archive_of

pytestmark = pytest.mark.integration

SLOW = """\
FROM {base}
RUN echo first-{word} && sleep 4 && echo second-{word}
"""


def submit_slow(farm, tiny_image, tmp_path) -> tuple[str, str]:
    word = uuid.uuid4().hex
    (tmp_path / "Dockerfile").write_text(SLOW.format(base=tiny_image, word=word))
    response = farm.http.post(
        farm.api("/builds"),
        timeout=30,
        files={"archive": ("s.tar.gz", archive_of(tmp_path))},
    )
    assert response.status_code == 202, response.text
    return response.json()["id"], word


def read_events(response):
    """The stream's (event, id, data, seconds since reading began) until its end."""
    started = time.monotonic()
    for kind, event_id, data in parse_event_stream(response.iter_lines()):
        yield kind, event_id, data, time.monotonic() - started
        if kind == "end":
            return


def test_log_lines_arrive_while_the_build_runs(farm, tiny_image, tmp_path):
    build_id, word = submit_slow(farm, tiny_image, tmp_path)
    with farm.http.get(
        farm.api(f"/builds/{build_id}/log?follow=1"), stream=True, timeout=120
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = list(read_events(response))

    # The step's output lines, not the line naming the RUN command.
    output = [(d, at) for k, _, d, at in events if k == "line" and "echo" not in d]
    first = next(at for data, at in output if data.endswith(f"first-{word}"))
    second = next(at for data, at in output if data.endswith(f"second-{word}"))
    assert second - first >= 3  # the first line came while the step still slept
    ids = [int(event_id) for kind, event_id, _, _ in events if kind == "line"]
    assert ids == list(range(1, len(ids) + 1))
    states = [json.loads(d)["state"] for k, _, d, _ in events if k == "progress"]
    assert "running" in states and states[-1] == "succeeded"
    kind, _, data, _ = events[-1]
    assert kind == "end" and json.loads(data)["state"] == "succeeded"
    assert json.loads(data)["url"].startswith(farm.web_url)


def test_a_reconnect_resumes_from_the_last_line(farm, tiny_image, tmp_path):
    build_id, _ = submit_slow(farm, tiny_image, tmp_path)
    whole = farm.http.get(
        farm.api(f"/builds/{build_id}/log?follow=1"), stream=True, timeout=120
    )
    lines = [d for k, _, d, _ in read_events(whole) if k == "line"]
    assert len(lines) > 3
    resumed = farm.http.get(
        farm.api(f"/builds/{build_id}/log"),
        headers={"Accept": "text/event-stream", "Last-Event-ID": "3"},
        stream=True,
        timeout=30,
    )
    again = [d for k, _, d, _ in read_events(resumed) if k == "line"]
    assert again == lines[3:]


def test_following_an_unknown_build_is_a_404(farm):
    response = farm.http.get(farm.api("/builds/nope/log?follow=1"), timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_followers_beyond_the_limit_are_told_to_come_back(farm, tiny_image, tmp_path):
    (tmp_path / "Dockerfile").write_text(
        f"FROM {tiny_image}\nRUN echo {uuid.uuid4()}\n"
    )
    waiting = farm.http.post(
        farm.api("/builds"),
        data={"queue": "idle"},  # no node serves it: its log stays open
        files={"archive": ("a.tar.gz", archive_of(tmp_path))},
        timeout=30,
    ).json()["id"]
    url = farm.api(f"/builds/{waiting}/log?follow=1")
    streams = []
    try:
        for _ in range(32):  # FARM_MAX_LOG_FOLLOWERS' default
            stream = farm.http.get(url, stream=True, timeout=30)
            assert stream.status_code == 200
            streams.append(stream)
        refused = farm.http.get(url, stream=True, timeout=30)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "too_many_followers"
        assert refused.headers["Retry-After"] == "5"
        assert farm.http.get(farm.api("/nodes"), timeout=10).status_code == 200
    finally:
        for stream in streams:
            stream.close()
        farm.http.post(farm.api(f"/builds/{waiting}/cancel"), timeout=10)
    # Cancelled, the build's log ends, its streams close: followers are let in.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        again = farm.http.get(url, stream=True, timeout=30)
        again.close()
        if again.status_code == 200:
            break
        time.sleep(0.5)
    assert again.status_code == 200
