"""Smoke tests of groups: the built images started together on one network, each
checked for staying up and answering, against the real farm and engine."""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from farm.config import Settings
from farm.ledger import BuildLedger
from tests.test_end_to_end import post_group
from workers.engine import EngineClient
from workers.smoke import LABEL, NODE_LABEL, SmokeTester

pytestmark = pytest.mark.integration

SERVES = """\
FROM {base}
RUN mkdir /www && echo {word} > /www/index.html
EXPOSE {port}
CMD ["httpd", "-f", "-p", "{port}", "-h", "/www"]
"""

# Serves only once it fetched its page from the 'api' image by name.
NEEDS_API = """\
FROM {base}
RUN mkdir /www && echo {word} > /www/version
CMD ["sh", "-c", "until wget -q -O /www/index.html http://api:9090/index.html; \\
do sleep 0.5; done; exec httpd -f -p 8080 -h /www"]
"""

CRASHES = """\
FROM {base}
RUN echo {word} > /word
CMD ["sh", "-c", "echo starting; sleep 1; echo boom >&2; exit 3"]
"""

DEAF = """\
FROM {base}
RUN echo {word} > /word
EXPOSE 7000
CMD ["sleep", "1000"]
"""


def submit_group(farm: Any, folder: Path, group: dict[str, Any]) -> dict[str, Any]:
    response = post_group(farm, folder, group)
    assert response.status_code == 202, response.text
    return dict(response.json())


def wait_finished(farm: Any, group_id: str, timeout_seconds: float = 300) -> Any:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        group = farm.http.get(farm.api(f"/groups/{group_id}"), timeout=10).json()
        if group["finished"]:
            return group
        time.sleep(0.5)
    raise AssertionError(f"group {group_id} did not finish in {timeout_seconds}s")


def write(folder: Path, dockerfile: str, tiny_image: str, **values: Any) -> None:
    folder.mkdir(parents=True)
    word = uuid.uuid4().hex
    (folder / "Dockerfile").write_text(
        dockerfile.format(base=tiny_image, word=word, **values)
    )


def leftovers(engine_url: str, group_id: str) -> tuple[list[Any], list[Any]]:
    client = docker.DockerClient(base_url=engine_url)
    try:
        label = {"label": f"{LABEL}={group_id}"}
        return (
            client.api.containers(all=True, filters=label),
            client.api.networks(filters=label),
        )
    finally:
        client.close()


def test_images_that_reach_each_other_by_name_pass(farm, tiny_image, tmp_path):
    write(tmp_path / "app/api", SERVES, tiny_image, port=9090)
    write(tmp_path / "app/web", NEEDS_API, tiny_image)
    group = submit_group(
        farm,
        tmp_path / "app",
        {
            "name": "shop",
            "smoke_test": {"seconds": 2, "timeout_seconds": 30},
            "images": [
                {"name": "api", "context": "api", "tags": ["smoke/api:1"]},
                {
                    "name": "web",
                    "context": "web",
                    "tags": ["smoke/web:1"],
                    "smoke": {"port": 8080, "path": "/index.html"},
                },
            ],
        },
    )
    assert group["smoke_test"]["state"] == "pending"
    assert group["finished"] is False

    group = wait_finished(farm, group["id"])

    assert group["state"] == "succeeded"
    smoke = group["smoke_test"]
    assert smoke["state"] == "passed", smoke
    api, web = smoke["images"]
    assert (api["name"], api["port"], api["stayed_up"], api["answered"]) == (
        "api",
        9090,  # from EXPOSE
        True,
        True,
    )
    assert api["image"].endswith("@" + group["images"][0]["image"]["digest"])
    # The web image copied the api's page, so it answers with the api's word.
    assert (web["http_status"], web["answered"], web["stayed_up"]) == (200, True, True)
    assert smoke["node"] == "node-a"
    assert leftovers(farm.engine_url, group["id"]) == ([], [])


def test_an_image_that_exits_or_does_not_answer_fails_the_test(
    farm, tiny_image, tmp_path
):
    write(tmp_path / "app/crash", CRASHES, tiny_image)
    write(tmp_path / "app/deaf", DEAF, tiny_image)
    write(tmp_path / "app/quiet", DEAF.replace("EXPOSE 7000\n", ""), tiny_image)
    write(tmp_path / "app/tool", CRASHES, tiny_image)
    group = submit_group(
        farm,
        tmp_path / "app",
        {
            "smoke_test": {"seconds": 3, "timeout_seconds": 6},
            "images": [
                {"name": "crash", "context": "crash"},
                {"name": "deaf", "context": "deaf"},
                {"name": "quiet", "context": "quiet"},
                {"name": "tool", "context": "tool", "smoke": {"start": False}},
            ],
        },
    )

    group = wait_finished(farm, group["id"])

    assert group["state"] == "failed"  # every image built, but the test failed
    assert {image["state"] for image in group["images"]} == {"succeeded"}
    smoke = group["smoke_test"]
    assert smoke["state"] == "failed"
    results = {image["name"]: image for image in smoke["images"]}
    assert set(results) == {"crash", "deaf", "quiet"}  # 'tool' was not started
    crash, deaf, quiet = results["crash"], results["deaf"], results["quiet"]
    assert (crash["stayed_up"], crash["exit_code"]) == (False, 3)
    assert crash["log_tail"] == ["starting", "boom"]  # stdout, then stderr
    assert (deaf["stayed_up"], deaf["port"], deaf["answered"]) == (True, 7000, False)
    assert "refused" in deaf["detail"]
    assert (quiet["stayed_up"], quiet["port"], quiet["answered"]) == (True, None, None)
    page = farm.http.get(group["page_url"], timeout=10)
    assert page.status_code == 200
    assert "exited with code 3" in page.text and "boom" in page.text
    assert leftovers(farm.engine_url, group["id"]) == ([], [])


