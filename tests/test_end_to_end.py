"""The main job end to end: HTTP request → Celery over Redis → worker → BuildKit →
registry, against real processes and services."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from farm.local.process import ServiceProcess, free_port, port_open, wait_until

pytestmark = pytest.mark.integration

TWO_STAGE = """\
FROM {base} AS build
WORKDIR /src
COPY message.txt .
RUN cat message.txt > /out.txt && echo built-by-farm >> /out.txt

FROM {base}
COPY --from=build /out.txt /out.txt
CMD ["cat", "/out.txt"]
"""

FAILING_RUN = """\
FROM {base} AS build
RUN echo preparing
RUN echo about to fail && exit 3

FROM {base}
COPY --from=build /etc /etc
"""


def write_project(folder: Path, dockerfile: str, message: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(dockerfile)
    (folder / "message.txt").write_text(message + "\n")
    return folder


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real git daemon on loopback serving a folder of bare repositories."""
    root = tmp_path_factory.mktemp("git")
    port = free_port()
    daemon = ServiceProcess(
        "git-daemon",
        [
            "git",
            "daemon",
            "--export-all",
            "--reuseaddr",
            "--listen=127.0.0.1",
            f"--port={port}",
            f"--base-path={root}",
            str(root),
        ],
        log_path=root / "daemon.log",
    )
    daemon.start()
    wait_until(
        lambda: port_open(port),
        timeout_seconds=10,
        what="git daemon",
        log_path=root / "daemon.log",
    )
    yield f"git://127.0.0.1:{port}", root
    daemon.stop()


def publish_repo(root: Path, name: str, work: Path) -> str:
    """Commit ``work`` and push it as bare repository ``name``; return the commit."""

    def git(*args: str, cwd: Path = work) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "source")
    git("tag", "v1")
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(work), str(root / name)], check=True
    )
    return git("rev-parse", "HEAD")


