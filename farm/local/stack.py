"""A whole farm on one machine: Redis, registry, engine, web app and workers.

Used by ``farm local up``, the test suite and the benchmarks, so all three start the
farm the same way.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests

from farm.client import api_session
from farm.ledger import BuildLedger
from farm.livestate import LiveState
from farm.local.engine import EngineLayout, LocalEngine
from farm.local.process import (
    ServiceProcess,
    ServiceStartError,
    port_open,
    wait_until,
)
from farm.local.redis import LocalRedis
from farm.local.registry import LocalRegistry
from farm.tokens import TokenService

logger = logging.getLogger(__name__)


def start_farm_process(
    name: str, args: list[str], *, env: dict[str, str], log_dir: Path
) -> ServiceProcess:
    """Run ``python -m farm ARGS`` in its own session, logging to LOG_DIR/NAME.log."""
    process = ServiceProcess(
        name,
        [sys.executable, "-m", "farm", *args],
        log_path=log_dir / f"{name}.log",
        env=env,
    )
    process.start()
    return process


@dataclass(frozen=True)
class Node:
    """One build node: a worker and the Docker engine it builds on."""

    worker: str
    engine: str
    queues: str | None = None  # FARM_QUEUES for this worker; the farm's by default

    @property
    def engine_url(self) -> str:
        return EngineLayout(self.engine).url


@dataclass
class LocalFarm:
    """Start and stop a complete farm whose every part listens on loopback."""

    state_dir: Path
    redis_port: int
    registry_port: int
    web_port: int
    nodes: tuple[Node, ...]
    database_url: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    services: list[LocalRedis | LocalRegistry | LocalEngine] = field(
        default_factory=list
    )
    processes: list[ServiceProcess] = field(default_factory=list)
    token: str = ""  # an admin token, made once the web app is up
    _session: requests.Session | None = field(default=None, repr=False)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    @property
    def engine_url(self) -> str:
        """The first node's engine."""
        return self.nodes[0].engine_url

    def env(self) -> dict[str, str]:
        """The ``FARM_*`` settings every farm process of this stack reads."""
        return {
            "FARM_DATABASE_URL": self.database_url
            or f"sqlite:///{self.state_dir / 'farm.db'}",
            "FARM_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "FARM_REGISTRY": self.registry,
            "FARM_WEB_URL": self.web_url,
            "FARM_WORK_DIR": str(self.state_dir / "work"),
            **self.extra_env,
        }

    def start(self) -> None:
        self.start_services()
        self.start_farm()

    def start_services(self) -> None:
        redis = LocalRedis(self.state_dir / "redis", port=self.redis_port)
        registry = LocalRegistry(self.state_dir / "registry", port=self.registry_port)
        services: list[LocalRedis | LocalRegistry | LocalEngine] = [redis, registry]
        services += [
            LocalEngine(EngineLayout(name))
            for name in dict.fromkeys(node.engine for node in self.nodes)
        ]
        for service in services:
            service.start()
            self.services.append(service)

    def start_farm(self) -> None:
        """Start the web app and a worker per node; wait until all are ready."""
        log_dir = self.state_dir / "logs"
        web = start_farm_process(
            "web",
            ["web", "--bind", f"127.0.0.1:{self.web_port}"],
            env=self.env(),
            log_dir=log_dir,
        )
        self.processes.append(web)
        for node in self.nodes:
            self.start_worker(node)
        wait_until(
            lambda: port_open(self.web_port),
            timeout_seconds=30,
            what="web",
            log_path=web.log_path,
        )
        self.token = self.token or self.create_token("local-admin", ["admin"])
        self.wait_for_workers()

    def start_worker(self, node: Node) -> ServiceProcess:
        """Start the worker of ``node`` (``farm worker``, supervised); it is ready
        once it beats (see :meth:`wait_for_workers`)."""
        env = {
            **self.env(),
            "FARM_WORKER_NAME": node.worker,
            "FARM_ENGINE_URL": node.engine_url,
        }
        if node.queues is not None:
            env["FARM_QUEUES"] = node.queues
        process = start_farm_process(
            f"worker-{node.worker}",
            ["worker"],
            env=env,
            log_dir=self.state_dir / "logs",
        )
        self.processes.append(process)
        return process

    def api_session(self) -> requests.Session:
        """An HTTP session (kept for reuse) that calls this farm with its admin
        token."""
        if self._session is None:
            self._session = api_session()
        self._session.headers["Authorization"] = f"Bearer {self.token}"
        return self._session

    def create_token(self, name: str, scopes: list[str]) -> str:
        """A new API token in this farm's database; returns its full text."""
        ledger = BuildLedger.from_url(self.env()["FARM_DATABASE_URL"])
        try:
            ledger.create_tables()
            return TokenService(ledger).create(name, scopes)[1]
        finally:
            ledger.engine.dispose()

    def wait_for_workers(self, *, timeout_seconds: float = 60) -> None:
        """Wait until every worker says it is consuming; raise if one exited."""
        live = LiveState(redis.Redis.from_url(self.env()["FARM_REDIS_URL"]))
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            for process in self.processes:
                if not process.running():
                    tail = process.log_path.read_text(errors="replace")[-3000:]
                    raise ServiceStartError(f"{process.name} exited:\n{tail}")
            if {node.worker for node in self.nodes} <= set(live.workers()):
                return
            time.sleep(0.2)
        raise ServiceStartError("the workers were not ready in time")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        for service in reversed(self.services):
            service.stop()
        self.processes.clear()
        self.services.clear()
