"""Retrying builds and retried POSTs with an Idempotency-Key, on the real farm."""

from __future__ import annotations

import json
import uuid

import pytest
from flask import Flask, request

from tests.test_end_to_end import archive_of
from web.api import request_fingerprint

pytestmark = pytest.mark.integration


def project(tmp_path, base: str, *, fail: bool = False):
    run = f"echo {uuid.uuid4().hex}" + (" && exit 3" if fail else "")
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nRUN {run}\n")
    return archive_of(tmp_path)


def test_retry_builds_the_same_inputs_again(farm, tiny_image, tmp_path):
    first = farm.http.post(
        farm.api("/builds"),
        data={"tags": "retry/app:1", "build_arg": "X=1"},
        files={"archive": ("a.tar.gz", project(tmp_path, tiny_image, fail=True))},
        timeout=30,
    ).json()
    running = farm.http.post(farm.api(f"/builds/{first['id']}/retry"), timeout=10)
    if running.status_code == 409:  # still going: that is refused, with its state
        assert running.json()["error"]["code"] == "conflict"
    ended = farm.wait_for(first["id"])
    assert ended["state"] == "failed"

    response = farm.http.post(farm.api(f"/builds/{first['id']}/retry"), timeout=10)

    assert response.status_code == 202, response.text
    again = response.json()
    assert again["id"] != first["id"] and again["submission"] == "created"
    for field in ("source", "tags", "build_args", "context", "dockerfile", "queue"):
        assert again[field] == first[field]
    assert farm.wait_for(again["id"])["state"] == "failed"


def test_retrying_an_unknown_build_is_a_404(farm):
    response = farm.http.post(farm.api("/builds/nope/retry"), timeout=10)
    assert response.status_code == 404


def test_a_repeated_post_with_a_key_returns_the_first_build(farm, tiny_image, tmp_path):
    archive = project(tmp_path, tiny_image)
    key = uuid.uuid4().hex
    answers = [
        # requests draws a new multipart boundary for each call
        farm.http.post(
            farm.api("/builds"),
            headers={"Idempotency-Key": key},
            data={"tags": "idem/app:1"},
            files={"archive": ("a.tar.gz", archive)},
            timeout=30,
        )
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert len({a.json()["id"] for a in answers}) == 1
    assert "Idempotent-Replayed" not in answers[0].headers
    assert answers[1].headers["Idempotent-Replayed"] == "true"
    assert answers[2].json()["submission"] == "created"

    other = farm.http.post(
        farm.api("/builds"),
        headers={"Idempotency-Key": key},
        data={"tags": "idem/other:1"},
        files={"archive": ("a.tar.gz", archive)},
        timeout=30,
    )
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"


def test_a_failed_request_does_not_use_up_its_key(farm):
    key = uuid.uuid4().hex
    bad = farm.http.post(
        farm.api("/groups"),
        headers={"Idempotency-Key": key},
        json={"git_url": "http://127.0.0.1:9/a.git", "images": []},
        timeout=30,
    )
    assert bad.status_code == 400
    again = farm.http.post(
        farm.api("/groups"),
        headers={"Idempotency-Key": key},
        json={"git_url": "http://127.0.0.1:9/a.git", "images": []},
        timeout=30,
    )
    assert again.status_code == 400 and "Idempotent-Replayed" not in again.headers


@pytest.mark.parametrize("key", ["", "x" * 256, "new\tline"])
def test_malformed_keys_are_refused(farm, key):
    response = farm.http.post(
        farm.api("/builds"),
        headers={"Idempotency-Key": key},
        data=json.dumps({"git_url": "http://127.0.0.1:9/a.git"}),
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "Idempotency-Key"


def test_a_request_with_a_field_name_read_as_none_has_a_fingerprint():
    """A multipart field name ending in a backslash reaches the app as None."""
    body = (
        b'--b\r\nContent-Disposition: form-data; name="z\\"\r\n\r\n'
        b'{}\r\n--b\r\nContent-Disposition: form-data; name="group"\r\n\r\nx\r\n'
        b"--b--\r\n"
    )
    app = Flask(__name__)
    with app.test_request_context(
        "/api/v1/groups",
        method="POST",
        data=body,
        content_type="multipart/form-data; boundary=b",
    ):
        assert None in request.form
        assert request_fingerprint() == request_fingerprint()
