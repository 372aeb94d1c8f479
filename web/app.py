"""The Flask application factory: wiring settings to the build service."""

from __future__ import annotations

import logging
import secrets
import threading
from importlib import resources
from typing import Any
from urllib.parse import quote

import yaml
from flask import Flask, Response, current_app, jsonify, request
from flask_wtf.csrf import CSRFProtect
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from farm.builds import BuildService
from farm.config import Settings
from farm.errors import FarmError, UriTooLong
from farm.groups import GroupService
from farm.hooks import HookService
from farm.idempotency import IdempotencyKeys
from farm.metrics import FarmCollector, make_registry
from farm.tokens import TokenService
from web import api, badges, hooks, pages
from web.auth import MAY_BE_PUBLIC, init_auth

logger = logging.getLogger(__name__)

# Room for the form fields that travel with an uploaded archive.
FORM_OVERHEAD_BYTES = 1024 * 1024
RETRY_AFTER_SECONDS = 5
# The longest URL (path and query, as sent) the app reads: a longer one is refused
# in the API's own shape (or with the farm's page). Below the server's request-line
# limit (farm.cli.serve), which refuses longer lines still, in JSON, unread.
MAX_URL_BYTES = 8000


def create_app(settings: Settings | None = None) -> Flask:
    """Build the web app for ``settings`` (read from ``FARM_*`` when not given)."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key or secrets.token_hex(32),
        MAX_CONTENT_LENGTH=settings.max_archive_bytes + FORM_OVERHEAD_BYTES,
        WTF_CSRF_TIME_LIMIT=None,
    )
    if not settings.secret_key:
        logger.warning("web: FARM_SECRET_KEY is not set; forms break on restart")
    service = BuildService.from_settings(settings)
    app.extensions["farm"] = service
    app.extensions["farm.groups"] = GroupService(service)
    app.extensions["farm.hooks"] = HookService(service)
    app.extensions["farm.idempotency"] = IdempotencyKeys(service.live)
    app.extensions["farm.openapi"] = load_openapi()
    # Each followed live log holds a server thread; leave threads for the rest.
    app.extensions["farm.followers"] = threading.BoundedSemaphore(
        settings.max_log_followers
    )
    app.extensions["farm.settings"] = settings
    app.extensions["farm.metrics"] = make_registry(FarmCollector(service))
    # A URL too long to read is refused before anything else, even who asks.
    app.before_request(refuse_long_url)
    # Who asks is checked before the form's CSRF token: a stranger is sent to sign
    # in, or told 401/403, rather than told the form is stale.
    init_auth(app, TokenService(service.ledger), public=settings.public)
    csrf = CSRFProtect(app)
    csrf.exempt(api.blueprint)
    app.add_template_filter(format_time, "when")
    app.register_blueprint(api.blueprint)
    app.register_blueprint(pages.blueprint)
    app.register_blueprint(badges.blueprint)
    app.register_blueprint(hooks.blueprint)
    csrf.exempt(hooks.blueprint)
    app.add_url_rule("/metrics", "metrics", serve_metrics)
    app.add_url_rule("/healthz", "healthz", check_health)
    app.register_error_handler(FarmError, answer_farm_error)
    app.register_error_handler(HTTPException, answer_http_error)
    app.register_error_handler(Exception, answer_unexpected_error)
    return app


def load_openapi() -> dict[str, Any]:
    """The API's OpenAPI document, kept beside the code in ``web/openapi.yaml``."""
    text = resources.files("web").joinpath("openapi.yaml").read_text()
    return dict(yaml.safe_load(text))


def format_time(iso: str | None) -> str:
    """An ISO time from the API as pages show it: to the second, in UTC."""
    return f"{iso[:19].replace('T', ' ')} UTC" if iso else "—"


def serve_metrics() -> Response:
    registry = current_app.extensions["farm.metrics"]
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def check_health() -> Any:
    """Whether the web app reaches its database and Redis: 200 if so, 503 if not."""
    service: BuildService = current_app.extensions["farm"]
    checks = {"database": service.ledger.ping, "redis": service.live.ping}
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except FarmError as exc:
            results[name] = exc.message
    healthy = all(value == "ok" for value in results.values())
    body = {"status": "ok" if healthy else "unavailable", "checks": results}
    return jsonify(body), 200 if healthy else 503


def refuse_long_url() -> None:
    """Refuse (414) a request whose URL, path and query as sent, is longer than
    :data:`MAX_URL_BYTES`."""
    environ = request.environ
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw is None:  # a server that does not pass the URL as it was sent
        path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        query = environ.get("QUERY_STRING", "")
        raw = f"{path}?{query}" if query else path
    if len(raw) > MAX_URL_BYTES:
        raise UriTooLong(
            f"The URL is {len(raw)} bytes long; this farm reads URLs (path and "
            f"query) of at most {MAX_URL_BYTES} bytes.",
            limit=MAX_URL_BYTES,
        )


def wants_json() -> bool:
    """Whether an error goes back as JSON: to API and hook callers, to the routes
    machines read (metrics, health, badges, the OpenAPI document), and to whoever
    asks for JSON; people get a page."""
    machine = request.path.startswith(("/api/", "/hooks/")) or (
        request.endpoint in MAY_BE_PUBLIC.values()
    )
    return machine or request.accept_mimetypes.best == ("application/json")


def error_response(
    code: str, message: str, status: int, details: dict[str, Any] | None = None
) -> Any:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    if wants_json():
        return jsonify({"error": body}), status
    return pages.render_error(message, status)


def answer_farm_error(exc: FarmError) -> Any:
    if exc.status >= 500:
        logger.error("request %s %s failed: %s", request.method, request.path, exc)
    body, status = error_response(exc.code, exc.message, exc.status, exc.details)
    if exc.status == 401:
        return body, status, {"WWW-Authenticate": 'Bearer realm="farm"'}
    if exc.status == 503:
        return body, status, {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return body, status


def answer_http_error(exc: HTTPException) -> Any:
    code = (exc.name or "error").lower().replace(" ", "_")
    messages = {
        404: "No such page or API route; see /api/v1/builds.",
        405: f"{request.method} is not allowed here.",
        413: "The upload is too large for this farm.",
    }
    message = messages.get(exc.code or 500, exc.description or "Request failed.")
    body, status = error_response(code, message, exc.code or 500)
    # Keep what HTTP asks of the answer, e.g. the Allow header of a 405.
    headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
    return body, status, headers


def answer_unexpected_error(exc: Exception) -> Any:
    if isinstance(exc, RecursionError):  # JSON nested beyond what Python parses
        return error_response(
            "invalid_request", "The request body is nested too deeply.", 400
        )
    logger.exception("request %s %s failed", request.method, request.path)
    return error_response(
        "internal_error", "The farm hit an unexpected error; it has been logged.", 500
    )
