"""Shared fixtures: real services started once per test session."""

from __future__ import annotations

import functools
import io
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from farm.local.engine import EngineLayout, LocalEngine
from farm.local.postgres import LocalPostgres
from farm.local.process import free_port
from farm.local.redis import LocalRedis
from farm.local.registry import LocalRegistry
from farm.local.stack import LocalFarm, Node
from workers.baseimages import (
    BaseImageSettings,
    detect_debian_mirror,
    ensure_base_images,
)
from workers.baseimages.certs import local_ca_files

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

TINY_IMAGE = "farm-test/busybox:latest"
CALLBACK_SECRET = "callback-test-secret"
# Bumped when the applets change, so an engine kept between runs gets them.
TINY_IMAGE_VERSION = "2"


@pytest.fixture(scope="session")
def engine_url() -> Iterator[str]:
    """A Docker engine of our own for the whole session (left running if it was)."""
    engine = LocalEngine(EngineLayout(os.environ.get("FARM_TEST_ENGINE", "test0")))
    engine.start()
    yield engine.url
    engine.stop()


def _busybox_rootfs_tar() -> bytes:
    """A root filesystem holding only a static busybox and its applet links."""
    buf = io.BytesIO()
    busybox = Path("/bin/busybox").read_bytes()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for folder in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(busybox), 0o755
        tar.addfile(info, io.BytesIO(busybox))
        for applet in (
            "sh",
            "echo",
            "cat",
            "ls",
            "sleep",
            "true",
            "false",
            "mkdir",
            "cp",
            "wc",
            "httpd",
            "wget",
            "env",
            "test",
            "grep",
            "nc",
            "printf",
            "head",
        ):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_image(engine_url: str) -> str:
    """A tiny base image in the test engine, made offline from Debian's busybox."""
    api = docker.APIClient(base_url=engine_url)
    try:
        labels = api.inspect_image(TINY_IMAGE)["Config"].get("Labels") or {}
    except docker.errors.ImageNotFound:
        labels = {}
    try:
        if labels.get("farm.test.tiny") != TINY_IMAGE_VERSION:
            api.import_image_from_data(
                _busybox_rootfs_tar(),
                repository=TINY_IMAGE,
                changes=[f"LABEL farm.test.tiny={TINY_IMAGE_VERSION}"],
            )
    finally:
        api.close()
    return TINY_IMAGE


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def redis_url(services_dir: Path) -> Iterator[str]:
    server = LocalRedis(services_dir / "redis", port=free_port())
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def registry(services_dir: Path) -> Iterator[str]:
    """The address (host:port) of a real registry on loopback."""
    server = LocalRegistry(services_dir / "registry", port=free_port())
    server.start()
    yield server.address
    server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    # The server runs as the postgres user, who cannot enter pytest's private tmp.
    data_dir = Path(tempfile.mkdtemp(prefix="farm-test-pg-", dir="/var/tmp"))
    server = LocalPostgres(data_dir, port=free_port())
    try:
        server.start()
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass
class RunningFarm:
    """A web app and a worker, started as real processes, and what they talk to."""

    stack: LocalFarm

    @property
    def web_url(self) -> str:
        return self.stack.web_url

    @property
    def registry(self) -> str:
        return self.stack.registry

    @property
    def engine_url(self) -> str:
        return self.stack.engine_url

    @property
    def token(self) -> str:
        return self.stack.token

    @functools.cached_property
    def http(self) -> requests.Session:
        """Calls the farm with an admin token."""
        return self.stack.api_session()

    def api(self, path: str) -> str:
        return f"{self.web_url}/api/v1{path}"

    def wait_for(
        self, build_id: str, *, timeout_seconds: float = 600
    ) -> dict[str, Any]:
        """Poll the API until the build ends; return its final JSON."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            build = self.http.get(self.api(f"/builds/{build_id}"), timeout=10).json()
            if build["state"] in {"succeeded", "failed", "cancelled"}:
                return build
            time.sleep(0.5)
        raise AssertionError(f"build {build_id} did not end in {timeout_seconds}s")


def dockerfile_archive(dockerfile: str) -> bytes:
    """A .tar.gz holding only a Dockerfile with this text."""
    data = dockerfile.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def running(stack: LocalFarm) -> Iterator[LocalFarm]:
    """Start ``stack`` for a fixture to yield from; stop it afterwards."""
    stack.start_farm()
    try:
        yield stack
    finally:
        stack.stop()


@dataclass(frozen=True)
class SessionServices:
    """The session's Redis, registry, PostgreSQL and test engine, for tests that
    start a farm of their own beside ``farm``: their own queue, nodes, settings."""

    redis_url: str
    registry: str
    postgres_url: str
    engine: str  # the test engine's name
    tmp_path_factory: pytest.TempPathFactory

    def farm(
        self,
        name: str,
        *,
        nodes: tuple[str | Node, ...],
        env: dict[str, str] | None = None,
        redis_url: str | None = None,
    ) -> LocalFarm:
        """A farm (not yet started) whose logs go to ``artifacts/<name>`` and whose
        queue is ``name``; a node given by name alone builds on the test engine."""
        return farm_on_session_services(
            ARTIFACTS / name,
            redis_url=redis_url or self.redis_url,
            registry=self.registry,
            postgres_url=self.postgres_url,
            nodes=tuple(
                Node(node, self.engine) if isinstance(node, str) else node
                for node in nodes
            ),
            env={
                "FARM_QUEUE": name,
                "FARM_WORK_DIR": str(self.tmp_path_factory.mktemp("work")),
                **(env or {}),
            },
        )


@pytest.fixture(scope="session")
def services(
    redis_url: str,
    registry: str,
    postgres_url: str,
    engine_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> SessionServices:
    return SessionServices(
        redis_url, registry, postgres_url, engine_url.split("/")[-2], tmp_path_factory
    )


def farm_on_session_services(
    state_dir: Path,
    *,
    redis_url: str,
    registry: str,
    postgres_url: str,
    nodes: tuple[Node, ...],
    env: dict[str, str],
) -> LocalFarm:
    """A web app and workers (not yet started) over the session's Redis, registry and
    PostgreSQL; tests needing their own queue or nodes start one beside ``farm``."""
    return LocalFarm(
        state_dir=state_dir,
        redis_port=int(redis_url.rsplit(":", 1)[1].split("/")[0]),
        registry_port=int(registry.rsplit(":", 1)[1]),
        web_port=free_port(),
        nodes=nodes,
        database_url=postgres_url,
        # The tests' git daemon and callback receivers listen on loopback; no
        # other host is reachable.
        extra_env={
            "FARM_SECRET_KEY": "test",
            "FARM_GIT_HOSTS": "127.0.0.1",
            "FARM_CALLBACK_HOSTS": "127.0.0.1",
            "FARM_CALLBACK_SECRET": CALLBACK_SECRET,
            **env,
        },
    )


@pytest.fixture(scope="session")
def farm(
    services_dir: Path,
    redis_url: str,
    registry: str,
    postgres_url: str,
    engine_url: str,
    tiny_image: str,
) -> Iterator[RunningFarm]:
    """The whole farm: web and one worker over Redis, PostgreSQL, engine, registry."""
    stack = farm_on_session_services(
        ARTIFACTS,  # the processes' logs are kept as test artifacts
        redis_url=redis_url,
        registry=registry,
        postgres_url=postgres_url,
        # The web app also accepts builds for 'idle', which no node serves.
        nodes=(Node("node-a", os.environ.get("FARM_TEST_ENGINE", "test0"), "builds"),),
        env={
            "FARM_QUEUES": "builds,idle",
            "FARM_WORKER_CONCURRENCY": "2",
            "FARM_WORK_DIR": str(services_dir / "work"),
            "FARM_SMOKE_PROBE_IMAGE": tiny_image,
            # Sweeps (lost builds, smoke tests, callbacks due again) every 5 s.
            "FARM_REAP_INTERVAL_SECONDS": "5",
        },
    )
    stack.start_farm()
    yield RunningFarm(stack)
    stack.stop()


@pytest.fixture(scope="session")
def base_images(engine_url: str) -> Iterator[list[str]]:
    """The offline base images (Debian, busybox, toolchains) in the test engine,
    made from Debian's mirror the first time."""
    api = docker.APIClient(base_url=engine_url, timeout=3600)
    settings = BaseImageSettings(
        mirror=detect_debian_mirror(), extra_ca_files=tuple(local_ca_files())
    )
    yield ensure_base_images(api, settings)
    api.close()
