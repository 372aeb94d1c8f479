"""Commands that run the farm's own processes: the web app and a build worker."""

from __future__ import annotations

import json
import logging
import sys
from contextlib import suppress
from typing import Any

import click
from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine
from gunicorn.workers.gthread import ThreadWorker

from farm.config import Settings
from farm.errors import UriTooLong
from farm.livestate import LiveState, redis_for

logger = logging.getLogger(__name__)

# The longest request line the server reads (gunicorn's own ceiling): a longer
# one is refused before it is all in memory.
MAX_REQUEST_LINE_BYTES = 8190
MAX_HEADER_FIELDS = 100
MAX_HEADER_FIELD_BYTES = 8190


class FarmThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's threaded worker, refusing a request line or headers past its
    limits as the API refuses anything, in JSON, rather than with its own page."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: Exception) -> None:
        if isinstance(exc, LimitRequestLine):
            status, code = "414 URI Too Long", UriTooLong.code
            message = (
                "The URL is too long: this farm reads request lines of at most "
                f"{MAX_REQUEST_LINE_BYTES} bytes."
            )
        elif isinstance(exc, LimitRequestHeaders):
            status, code = "431 Request Header Fields Too Large", "headers_too_large"
            message = (
                f"The request's headers are too large: at most {MAX_HEADER_FIELDS} "
                f"fields of at most {MAX_HEADER_FIELD_BYTES} bytes each."
            )
        else:
            super().handle_error(req, client, addr, exc)
            return
        self.log.warning("Refused from %s: %s", (addr or ("",))[0], exc)
        body = json.dumps({"error": {"code": code, "message": message}})
        head = (
            f"HTTP/1.1 {status}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        with suppress(OSError):  # the client has gone
            util.write_nonblock(client, (head + body).encode())


class WebServer(BaseApplication):  # type: ignore[misc]
    """Gunicorn serving the Flask app: one process, threads for slow clients."""

    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.application


@click.command()
@click.option(
    "--bind",
    default="127.0.0.1:8000",
    show_default=True,
    envvar="FARM_WEB_BIND",
    help="Address and port to listen on.",
)
@click.option(
    "--threads",
    default=64,
    show_default=True,
    help="Requests served at once; each live log a browser or CLI follows holds one.",
)
def web(bind: str, threads: int) -> None:
    """Serve the web pages, the API and /metrics."""
    from web.app import create_app

    app = create_app(Settings.from_env())
    WebServer(
        app,
        {
            "bind": bind,
            "workers": 1,
            "threads": threads,
            "worker_class": FarmThreadWorker,
            "timeout": 120,
            "accesslog": "-",
            # A longer request line gets 414 from FarmThreadWorker; one within it
            # but past web.app.MAX_URL_BYTES, from the app. Headers: 100 fields of
            # at most 8190 bytes each.
            "limit_request_line": MAX_REQUEST_LINE_BYTES,
            "limit_request_fields": MAX_HEADER_FIELDS,
            "limit_request_field_size": MAX_HEADER_FIELD_BYTES,
        },
    ).run()


@click.command()
@click.option(
    "--concurrency",
    type=int,
    default=None,
    help="Builds run at once on this node (FARM_WORKER_CONCURRENCY).",
)
@click.option(
    "--once",
    is_flag=True,
    help="Run the worker in this process, not started again if it dies.",
)
def worker(concurrency: int | None, once: bool) -> None:
    """Run a build worker for this node's Docker engine.

    The worker runs in a child process that is started again 5 s after it dies on
    its own (the broker library can give up when Redis vanishes); TERM, INT, QUIT
    or HUP stop it for good, after its builds; INT or QUIT once more hands those
    builds back to the queue at once."""
    if once:
        from workers.tasks import run_worker

        run_worker(Settings.from_env(worker_concurrency=concurrency))
        return
    from workers.supervisor import supervise

    argv = [sys.executable, "-m", "farm", "worker", "--once"]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    sys.exit(supervise(argv, forget=forget_worker))


def forget_worker() -> None:
    """Take this node off the node list (its worker is not running)."""
    settings = Settings.from_env()
    client = redis_for(settings)
    try:
        LiveState(client).leave(settings.worker_name)
    finally:
        client.close()