def registry_digest(registry: str, repository: str, tag: str) -> str:
    response = requests.get(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        timeout=10,
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"]


def blob_bytes(registry: str, repository: str, tag: str) -> int:
    """Bytes of the blobs (config and layers) an image's manifest names, as the
    registry serves each one."""
    manifest = requests.get(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        timeout=10,
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    ).json()
    total = 0
    for blob in [manifest["config"], *manifest["layers"]]:
        head = requests.head(
            f"http://{registry}/v2/{repository}/blobs/{blob['digest']}", timeout=10
        )
        head.raise_for_status()
        total += int(head.headers["Content-Length"])
    return total


def test_git_build_is_pushed_and_runs(farm, git_server, tiny_image, tmp_path):
    base_url, root = git_server
    message = f"hello {uuid.uuid4().hex}"
    commit = publish_repo(
        root,
        "app.git",
        write_project(tmp_path / "app", TWO_STAGE.format(base=tiny_image), message),
    )
    repository = f"e2e/app-{uuid.uuid4().hex[:8]}"

    response = farm.http.post(
        farm.api("/builds"),
        timeout=30,
        json={
            "git_url": f"{base_url}/app.git",
            "git_ref": "v1",
            "tags": [f"{repository}:1"],
        },
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["state"] == "queued" and response.headers["Location"].endswith(
        accepted["id"]
    )

    build = farm.wait_for(accepted["id"])
    assert build["state"] == "succeeded", build["error"]
    assert build["source"]["commit"] == commit
    assert build["worker"] == "node-a"
    reference = f"{farm.registry}/{repository}:1"
    assert build["image"]["references"] == [reference]
    assert build["image"]["digest"] == registry_digest(farm.registry, repository, "1")
    assert build["image"]["size_bytes"] > 0
    pushed = build["image"]["pushed_bytes"]
    assert pushed == blob_bytes(farm.registry, repository, "1")
    assert 0 < pushed < build["image"]["size_bytes"]  # layers are compressed
    steps = [s for s in build["steps"] if not s["internal"]]
    assert {s["stage"] for s in steps} >= {"build"}
    assert all(s["duration_seconds"] is not None for s in steps)
    built = [s for s in steps if not s["instruction"].startswith("FROM")]
    assert build["steps_total"] == len(built)

    # The image really is in the registry: drop it locally, pull it back, run it.
    api = docker.APIClient(base_url=farm.engine_url)
    api.remove_image(reference, force=True)
    api.pull(f"{farm.registry}/{repository}", tag="1")
    container = api.create_container(reference)
    try:
        api.start(container)
        api.wait(container, timeout=30)
        output = api.logs(container).decode()
    finally:
        api.remove_container(container, force=True)
        api.remove_image(reference, force=True)
    assert output.splitlines() == [message, "built-by-farm"]

    log = farm.http.get(farm.api(f"/builds/{build['id']}/log"), timeout=10).json()
    assert log["finished"] and any(
        "RUN cat message.txt" in line for line in log["lines"]
    )


def test_second_build_of_same_source_is_cached(farm, git_server, tiny_image, tmp_path):
    base_url, root = git_server
    publish_repo(
        root,
        "cached.git",
        write_project(
            tmp_path / "cached", TWO_STAGE.format(base=tiny_image), "cache me"
        ),
    )
    body = {
        "git_url": f"{base_url}/cached.git",
        "git_ref": "main",
        "tags": ["e2e/cached:latest"],
    }
    first = farm.wait_for(
        farm.http.post(farm.api("/builds"), json=body, timeout=30).json()["id"]
    )
    second = farm.wait_for(
        farm.http.post(farm.api("/builds"), json=body, timeout=30).json()["id"]
    )
    assert first["state"] == second["state"] == "succeeded"
    run_steps = [
        s for s in second["steps"] if (s["instruction"] or "").startswith("RUN")
    ]
    assert run_steps and all(s["cached"] for s in run_steps)
    assert second["steps_cached"] >= len(run_steps)
    assert second["image"]["digest"] == first["image"]["digest"]


def archive_of(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        tar.add(folder, arcname=".")
    return buffer.getvalue()


def post_group(farm, folder: Path, group: dict) -> requests.Response:
    """POST a group as multipart: the folder packed, the group as its JSON field."""
    return farm.http.post(
        farm.api("/groups"),
        timeout=30,
        data={"group": json.dumps(group)},
        files={"archive": ("group.tar.gz", archive_of(folder))},
    )


def test_uploaded_archive_builds_a_subfolder_context(farm, tiny_image, tmp_path):
    write_project(
        tmp_path / "src/services/echo",
        TWO_STAGE.format(base=tiny_image),
        "from an archive",
    )
    response = farm.http.post(
        farm.api("/builds"),
        timeout=30,
        data={
            "context": "services/echo",
            "tags": "e2e/upload:1",
            "build_arg": "UNUSED=1",
        },
        files={"archive": ("src.tar.gz", archive_of(tmp_path / "src"))},
    )
    assert response.status_code == 202, response.text
    build = farm.wait_for(response.json()["id"])
    assert build["state"] == "succeeded", build["error"]
    assert build["source"]["kind"] == "archive" and build["context"] == "services/echo"
    assert build["image"]["digest"] == registry_digest(farm.registry, "e2e/upload", "1")


def test_failing_run_step_names_stage_and_line(farm, tiny_image, tmp_path):
    write_project(tmp_path / "bad", FAILING_RUN.format(base=tiny_image), "x")
    response = farm.http.post(
        farm.api("/builds"),
        timeout=30,
        files={"archive": ("s.tar.gz", archive_of(tmp_path / "bad"))},
    )
    build = farm.wait_for(response.json()["id"])
    assert build["state"] == "failed"
    error = build["error"]
    assert error["stage"] == "build" and error["dockerfile_line"] == 3
    assert "exit code: 3" in error["message"]
    assert build["image"] is None
    log = farm.http.get(farm.api(f"/builds/{build['id']}/log"), timeout=10).json()
    assert any("about to fail" in line for line in log["lines"])


def test_dockerfile_syntax_error_fails_with_its_line(
    farm, git_server, tiny_image, tmp_path
):
    """From git, the Dockerfile is read once a node fetched it: the build fails."""
    base_url, root = git_server
    folder = write_project(
        tmp_path / "syntax", f"FROM {tiny_image}\nRUN true\nFLY away\n", "x"
    )
    name = f"syntax-{uuid.uuid4().hex[:8]}.git"
    publish_repo(root, name, folder)
    response = farm.http.post(
        farm.api("/builds"), timeout=30, json={"git_url": f"{base_url}/{name}"}
    )
    build = farm.wait_for(response.json()["id"])
    assert build["state"] == "failed"
    assert build["error"]["dockerfile_line"] == 3
    assert "FLY" in build["error"]["message"].upper()


@pytest.mark.parametrize(
    ("dockerfile", "fields", "field", "words"),
    [
        ("FROM {base}\nRUN true\nFLY away\n", {}, "dockerfile", ["line 3", "FLY"]),
        ("FROM {base} AS build\n", {"target": "tset"}, "target", ["tset", "build"]),
        (
            "FROM {base} AS build\nFROM {base}\nCOPY --from=biuld /a /a\n",
            {},
            "dockerfile",
            ["line 3", "biuld", "build"],
        ),
    ],
    ids=["does-not-parse", "unknown-target", "unknown-copy-from"],
)
def test_an_uploaded_dockerfile_that_cannot_build_is_refused_before_recording(
    farm, tiny_image, tmp_path, dockerfile, fields, field, words
):
    folder = write_project(tmp_path / "p", dockerfile.format(base=tiny_image), "x")
    response = farm.http.post(
        farm.api("/builds"),
        timeout=30,
        data=fields,
        files={"archive": ("s.tar.gz", archive_of(folder))},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["details"]["field"] == field
    for word in words:
        assert word in error["message"]


def test_archive_without_the_dockerfile_is_refused_before_recording(farm, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/readme").write_text("no dockerfile here")
    response = farm.http.post(
        farm.api("/builds"),
        timeout=30,
        files={"archive": ("s.tar.gz", archive_of(tmp_path / "empty"))},
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "dockerfile"


def test_missing_dockerfile_in_git_fails_the_build_clearly(farm, git_server, tmp_path):
    base_url, root = git_server
    folder = tmp_path / "nodockerfile"
    folder.mkdir()
    (folder / "readme").write_text("no dockerfile here")
    publish_repo(root, "nodockerfile.git", folder)
    response = farm.http.post(
        farm.api("/builds"),
        timeout=30,
        json={"git_url": f"{base_url}/nodockerfile.git", "git_ref": "main"},
    )
    build = farm.wait_for(response.json()["id"])
    assert build["state"] == "failed"
    assert build["error"]["code"] == "source_failed"
    assert "Dockerfile" in build["error"]["message"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"git_url": "ext::sh -c id", "git_ref": "main"}, "git_url"),
        (
            {"git_url": "http://127.0.0.1:9/a.git", "git_ref": "--upload-pack=x"},
            "git_ref",
        ),
        ({"git_url": "http://127.0.0.1:9/a.git", "context": "../.."}, "context"),
        ({"git_url": "http://127.0.0.1:9/a.git", "tags": ["UPPER"]}, "tags"),
    ],
)
def test_bad_requests_get_json_errors_and_record_nothing(farm, body, field):
    before = farm.http.get(farm.api("/builds?limit=200"), timeout=10).json()["builds"]
    response = farm.http.post(farm.api("/builds"), json=body, timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["details"]["field"] == field
    after = farm.http.get(farm.api("/builds?limit=200"), timeout=10).json()["builds"]
    assert len(after) == len(before)


def test_not_an_archive_is_refused_before_recording(farm):
    response = farm.http.post(
        farm.api("/builds"),
        timeout=10,
        files={"archive": ("x.tar.gz", b"plain text" * 50)},
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "archive"


def test_unknown_build_and_route_answer_json(farm):
    missing = farm.http.get(farm.api("/builds/nope"), timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    route = farm.http.get(farm.api("/nothing-here"), timeout=10)
    assert route.status_code == 404 and "error" in route.json()
    wrong = farm.http.post(
        farm.api("/builds"),
        data="{not json",
        timeout=10,
        headers={"Content-Type": "application/json"},
    )
    assert (
        wrong.status_code == 400 and wrong.json()["error"]["code"] == "invalid_request"
    )


def test_cancel_stops_running_build(farm, tiny_image, tmp_path):
    folder = tmp_path / "slow"
    folder.mkdir()
    (folder / "Dockerfile").write_text(
        f"FROM {tiny_image}\nRUN echo started-{uuid.uuid4().hex} && sleep 300\n"
    )
    build_id = farm.http.post(
        farm.api("/builds"),
        timeout=30,
        files={"archive": ("s.tar.gz", archive_of(folder))},
    ).json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        log = farm.http.get(farm.api(f"/builds/{build_id}/log"), timeout=10).json()
        if any("started-" in line for line in log["lines"]):
            break
        time.sleep(0.5)
    cancelled_at = time.monotonic()
    response = farm.http.post(farm.api(f"/builds/{build_id}/cancel"), timeout=10)
    assert response.status_code == 202
    build = farm.wait_for(build_id, timeout_seconds=60)
    assert build["state"] == "cancelled"
    assert time.monotonic() - cancelled_at < 30
    again = farm.http.post(farm.api(f"/builds/{build_id}/cancel"), timeout=10)
    assert again.status_code == 409


def test_list_filters_by_state_newest_first(farm):
    builds = farm.http.get(farm.api("/builds?state=succeeded"), timeout=10).json()
    created = [b["created_at"] for b in builds["builds"]]
    assert created == sorted(created, reverse=True)
    assert all(b["state"] == "succeeded" for b in builds["builds"])
    bad = farm.http.get(farm.api("/builds?state=bogus"), timeout=10)
    assert bad.status_code == 400


def test_dockerfile_outside_the_context_is_used(farm, tiny_image, tmp_path):
    write_project(tmp_path / "src/app", "unused", "outside")
    (tmp_path / "src/app/Dockerfile").unlink()
    (tmp_path / "src/docker").mkdir()
    (tmp_path / "src/docker/app.Dockerfile").write_text(
        f"FROM {tiny_image}\nCOPY message.txt /m\n"
    )
    response = farm.http.post(
        farm.api("/builds"),
        timeout=30,
        data={"context": "app", "dockerfile": "../docker/app.Dockerfile"},
        files={"archive": ("s.tar.gz", archive_of(tmp_path / "src"))},
    )
    assert response.status_code == 202, response.text
    build = farm.wait_for(response.json()["id"])
    assert build["state"] == "succeeded", build["error"]


def test_short_commit_id_is_resolved(farm, git_server, tiny_image, tmp_path):
    base_url, root = git_server
    commit = publish_repo(
        root,
        "short.git",
        write_project(
            tmp_path / "short", TWO_STAGE.format(base=tiny_image), "short ref"
        ),
    )
    response = farm.http.post(
        farm.api("/builds"),
        timeout=30,
        json={"git_url": f"{base_url}/short.git", "git_ref": commit[:8]},
    )
    build = farm.wait_for(response.json()["id"])
    assert build["state"] == "succeeded", build["error"]
    assert build["source"]["commit"] == commit


def test_unknown_field_is_refused_by_name(farm):
    response = farm.http.post(
        farm.api("/builds"),
        timeout=10,
        json={"git_url": "http://127.0.0.1:9/a.git", "dockerfiel": "Dockerfile"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "dockerfiel"


def test_health_reports_database_and_redis(farm):
    response = requests.get(f"{farm.web_url}/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


def test_unknown_state_filter_on_the_page_is_explained(farm):
    response = farm.http.get(f"{farm.web_url}/?state=bogus", timeout=10)
    assert response.status_code == 400 and "no build state" in response.text


def test_identical_requests_join_one_build_and_reuse_is_on_request(
    farm, git_server, tiny_image, tmp_path
):
    base_url, root = git_server
    folder = tmp_path / "join"
    folder.mkdir()
    (folder / "Dockerfile").write_text(
        f"FROM {tiny_image}\nRUN echo {uuid.uuid4().hex} && sleep 3\n"
    )
    publish_repo(root, "join.git", folder)
    body = {"git_url": f"{base_url}/join.git", "git_ref": "main"}
    first = farm.http.post(farm.api("/builds"), json=body, timeout=30)
    second = farm.http.post(farm.api("/builds"), json=body, timeout=30)
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json()["submission"] == "joined"
    assert second.json()["id"] == first.json()["id"]
    assert farm.wait_for(first.json()["id"])["state"] == "succeeded"

    reused = farm.http.post(
        farm.api("/builds"), json={**body, "reuse": True}, timeout=30
    )
    assert reused.status_code == 200 and reused.json()["submission"] == "reused"
    assert reused.json()["id"] == first.json()["id"]
    rebuilt = farm.http.post(farm.api("/builds"), json=body, timeout=30)
    assert rebuilt.status_code == 202 and rebuilt.json()["id"] != first.json()["id"]
    farm.wait_for(rebuilt.json()["id"])


def test_missing_branch_is_refused_before_recording(farm, git_server, tmp_path):
    base_url, root = git_server
    folder = tmp_path / "branches"
    folder.mkdir()
    (folder / "Dockerfile").write_text("FROM scratch\n")
    publish_repo(root, "branches.git", folder)
    response = farm.http.post(
        farm.api("/builds"),
        timeout=30,
        json={"git_url": f"{base_url}/branches.git", "git_ref": "no-such-branch"},
    )
    assert response.status_code == 422
    assert "no branch or tag 'no-such-branch'" in response.json()["error"]["message"]


def test_a_build_for_a_queue_no_node_serves_says_why_and_where_it_waits(
    farm, tiny_image, tmp_path
):
    def submit(priority: str, name: str) -> str:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "Dockerfile").write_text(f"FROM {tiny_image}\nRUN echo {name}\n")
        response = farm.http.post(
            farm.api("/builds"),
            timeout=30,
            data={"queue": "idle", "priority": priority},
            files={"archive": ("s.tar.gz", archive_of(folder))},
        )
        assert response.status_code == 202, response.text
        return response.json()["id"]

    # A build cancelled while queued leaves its message in Redis: not counted.
    stale = submit("urgent", "stale")
    farm.http.post(farm.api(f"/builds/{stale}/cancel"), timeout=10)
    normal, urgent = submit("normal", "normal"), submit("urgent", "urgent")
    waiting = {
        build_id: farm.http.get(farm.api(f"/builds/{build_id}"), timeout=10).json()
        for build_id in (normal, urgent)
    }
    assert waiting[urgent]["waiting"]["position"] == 0
    assert waiting[normal]["waiting"]["position"] == 1
    assert "No live node serves queue 'idle'" in waiting[normal]["waiting"]["reason"]
    assert waiting[urgent]["priority"] == "urgent"
    for build_id in (normal, urgent):
        cancelled = farm.http.post(farm.api(f"/builds/{build_id}/cancel"), timeout=10)
        assert cancelled.json()["state"] == "cancelled"


def test_unknown_queue_is_refused_naming_the_served_ones(farm):
    response = farm.http.post(
        farm.api("/builds"),
        timeout=10,
        json={"git_url": "http://127.0.0.1:9/a.git", "queue": "gpu"},
    )
    assert response.status_code == 400
    assert "this farm serves builds, idle" in response.json()["error"]["message"]


def test_nodes_list_the_live_worker_and_its_queues(farm):
    nodes = farm.http.get(farm.api("/nodes"), timeout=10).json()["nodes"]
    node = next(n for n in nodes if n["name"] == "node-a")
    assert node["queues"] == ["builds"] and node["slots"] == 2


def test_a_group_builds_several_images_from_one_archive(farm, tiny_image, tmp_path):
    for name in ("front", "api"):
        write_project(
            tmp_path / "app" / name,
            TWO_STAGE.format(base=tiny_image),
            f"{name}-{uuid.uuid4().hex}",
        )
    group = {
        "name": "shop",
        "images": [
            {"name": "front", "context": "front", "tags": ["shop/front:1"]},
            {"name": "api", "context": "api", "tags": ["shop/api:1"]},
        ],
    }
    response = post_group(farm, tmp_path / "app", group)
    assert response.status_code == 202, response.text
    group_url = farm.api(f"/groups/{response.json()['id']}")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        described = farm.http.get(group_url, timeout=10).json()
        if described["state"] not in {"queued", "running"}:
            break
        time.sleep(0.5)
    assert described["state"] == "succeeded"
    assert [image["name"] for image in described["images"]] == ["front", "api"]
    for image in described["images"]:
        assert image["image"]["digest"] == registry_digest(
            farm.registry, f"shop/{image['name']}", "1"
        )


@pytest.mark.parametrize(
    "bad, field",
    [({"context": "../.."}, "context"), ({"context": "x", "target": "nope"}, "target")],
)
def test_a_group_with_one_bad_image_records_nothing(farm, tmp_path, bad, field):
    before = len(
        farm.http.get(farm.api("/builds?limit=200"), timeout=10).json()["builds"]
    )
    (tmp_path / "x").mkdir()
    (tmp_path / "x/Dockerfile").write_text("FROM scratch AS only\n")
    group = {"images": [{"name": "ok", "context": "x"}, {"name": "bad", **bad}]}
    response = post_group(farm, tmp_path, group)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["details"]["field"] == field
    assert error["message"].startswith("Image 'bad'")
    after = len(
        farm.http.get(farm.api("/builds?limit=200"), timeout=10).json()["builds"]
    )
    assert after == before


def test_concurrent_builds_pushing_one_tag_each_record_their_own_image(
    farm, tiny_image, tmp_path
):
    ids = []
    for word in ("first", "second"):
        folder = write_project(
            tmp_path / word,
            TWO_STAGE.format(base=tiny_image),
            f"{word}-{uuid.uuid4().hex}",
        )
        response = farm.http.post(
            farm.api("/builds"),
            timeout=30,
            data={"tags": "race/same:1"},
            files={"archive": ("s.tar.gz", archive_of(folder))},
        )
        ids.append(response.json()["id"])
    builds = [farm.wait_for(build_id) for build_id in ids]
    assert [b["state"] for b in builds] == ["succeeded", "succeeded"]
    assert builds[0]["image"]["id"] != builds[1]["image"]["id"]
    assert builds[0]["image"]["digest"] != builds[1]["image"]["digest"]


def test_cancelling_a_group_cancels_its_waiting_images(farm, tiny_image, tmp_path):
    for name in ("one", "two"):
        (tmp_path / "g" / name).mkdir(parents=True)
        (tmp_path / "g" / name / "Dockerfile").write_text(
            f"FROM {tiny_image}\nRUN echo {name}-{uuid.uuid4().hex}\n"
        )
    group = {
        "images": [{"name": n, "context": n, "queue": "idle"} for n in ("one", "two")]
    }
    response = post_group(farm, tmp_path / "g", group)
    assert response.json()["state"] == "queued"
    cancelled = farm.http.post(
        farm.api(f"/groups/{response.json()['id']}/cancel"), timeout=10
    ).json()
    assert cancelled["state"] == "cancelled"
    assert {image["state"] for image in cancelled["images"]} == {"cancelled"}


@pytest.mark.parametrize(
    "url", ["https://10.1.2.3/team/app.git", "git@169.254.169.254:x.git"]
)
def test_git_hosts_outside_the_allow_list_are_refused(farm, url):
    response = farm.http.post(farm.api("/builds"), json={"git_url": url}, timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["details"]["field"] == "git_url"
    assert "only reaches the hosts 127.0.0.1" in error["message"]


def test_a_builder_stage_size_is_recorded_beside_the_image(farm, tiny_image, tmp_path):
    folder = write_project(
        tmp_path / "sized", TWO_STAGE.format(base=tiny_image), uuid.uuid4().hex
    )
    response = farm.http.post(
        farm.api("/builds"),
        timeout=30,
        files={"archive": ("s.tar.gz", archive_of(folder))},
    )
    build = farm.wait_for(response.json()["id"])
    deadline = time.monotonic() + 60
    while build["cache_state"] == "exporting" and time.monotonic() < deadline:
        time.sleep(0.2)
        build = farm.http.get(farm.api(f"/builds/{build['id']}"), timeout=10).json()
    assert build["cache_state"] == "shared"
    assert set(build["stage_sizes"]) == {"build"}
    assert build["stage_sizes"]["build"] > 1_000_000  # busybox and the message
