"""The farm's settings: one value object, filled from ``FARM_*`` variables."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from farm.errors import InvalidRequest

ENV_PREFIX = "FARM_"


@dataclass(frozen=True)
class Settings:
    """Everything a farm process needs to know about its surroundings."""

    database_url: str = "sqlite:////var/lib/farm/farm.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    registry: str = "127.0.0.1:5000"
    # The registry speaks plain HTTP though it is not on loopback (its engines
    # then need --insecure-registry too).
    registry_http: bool = False
    engine_url: str = "unix:///run/farm/engines/node0/docker.sock"
    # Where the engine keeps its data, as this worker sees it, for the free disk
    # metric; empty: the engine's own data root, when that is on this machine.
    engine_data_dir: str = ""
    web_url: str = "http://127.0.0.1:8000"
    secret_key: str = ""
    queue: str = "builds"
    queues: str = ""
    worker_name: str = field(default_factory=socket.gethostname)
    worker_concurrency: int = 2
    work_dir: Path = Path("/var/tmp/farm")
    max_archive_bytes: int = 256 * 1024 * 1024
    max_source_bytes: int = 1024**3
    build_timeout_seconds: int = 3600
    # A build whose log grows past this is stopped (workers.runner.BuildLog).
    max_log_bytes: int = 16 * 1024**2
    # A built image larger than this is not pushed (workers.runner).
    max_image_bytes: int = 20 * 1024**3
    # Running builds are stopped when the engine's disk has less free than this.
    min_free_disk_bytes: int = 2 * 1024**3
    reap_interval_seconds: int = 30
    # A worker asked to stop lets its builds run this long, then hands them back.
    drain_seconds: int = 600
    stage_cache: bool = True
    engine_cache_keep_bytes: int = 20 * 1024**3
    cache_image_days: int = 14
    retention_interval_seconds: int = 3600
    allow_file_urls: bool = False
    # The git hosts requests may name (farm.destinations); empty: any host that
    # does not resolve to an internal address, or any at all with the next one.
    git_hosts: str = ""
    private_destinations: bool = False
    # Completion callbacks (farm.callbacks): the key they are signed with (none are
    # accepted without it) and the hosts they may go to, as for git.
    callback_secret: str = ""
    callback_hosts: str = ""
    # Started beside a group's images to ask their ports; needs sh, printf, nc, head.
    smoke_probe_image: str = "farm-base/busybox:latest"
    log_level: str = "INFO"
    # Live logs (SSE) followed at once; each holds one of the web app's threads.
    max_log_followers: int = 32
    # Build args to treat as secrets besides those named like one (farm.redaction).
    secret_args: str = ""
    # Which of healthz, metrics, openapi and badges need no token (web.auth).
    public: str = "healthz,metrics,openapi,badges"

    @property
    def queue_names(self) -> list[str]:
        """The named queues: builds may be sent to them, and a worker serves them.

        ``FARM_QUEUES`` lists them (comma-separated, e.g. per platform or node
        label); the default queue ``FARM_QUEUE`` is always one of them.
        """
        names = [name.strip() for name in self.queues.split(",") if name.strip()]
        return list(dict.fromkeys([self.queue, *names]))

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Read ``FARM_<FIELD>`` variables; explicit overrides win over them."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in fields(cls):
            raw = environ.get(ENV_PREFIX + item.name.upper())
            if raw is not None:
                values[item.name] = _convert(item.name, item.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _convert(name: str, kind: Any, raw: str) -> Any:
    kind = str(kind)
    try:
        if kind == "int":
            return int(raw)
        if kind == "bool":
            return _parse_bool(raw)
    except ValueError as exc:
        variable = ENV_PREFIX + name.upper()
        raise InvalidRequest(f"{variable}={raw!r} is not a valid {kind}.") from exc
    if kind == "Path":
        return Path(raw)
    return raw


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(raw)
