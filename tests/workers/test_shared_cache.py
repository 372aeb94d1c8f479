"""Two nodes, each with its own engine, sharing one layer cache through the registry."""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from collections.abc import Iterator

import docker
import pytest

from farm.local.engine import EngineLayout, LocalEngine
from farm.local.stack import Node
from tests.conftest import running

pytestmark = pytest.mark.integration

PROJECT = """\
FROM {base} AS deps
RUN echo {token} > /deps.txt && sleep 1
RUN cat /deps.txt > /deps-copy.txt

FROM deps AS build
COPY lib.txt /src/lib.txt
RUN cat /src/lib.txt /deps-copy.txt > /built.txt && sleep 1

FROM {base}
COPY --from=build /built.txt /built.txt
COPY app.txt /app.txt
CMD ["cat", "/built.txt", "/app.txt"]
"""


@pytest.fixture(scope="module")
def second_engine(registry, engine_url, tiny_image) -> Iterator[str]:
    """Engine test1 with no build cache, its base image pulled from the registry."""
    engine = LocalEngine(EngineLayout("test1"))
    engine.start()
    first = docker.APIClient(base_url=engine_url)
    second = docker.APIClient(base_url=engine.url)
    shared = f"{registry}/{tiny_image}"
    first.tag(tiny_image, shared)
    for _ in first.push(shared, stream=True, decode=True):
        pass
    second.prune_builds(all=True)
    second.pull(shared)
    second.tag(shared, tiny_image)
    yield engine.url
    second.close()
    first.close()
    engine.stop()


@pytest.fixture(scope="module")
def node_b(services, second_engine):
    """A second node: its own worker on engine test1, fed by its own web and queue."""
    yield from running(services.farm("node-b", nodes=(Node("node-b", "test1"),)))


def project_archive(base: str, token: str, app: str) -> bytes:
    files = {
        "Dockerfile": PROJECT.format(base=base, token=token),
        "lib.txt": "lib\n",
        "app.txt": app,
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build_on(web_url: str, archive: bytes, farm) -> dict:
    response = farm.http.post(
        f"{web_url}/api/v1/builds",
        timeout=30,
        data={"tags": "shared/cache-test:1"},
        files={"archive": ("p.tar.gz", archive)},
    )
    assert response.status_code == 202, response.text
    build = farm.wait_for(response.json()["id"])
    assert build["state"] == "succeeded", build["error"]
    return wait_until_cache_shared(web_url, build, farm.http)


def wait_until_cache_shared(web_url: str, build: dict, http) -> dict:
    """Sharing the cache follows the reported success; wait for it to finish."""
    deadline = time.monotonic() + 120
    while build["cache_state"] == "exporting" and time.monotonic() < deadline:
        time.sleep(0.2)
        build = http.get(f"{web_url}/api/v1/builds/{build['id']}", timeout=10).json()
    assert build["cache_state"] in ("shared", None), build["cache_state"]
    return build


def test_a_node_that_never_saw_the_project_builds_it_from_cache(
    farm, node_b, tiny_image
):
    token = uuid.uuid4().hex
    archive = project_archive(tiny_image, token, "v1\n")
    on_a = build_on(farm.web_url, archive, farm)
    assert on_a["worker"] == "node-a" and on_a["steps_cached"] == 0

    on_b = build_on(node_b.web_url, archive, farm)
    assert on_b["worker"] == "node-b"
    assert on_b["steps_total"] == on_a["steps_total"] == 6
    assert on_b["steps_cached"] == on_b["steps_total"]
    assert [(s["stage"], s["cached"], s["steps"]) for s in on_b["stages"]] == [
        ("deps", 2, 2),
        ("build", 2, 2),
        ("stage-2", 2, 2),
    ]
    assert on_b["image"]["digest"] == on_a["image"]["digest"]

    changed = build_on(node_b.web_url, project_archive(tiny_image, token, "v2\n"), farm)
    rerun = [
        s["instruction"]
        for s in changed["steps"]
        if s["stage"] is not None
        and not s["cached"]
        and not s["instruction"].startswith("FROM")
    ]
    assert rerun == ["COPY app.txt /app.txt"]
