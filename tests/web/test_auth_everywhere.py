"""Every route of the real web app, called with no token, a wrong one, a revoked one
and one without the scope it needs: each is refused (401, 403, or for a page with no
token at all, the sign-in page). Only the routes FARM_PUBLIC opens answer anyone."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests
from werkzeug.routing import Rule

from farm.config import Settings
from farm.ledger import BuildLedger
from farm.tokens import TokenService
from web.app import create_app
from web.auth import ALWAYS_PUBLIC, MAY_BE_PUBLIC

pytestmark = pytest.mark.integration

WRONG = "farm_000000000000_" + "a" * 43


def guarded_routes() -> Iterator[tuple[str, str, str]]:
    """(method, path, endpoint) of every route that needs a token by default."""
    app = create_app(Settings(database_url="sqlite://", secret_key="x"))
    rule: Rule
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ALWAYS_PUBLIC | set(MAY_BE_PUBLIC.values()):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", "x", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield method, path, rule.endpoint


ROUTES = list(guarded_routes())


@pytest.fixture(scope="module")
def tokens(farm) -> dict[str, str]:
    ledger = BuildLedger.from_url(farm.stack.env()["FARM_DATABASE_URL"])
    service = TokenService(ledger)
    made, revoked = service.create("auth-revoked", ["admin"])
    service.revoke(made.id)
    _, reader = service.create("auth-reader", ["read"])
    ledger.engine.dispose()
    return {"wrong": WRONG, "revoked": revoked, "reader": reader}


def call(farm, method: str, path: str, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(
        method,
        farm.web_url + path,
        headers=headers,
        allow_redirects=False,
        timeout=10,
    )


def test_there_are_routes_to_check():
    endpoints = {endpoint for _, _, endpoint in ROUTES}
    assert {"api.submit_build", "api.list_builds", "pages.list_builds"} <= endpoints
    assert len(ROUTES) >= 15


@pytest.mark.parametrize(("method", "path", "endpoint"), ROUTES)
def test_every_guarded_route_refuses_who_may_not(farm, tokens, method, path, endpoint):
    nobody = call(farm, method, path, None)
    if path.startswith("/api/"):
        assert nobody.status_code == 401, nobody.text
        assert nobody.json()["error"]["code"] == "unauthorized"
    else:
        assert nobody.status_code == 302, nobody.text
        assert "/sign-in" in nobody.headers["Location"]
    for name in ("wrong", "revoked"):
        answer = call(farm, method, path, tokens[name])
        assert answer.status_code == 401, (name, answer.text)
        if path.startswith("/api/"):
            assert answer.json()["error"]["code"] == "unauthorized"
    if method != "GET":
        answer = call(farm, method, path, tokens["reader"])
        assert answer.status_code == 403, answer.text
        if path.startswith("/api/"):
            assert answer.json()["error"]["code"] == "forbidden"


def test_the_open_routes_can_be_closed(tmp_path):
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/farm.db", secret_key="x", public="healthz"
    )
    client = create_app(settings).test_client()
    closed = client.get("/metrics")
    assert closed.status_code == 401
    # Prometheus and scripts read the refusal, so it is JSON, not a page.
    assert closed.json["error"]["code"] == "unauthorized"
    assert client.get("/api/v1/openapi.json").status_code == 401
    assert client.get("/healthz").status_code != 401


def test_an_unknown_open_route_name_is_refused():
    with pytest.raises(Exception, match="FARM_PUBLIC names nope"):
        create_app(Settings(database_url="sqlite://", secret_key="x", public="nope"))
