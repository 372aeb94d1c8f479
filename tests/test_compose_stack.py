"""deploy/compose/compose.yaml brought up for real: its images (the farm's own and
Debian stand-ins for the official ones, deploy/compose/offline) built by the test
farm, the stack started with docker-compose on the test engine, the base images
seeded into its registry, then the examples submitted through its API as a group:
they build on both of its nodes, each a worker with its own Docker-in-Docker
engine, pass their smoke test, and its Prometheus scrapes the farm."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
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


def host_name_servers() -> str:
    """This machine's name servers, for the stack's builds (FARM_ENGINE_DNS)."""
    return " ".join(
        line.split()[1]
        for line in Path("/etc/resolv.conf").read_text().splitlines()
        if line.startswith("nameserver") and not line.split()[1].startswith("127.")
    )


@pytest.fixture(scope="module")
def stack(farm, base_images, engine_url, tmp_path_factory) -> Iterator[dict]:
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
        "FARM_ENGINE_DNS": host_name_servers(),
        # The web app lets builds name private addresses, so that only the
        # engines' firewall stands between builds and the stack's services.
        "FARM_PRIVATE_DESTINATIONS": "true",
    }
    log = tmp_path_factory.mktemp("compose") / "compose.log"
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
            "project": env["COMPOSE_PROJECT_NAME"],
            "engine_url": engine_url,
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


def service_addresses(stack: dict) -> dict[str, str]:
    """Each of the stack's services and its address on the stack's network."""
    api = docker.APIClient(base_url=stack["engine_url"], timeout=60)
    try:
        found = api.containers(
            filters={"label": f"com.docker.compose.project={stack['project']}"}
        )
    finally:
        api.close()
    return {
        c["Labels"]["com.docker.compose.service"]: next(
            iter(c["NetworkSettings"]["Networks"].values())
        )["IPAddress"]
        for c in found
    }


def build_dockerfile(stack: dict, dockerfile: str) -> tuple[dict, list[str]]:
    """Upload a context of one Dockerfile to the stack; its final record and log."""
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {stack['token']}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile.encode())
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
    answer = http.post(
        f"{stack['web']}/api/v1/builds",
        files={"archive": ("context.tar.gz", buffer.getvalue())},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    url = f"{stack['web']}/api/v1/builds/{answer.json()['id']}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        build = http.get(url, timeout=10).json()
        if build["state"] in {"succeeded", "failed", "cancelled"}:
            return build, http.get(f"{url}/log", timeout=10).json()["lines"]
        time.sleep(1)
    pytest.fail(f"build {url} did not end")


def test_builds_in_the_stack_reach_none_of_its_services(stack):
    """With the web app's own check of private addresses switched off, the engines'
    firewall alone keeps RUN steps and the engine's fetches off Redis, PostgreSQL,
    the web app and the registry, while builds still reach package registries (the
    examples above installed npm and pip packages)."""
    addresses = service_addresses(stack)
    targets = {
        "redis": (addresses["redis"], 6379),
        "postgres": (addresses["postgres"], 5432),
        "web": (addresses["web"], 8000),
        "registry": (addresses["registry"], 5000),
    }
    probes = "".join(
        f"RUN timeout 5 bash -c 'exec 3<>/dev/tcp/{ip}/{port}' "
        f"&& echo 'probe {name} reached' || echo 'probe {name} blocked'\n"
        for name, (ip, port) in targets.items()
    )
    marker = uuid.uuid4().hex
    build, log = build_dockerfile(
        stack, f"FROM farm-base/debian:bookworm\nRUN echo {marker}\n{probes}"
    )
    assert build["state"] == "succeeded", build["error"]
    seen = {
        line.split("probe ")[1].split()[0]: line.split()[-1]
        for line in log
        if "probe " in line and line.split()[-1] in {"reached", "blocked"}
    }
    assert seen == dict.fromkeys(targets, "blocked"), log[-20:]

    # What the engine itself fetches: an ADD URL at the web app.
    web_ip = addresses["web"]
    build, log = build_dockerfile(
        stack,
        f"FROM farm-base/debian:bookworm\n"
        f"ADD http://{web_ip}:8000/healthz /x-{marker}\n",
    )
    assert build["state"] == "failed"
    said = json.dumps(build["error"]) + "\n".join(log)
    assert "connection refused" in said, said[-1500:]

    # The examples' package installs looked names up: every lookup went to
    # FARM_ENGINE_DNS, whichever resolver the engine gave its build containers.
    redirected = 0
    for engine in ("engine-1", "engine-2"):
        table = compose(
            stack["env"], "exec", "-T", engine, "iptables", "-t", "nat", "-L",
            "PREROUTING", "-n", "-v", "-x",
        )  # fmt: skip
        redirected += sum(
            int(line.split()[0])
            for line in table.splitlines()
            if "DNAT" in line and "dpt:53" in line
        )
    assert redirected > 0


def only_node_up(stack: dict, name: str) -> None:
    """Stop the other node's worker, start this one's; wait till it alone is up."""
    other = {"node-1": "worker-2", "node-2": "worker-1"}[name]
    compose(stack["env"], "stop", other)
    compose(stack["env"], "start", f"worker-{name[-1]}")
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {stack['token']}"

    def alone() -> bool:
        nodes = http.get(f"{stack['web']}/api/v1/nodes", timeout=10).json()["nodes"]
        return [n["name"] for n in nodes if n["up"] and n["engine"] == "ok"] == [name]

    wait_until(
        alone, timeout_seconds=120, what=f"{name} alone", log_path=Path("/dev/null")
    )


def test_a_node_builds_from_the_cache_another_node_exported(stack):
    """The stack's registry speaks plain HTTP off loopback: each node's builder
    must still import the stage cache the other node pushed there."""
    marker = uuid.uuid4().hex
    dockerfile = (
        "FROM farm-base/debian:bookworm AS builder\n"
        f"RUN echo {marker} > /built && sleep 1\n"
        "FROM farm-base/debian:bookworm\n"
        "COPY --from=builder /built /built\n"
        f"RUN cat /built && echo {marker}-runtime\n"
    )
    try:
        only_node_up(stack, "node-2")
        first, _ = build_dockerfile(stack, dockerfile)
        assert (first["state"], first["worker"]) == ("succeeded", "node-2"), first
        assert first["steps_cached"] == 0
        only_node_up(stack, "node-1")
        second, log = build_dockerfile(stack, dockerfile)
    finally:
        compose(stack["env"], "start", "worker-1", "worker-2")
    assert (second["state"], second["worker"]) == ("succeeded", "node-1"), (
        second["error"],
        log[-15:],
    )
    assert second["steps_cached"] == second["steps_total"] > 0, log[-15:]
