"""Builds by project and ref, who submitted them, and the status badge."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.test_end_to_end import archive_of

pytestmark = pytest.mark.integration


def build(farm, tmp_path, base: str, tag: str, *, fail: bool = False) -> dict:
    run = f"echo {uuid.uuid4().hex}" + (" && exit 4" if fail else "")
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nRUN {run}\n")
    response = farm.http.post(
        farm.api("/builds"),
        data={"tags": tag},
        files={"archive": ("a.tar.gz", archive_of(tmp_path))},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return farm.wait_for(response.json()["id"])


def test_builds_are_listed_by_project_with_who_asked(farm, tiny_image, tmp_path):
    project = f"proj-{uuid.uuid4().hex[:8]}"
    mine = build(farm, tmp_path, tiny_image, f"{project}/web:1")
    build(farm, tmp_path, tiny_image, f"other-{project}/web:1")

    listed = farm.http.get(
        farm.api(f"/builds?project={project}/web"), timeout=10
    ).json()["builds"]

    assert [b["id"] for b in listed] == [mine["id"]]
    assert listed[0]["project"] == f"{project}/web"
    assert listed[0]["submitted_by"] == "local-admin"
    page = farm.http.get(f"{farm.web_url}/?project={project}/web", timeout=10).text
    assert mine["id"] in page and "local-admin" in page


def test_the_badge_shows_the_last_ended_build_without_a_token(
    farm, tiny_image, tmp_path
):
    project = f"badge-{uuid.uuid4().hex[:8]}/app"
    badge_url = f"{farm.web_url}/badge/{project}.svg"
    empty = requests.get(badge_url, timeout=10)
    assert empty.status_code == 200
    assert empty.headers["Content-Type"].startswith("image/svg+xml")
    assert "no builds" in empty.text

    build(farm, tmp_path, tiny_image, f"{project}:1", fail=True)
    assert ">failing<" in requests.get(badge_url, timeout=10).text
    build(farm, tmp_path, tiny_image, f"{project}:1")
    assert ">passing<" in requests.get(badge_url, timeout=10).text

    hostile = requests.get(badge_url, params={"ref": "<script>"}, timeout=10).text
    assert "<script>" not in hostile and "&lt;script&gt;" in hostile


def test_queues_show_what_waits_and_nodes_what_they_build(farm, tiny_image, tmp_path):
    (tmp_path / "Dockerfile").write_text(
        f"FROM {tiny_image}\nRUN echo {uuid.uuid4()}\n"
    )
    waiting = farm.http.post(
        farm.api("/builds"),
        data={"queue": "idle"},
        files={"archive": ("a.tar.gz", archive_of(tmp_path))},
        timeout=30,
    ).json()
    try:
        queues = {
            q["name"]: q
            for q in farm.http.get(farm.api("/queues"), timeout=10).json()["queues"]
        }
        assert waiting["id"] in [b["id"] for b in queues["idle"]["queued"]]
        assert queues["idle"]["nodes"] == [] and queues["builds"]["nodes"] == ["node-a"]
        node = farm.http.get(farm.api("/nodes"), timeout=10).json()["nodes"][0]
        assert node["engine"] == "ok" and node["beat_at"]
        page = farm.http.get(f"{farm.web_url}/queues", timeout=10).text
        assert waiting["id"] in page and "no live node" in page and "node-a" in page
    finally:
        farm.http.post(farm.api(f"/builds/{waiting['id']}/cancel"), timeout=10)