def test_the_test_is_skipped_when_an_image_fails_to_build(farm, tiny_image, tmp_path):
    write(tmp_path / "app/ok", SERVES, tiny_image, port=8080)
    (tmp_path / "app/broken").mkdir()
    (tmp_path / "app/broken/Dockerfile").write_text(
        f"FROM {tiny_image}\nRUN echo {uuid.uuid4().hex} && exit 2\n"
    )
    group = submit_group(
        farm,
        tmp_path / "app",
        {
            "smoke_test": True,
            "images": [
                {"name": "ok", "context": "ok"},
                {"name": "broken", "context": "broken"},
            ],
        },
    )

    group = wait_finished(farm, group["id"])

    assert group["state"] == "failed"
    assert group["smoke_test"]["state"] == "skipped"
    assert group["smoke_test"]["reason"] == "Not built: broken."
    assert group["smoke_test"]["images"] == []


@pytest.mark.parametrize(
    "group, message",
    [
        (
            {"images": [{"name": "a", "smoke": {"port": 80}}]},
            "does not ask for 'smoke_test'",
        ),
        (
            {"smoke_test": {"seconds": 0}, "images": [{"name": "a"}]},
            "'seconds' must be between 1 and 300",
        ),
        (
            {"smoke_test": True, "images": [{"name": "a", "smoke": {"port": 70000}}]},
            "Image 'a': 'smoke.port' must be a TCP port number",
        ),
        (
            {
                "smoke_test": True,
                "images": [{"name": "a", "smoke": {"path": "/a b"}}],
            },
            "'smoke.path' must be an HTTP path",
        ),
        (
            {"smoke_test": True, "images": [{"name": "a", "smoke": False}]},
            "would start no image",
        ),
        (
            {"smoke_test": "yes", "images": [{"name": "a"}]},
            "'smoke_test' must be true, false or an object",
        ),
    ],
)
def test_bad_smoke_settings_are_refused_before_anything_is_recorded(
    farm, tmp_path, group, message
):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    group["images"][0]["tags"] = [f"refused/{uuid.uuid4().hex}:1"]
    response = post_group(farm, tmp_path, group)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert message in error["message"]
    tag = group["images"][0]["tags"][0]
    builds = farm.http.get(farm.api("/builds?limit=200"), timeout=10).json()["builds"]
    assert not any(tag in str(build) for build in builds)


def test_an_archive_without_an_images_context_is_refused(farm, tiny_image, tmp_path):
    write(tmp_path / "app/web", SERVES, tiny_image, port=8080)
    response = post_group(
        farm,
        tmp_path / "app",
        {
            "images": [
                {"name": "web", "context": "web"},
                {"name": "api", "context": "api"},
            ]
        },
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == "Image 'api': The archive has no folder 'api'."
    assert error["details"] == {"field": "context", "image": "api"}


def test_cancelling_a_finished_group_is_a_conflict(farm, tiny_image, tmp_path):
    write(tmp_path / "app/one", SERVES, tiny_image, port=8080)
    group = submit_group(
        farm, tmp_path / "app", {"images": [{"name": "one", "context": "one"}]}
    )
    wait_finished(farm, group["id"])
    response = farm.http.post(farm.api(f"/groups/{group['id']}/cancel"), timeout=10)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


def test_a_restarted_node_clears_only_its_own_farms_leftovers(
    farm, tiny_image, tmp_path
):
    write(tmp_path / "app/one", SERVES, tiny_image, port=8080)
    known = submit_group(
        farm, tmp_path / "app", {"images": [{"name": "one", "context": "one"}]}
    )["id"]
    settings = Settings(
        database_url=farm.stack.env()["FARM_DATABASE_URL"], worker_name="node-a"
    )
    client = docker.DockerClient(base_url=farm.engine_url)
    started = {}
    try:
        for group_id in (known, "not-this-farms"):
            started[group_id] = client.containers.run(
                tiny_image,
                ["sleep", "60"],
                detach=True,
                labels={LABEL: group_id, NODE_LABEL: "node-a"},
            ).id
        with EngineClient(farm.engine_url) as engine:
            ledger = BuildLedger.from_url(settings.database_url)
            SmokeTester(settings, ledger, engine).clear_leftovers()
        remaining = {c.id for c in client.containers.list(all=True)}
        assert started[known] not in remaining
        assert started["not-this-farms"] in remaining
    finally:
        for container in started.values():
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(container).remove(force=True)
        client.close()
