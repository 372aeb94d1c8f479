"""deploy/compose/compose.yaml brought up for real: its images (the farm's own and
Debian stand-ins for the official ones, deploy/compose/offline) built by the test
farm, the stack started with docker-compose on the test engine, the base images
seeded into its registry, then the examples submitted through its API as a group:
they build on both of its nodes, each a worker with its own Docker-in-Docker
engine, pass their smoke test, and its Prometheus scrapes the farm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from farm.client import pack_contexts
from farm.local.process import free_port, port_open, wait_until
from tests.conftest import ARTIFACTS
from workers.baseimages import push_base_images

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "compose"
ALL_CAPABILITIES = (1 << 41) - 1  # CAP_CHECKPOINT_RESTORE (40) is the last one
OFFLINE = "deploy/compose/offline"
# What the stack runs, by the variable compose.yaml reads its image from.
IMAGES = {
    "FARM_IMAGE": (".", "Dockerfile"),
    "FARM_REDIS_IMAGE": (OFFLINE, "redis.Dockerfile"),
    "FARM_POSTGRES_IMAGE": (OFFLINE, "postgres.Dockerfile"),
    "FARM_REGISTRY_IMAGE": (OFFLINE, "registry.Dockerfile"),
    "FARM_PROMETHEUS_IMAGE": (OFFLINE, "prometheus.Dockerfile"),
    "FARM_DIND_IMAGE": (OFFLINE, "dind.Dockerfile"),
}


def build_images(farm, engine_url: str) -> dict[str, str]:
    """Build every image of the stack on the test farm, as one group; pull them
    into the test engine; return each variable's image reference."""
    images = []
    for variable, (context, dockerfile) in IMAGES.items():
        name = variable.removeprefix("FARM_").removesuffix("IMAGE").strip("_").lower()
        name = name or "farm"
        images.append(
            {
                "name": name,
                "context": context,
                "dockerfile": dockerfile,
                "build_args": {"BASE_IMAGE": "farm-base/debian:bookworm"},
                "tags": [f"compose/{name}:test"],
            }
        )
    archive = pack_contexts(ROOT, list(IMAGES.values()))
    answer = farm.http.post(
        farm.api("/groups"),
        data={"group": json.dumps({"name": "compose-images", "images": images})},
        files={"archive": ("farm.tar.gz", archive)},
        timeout=120,
    )
    assert answer.status_code == 202, answer.text
    group = answer.json()
    references = {}
    api = docker.APIClient(base_url=engine_url, timeout=600)
    try:
        for variable, member in zip(IMAGES, group["images"], strict=True):
            build = farm.wait_for(member["id"], timeout_seconds=1200)
            assert build["state"] == "succeeded", (member["name"], build["error"])
            reference = build["image"]["references"][0]
            api.pull(reference)
            references[variable] = reference
    finally:
        api.close()
    return references


def compose_files() -> list[str]:
    """compose.yaml, and where this machine withholds a capability from every
    process (so no privileged container starts), the limited-caps override."""
    bounding = next(
        int(line.split()[1], 16)
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("CapBnd:")
    )
    files = [COMPOSE / "compose.yaml"]
    if bounding & ALL_CAPABILITIES != ALL_CAPABILITIES:
        files.append(COMPOSE / "compose.limited-caps.yaml")
    return [arg for path in files for arg in ("-f", str(path))]


