"""Serve the numeral conversions as JSON: /roman?n=1994, /number?roman=MCMXCIV."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from roman.numerals import from_roman, to_roman


def answer(path: str) -> tuple[int, dict[str, Any]]:
    """Compute the status and JSON body for a request path."""
    url = urlsplit(path)
    query = {key: values[0] for key, values in parse_qs(url.query).items()}
    routes: dict[str, Callable[[], dict[str, Any]]] = {
        "/healthz": lambda: {"status": "ok"},
        "/roman": lambda: {"roman": to_roman(int(query.get("n", "")))},
        "/number": lambda: {"number": from_roman(query.get("roman", ""))},
    }
    if url.path not in routes:
        return 404, {"error": {"code": "not_found", "message": "Try /roman?n=12."}}
    try:
        return 200, routes[url.path]()
    except ValueError as exc:
        return 400, {"error": {"code": "invalid_request", "message": str(exc)}}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        status, body = answer(self.path)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    port = int(os.environ.get("PORT", "8081"))
    # As PID 1 in a container, Python gets no default SIGTERM action; exit cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer(("", port), Handler)
    print(f"roman: listening on :{port}", flush=True)
    server.serve_forever()
