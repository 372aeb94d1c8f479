"""A Docker engine of our own: its own data, exec root, socket and network bridge.

Several can run on one machine, each standing for one build node. Engines sharing the
default ``docker0`` bridge interfere with each other, so each gets a bridge we create.
"""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import docker

from farm.local.process import ServiceProcess, ServiceStartError, wait_until

logger = logging.getLogger(__name__)

STATE_ROOT = Path("/var/lib/farm/engines")
RUN_ROOT = Path("/run/farm/engines")


@dataclass(frozen=True)
class EngineLayout:
    """Where one named engine keeps its state, socket and bridge."""

    name: str
    state_root: Path = STATE_ROOT
    run_root: Path = RUN_ROOT

    @property
    def data_root(self) -> Path:
        return self.state_root / self.name

    @property
    def exec_root(self) -> Path:
        # dockerd's exec root holds unix sockets, whose paths must stay short.
        return self.run_root / self.name

    @property
    def socket_path(self) -> Path:
        return self.exec_root / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def bridge(self) -> str:
        return f"farm-{self.name}"[:15]

    @property
    def preferred_octet(self) -> int:
        """A stable third octet per name in 10.213.0.0/16 for the bridge's /24."""
        return int(hashlib.sha256(self.name.encode()).hexdigest(), 16) % 250 + 2


def engine_answers(url: str) -> bool:
    try:
        client = docker.APIClient(base_url=url, timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure means "not ready yet"
        return False


def ensure_bridge(layout: EngineLayout) -> None:
    """Create the engine's bridge on a /24 no other interface uses, and bring it up."""
    exists = subprocess.run(["ip", "link", "show", layout.bridge], capture_output=True)
    if exists.returncode != 0:
        subprocess.run(
            ["ip", "link", "add", layout.bridge, "type", "bridge"], check=True
        )
        subprocess.run(
            [
                "ip",
                "addr",
                "add",
                free_bridge_cidr(layout.preferred_octet),
                "dev",
                layout.bridge,
            ],
            check=True,
        )
    subprocess.run(["ip", "link", "set", layout.bridge, "up"], check=True)


def free_bridge_cidr(preferred_octet: int) -> str:
    """The first 10.213.N.1/24, from the preferred N on, that no interface has."""
    addresses = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    used = set(re.findall(r"inet 10\.213\.(\d+)\.", addresses))
    for step in range(250):
        octet = (preferred_octet - 2 + step) % 250 + 2
        if str(octet) not in used:
            return f"10.213.{octet}.1/24"
    raise ServiceStartError("No free /24 is left in 10.213.0.0/16 for a bridge.")


class LocalEngine:
    """Start and stop one dockerd laid out by :class:`EngineLayout`."""

    def __init__(self, layout: EngineLayout, *, log_path: Path | None = None) -> None:
        self.layout = layout
        self.log_path = log_path or layout.data_root.with_suffix(".log")
        self.process: ServiceProcess | None = None

    @property
    def url(self) -> str:
        return self.layout.url

    def start(self, *, timeout_seconds: float = 60.0) -> None:
        if engine_answers(self.url):
            logger.info("engine=%s: already running at %s", self.layout.name, self.url)
            return
        layout = self.layout
        for folder in (layout.data_root, layout.exec_root):
            folder.mkdir(parents=True, exist_ok=True)
        ensure_bridge(layout)
        layout.socket_path.unlink(missing_ok=True)
        argv = [
            "dockerd",
            f"--data-root={layout.data_root}",
            f"--exec-root={layout.exec_root}",
            f"--pidfile={layout.exec_root / 'dockerd.pid'}",
            f"--host={layout.url}",
            f"--bridge={layout.bridge}",
            "--storage-driver=overlay2",
            # Builds running side by side on the bridge cannot reach each other.
            "--icc=false",
        ]
        self.process = ServiceProcess(
            f"engine-{layout.name}",
            argv,
            log_path=self.log_path,
            env={"DOCKER_BUILDKIT": "1"},
        )
        self.process.start()
        wait_until(
            lambda: engine_answers(self.url),
            timeout_seconds=timeout_seconds,
            what=f"engine {layout.name}",
            log_path=self.log_path,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout_seconds=30)
