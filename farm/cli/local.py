"""``farm local``: run a whole farm on this machine in the background.

Every process is started by us in its own session and recorded with its pid, so
``farm local down`` stops exactly what ``up`` started and nothing else.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from pathlib import Path
from urllib.parse import urlsplit

import click

from farm.config import Settings
from farm.errors import Unauthorized
from farm.ledger import BuildLedger
from farm.local.engine import EngineLayout, LocalEngine, engine_answers
from farm.local.process import ServiceProcess, port_open, wait_until
from farm.local.redis import LocalRedis, redis_answers
from farm.local.registry import LocalRegistry, registry_answers
from farm.local.stack import start_farm_process
from farm.tokens import TokenService

STATE_DIR = Path("/var/lib/farm/local")
PIDS_FILE = Path("/run/farm/local/pids.json")


def _secret_key(state_dir: Path) -> str:
    path = state_dir / "secret_key"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _admin_token(state_dir: Path, settings: Settings) -> Path:
    """A token with every scope for this machine's user, kept in the state folder
    where the ``farm`` command finds it; made again if the database lost it."""
    path = state_dir / "token"
    ledger = BuildLedger.from_url(settings.database_url)
    ledger.create_tables()
    tokens = TokenService(ledger)
    try:
        tokens.identify(path.read_text().strip())
        return path
    except (OSError, Unauthorized):
        pass
    _, text = tokens.create("local-admin", ["admin"])
    state_dir.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(text + "\n")
    return path


def _record(pids: dict[str, list[str | int]]) -> None:
    PIDS_FILE.parent.mkdir(parents=True, exist_ok=True)
    PIDS_FILE.write_text(json.dumps(pids, indent=2))


@click.group()
def local() -> None:
    """Run a one-machine farm in the background."""


@local.command()
@click.option(
    "--state-dir", type=click.Path(path_type=Path), default=STATE_DIR, show_default=True
)
def up(state_dir: Path) -> None:
    """Start whatever of Redis, registry, engine, web and worker is not running."""
    settings = Settings.from_env()
    pids: dict[str, list[str | int]] = (
        json.loads(PIDS_FILE.read_text()) if PIDS_FILE.exists() else {}
    )
    # Whatever started is recorded even if a later step fails, so that
    # 'farm local down' can stop it.
    try:
        _start_missing(settings, state_dir, pids)
    finally:
        _record(pids)
    token_file = _admin_token(state_dir, settings)
    click.echo(f"farm is up: {settings.web_url} (logs in {state_dir})")
    click.echo(
        f"admin token in {token_file}: the farm command uses it; sign in to the "
        "pages with it (or make your own: farm token create --name NAME)"
    )


def _start_missing(
    settings: Settings, state_dir: Path, pids: dict[str, list[str | int]]
) -> None:
    """Start each part that does not answer, noting its pid in ``pids``."""
    redis_port = urlsplit(settings.redis_url).port or 6379
    if not redis_answers(settings.redis_url):
        server = LocalRedis(state_dir / "redis", port=redis_port)
        server.start()
        pids["redis"] = _entry(server.process, "redis-server")
    registry_port = int(settings.registry.rsplit(":", 1)[1])
    try:
        registry_running = registry_answers(settings.registry)
    except OSError:
        registry_running = False
    if not registry_running:
        registry = LocalRegistry(state_dir / "registry", port=registry_port)
        registry.start()
        pids["registry"] = _entry(registry.process, "docker-registry")
    if not engine_answers(settings.engine_url):
        name = Path(urlsplit(settings.engine_url).path).parent.name or "node0"
        engine = LocalEngine(EngineLayout(name))
        engine.start()
        pids["engine"] = _entry(engine.process, "dockerd")
    env = {"FARM_SECRET_KEY": settings.secret_key or _secret_key(state_dir)}
    web_port = urlsplit(settings.web_url).port or 8000
    if not port_open(web_port):
        bind = ["web", "--bind", f"127.0.0.1:{web_port}"]
        web = start_farm_process("web", bind, env=env, log_dir=state_dir)
        pids["web"] = _entry(web, "farm")
        wait_until(
            lambda: port_open(web_port),
            timeout_seconds=30,
            what="web",
            log_path=web.log_path,
        )
    if "worker" not in pids or not _alive(pids["worker"]):
        worker = start_farm_process("worker", ["worker"], env=env, log_dir=state_dir)
        pids["worker"] = _entry(worker, "farm")


def _entry(process: ServiceProcess | None, name: str) -> list[str | int]:
    """What we record of a started process: its pid and a word of its command line."""
    if process is None or process.pid is None:
        raise click.ClickException(f"{name} did not start")
    return [process.pid, name]


def _alive(entry: list[str | int]) -> bool:
    pid, name = int(entry[0]), str(entry[1])
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return name.encode() in cmdline


@local.command()
def down() -> None:
    """Stop the processes ``farm local up`` started, by their recorded pids."""
    if not PIDS_FILE.exists():
        click.echo("nothing recorded as running")
        return
    pids = json.loads(PIDS_FILE.read_text())
    for name in ("worker", "web", "engine", "registry", "redis"):
        entry = pids.pop(name, None)
        if entry and _alive(entry):
            os.killpg(int(entry[0]), signal.SIGTERM)
            _wait_gone(entry)
            click.echo(f"stopped {name} (pid {entry[0]})")
    _record(pids)


def _wait_gone(entry: list[str | int], timeout_seconds: float = 30) -> None:
    deadline = time.monotonic() + timeout_seconds
    while _alive(entry) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(entry):
        os.killpg(int(entry[0]), signal.SIGKILL)
