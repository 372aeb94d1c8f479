"""A service process started by us and stopped by its process id."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from farm.errors import FarmError

logger = logging.getLogger(__name__)


class ServiceStartError(FarmError):
    """A local service did not come up in time."""

    code = "service_start_failed"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], bool], *, timeout_seconds: float, what: str, log_path: Path
) -> None:
    """Poll ``check`` until it is true or raise with the service's log tail."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise ServiceStartError(
        f"{what} did not become ready in {timeout_seconds:.0f}s:\n{tail}"
    )


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class ServiceProcess:
    """A child process with its output in a log file, stopped by its own pid."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.user = user
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = self.argv
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,
            )
        logger.info("service=%s pid=%s: started", self.name, self.popen.pid)

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, *, timeout_seconds: float = 20.0, sig: int = signal.SIGTERM) -> None:
        """Signal the process group we started, then wait; kill it if it lingers."""
        if not self.running():
            return
        assert self.popen is not None
        os.killpg(self.popen.pid, sig)
        try:
            self.popen.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
        logger.info("service=%s pid=%s: stopped", self.name, self.popen.pid)


class LocalService:
    """A server we run from one folder of its own on one loopback port."""

    def __init__(self, data_dir: Path, *, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.process: ServiceProcess | None = None

    def stop(self) -> None:
        if self.process:
            self.process.stop()