def compose(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    done = subprocess.run(
        ["docker-compose", *compose_files(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def stack(farm, base_images, engine_url, tmp_path) -> Iterator[dict]:
    images = build_images(farm, engine_url)
    ports = {
        "FARM_WEB_PORT": free_port(),
        "FARM_REGISTRY_PORT": free_port(),
        "FARM_PROMETHEUS_PORT": free_port(),
    }
    env = {
        **os.environ,
        **images,
        **{key: str(port) for key, port in ports.items()},
        "DOCKER_HOST": engine_url,
        "COMPOSE_PROJECT_NAME": f"farmtest{uuid.uuid4().hex[:6]}",
        "FARM_SECRET_KEY": uuid.uuid4().hex,
    }
    log = tmp_path / "compose.log"
    started = time.monotonic()
    try:
        # The registry first: the nodes pull the base images seeded there as
        # they start.
        compose(env, "up", "-d", "registry")
        registry = f"127.0.0.1:{ports['FARM_REGISTRY_PORT']}"
        wait_until(
            lambda: requests.get(f"http://{registry}/v2/", timeout=2).ok,
            timeout_seconds=60,
            what="the stack's registry",
            log_path=log,
        )
        api = docker.APIClient(base_url=engine_url, timeout=1200)
        push_base_images(api, registry)
        api.close()
        compose(env, "up", "-d")
        web = f"http://127.0.0.1:{ports['FARM_WEB_PORT']}"
        wait_until(
            lambda: (
                port_open(ports["FARM_WEB_PORT"])
                and requests.get(f"{web}/healthz", timeout=5).ok
            ),
            timeout_seconds=180,
            what="the stack's web app",
            log_path=log,
        )
        said = compose(
            env,
            "exec",
            "-T",
            "web",
            "farm",
            "token",
            "create",
            "--name",
            "test",
            "--scope",
            "admin",
        )
        token = said.split()[0]
        yield {
            "env": env,
            "web": web,
            "token": token,
            "prometheus": f"http://127.0.0.1:{ports['FARM_PROMETHEUS_PORT']}",
            "started": started,
        }
    finally:
        done = subprocess.run(
            ["docker-compose", *compose_files(), "logs", "--no-color"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        (ARTIFACTS / "compose-stack.log").write_text(done.stdout + done.stderr)
        subprocess.run(
            ["docker-compose", *compose_files(), "down", "-v", "--timeout", "30"],
            env=env,
            capture_output=True,
            timeout=600,
        )


def test_the_compose_stack_builds_the_examples_on_two_nodes(stack):
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {stack['token']}"

    def nodes_up() -> bool:
        nodes = http.get(f"{stack['web']}/api/v1/nodes", timeout=10).json()["nodes"]
        return sum(1 for n in nodes if n["up"] and n["engine"] == "ok") == 2

    wait_until(
        nodes_up, timeout_seconds=300, what="two nodes", log_path=Path("/dev/null")
    )
    up_seconds = time.monotonic() - stack["started"]

    examples = ROOT / "examples"
    building = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "farm", "group", "submit", str(examples)]
        + ["--file", str(examples / "farm-group.json"), "--wait", "--json"]
        + ["--server", stack["web"]],
        capture_output=True,
        text=True,
        timeout=2400,
        env={**os.environ, "FARM_TOKEN": stack["token"]},
    )
    build_seconds = time.monotonic() - building
    try:
        group = json.loads(done.stdout)
    except ValueError:
        pytest.fail(done.stdout + done.stderr)
    if done.returncode != 0 or group["state"] != "succeeded":
        tails = {
            image["name"]: http.get(
                f"{stack['web']}/api/v1/builds/{image['id']}/log", timeout=10
            ).json()["lines"][-15:]
            for image in group["images"]
            if image["state"] != "succeeded"
        }
        pytest.fail(json.dumps(tails, indent=1))
    assert group["smoke_test"]["state"] == "passed", group["smoke_test"]
    workers = {image["worker"] for image in group["images"]}
    assert workers == {"node-1", "node-2"}, workers

    scraped = requests.get(
        f"{stack['prometheus']}/api/v1/query",
        params={"query": "farm_store_up"},
        timeout=10,
    ).json()["data"]["result"]
    (ARTIFACTS / "compose-stack.json").write_text(
        json.dumps(
            {
                "seconds_to_two_nodes_up": round(up_seconds, 1),
                "seconds_to_build_examples": round(build_seconds, 1),
                "workers": sorted(workers),
                "prometheus_series_farm_store_up": len(scraped),
            },
            indent=2,
        )
    )
    assert {r["metric"]["store"] for r in scraped} == {"database", "redis"}
