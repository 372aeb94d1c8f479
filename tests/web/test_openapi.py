"""The OpenAPI document is the API: every route is in it, and requests generated from
it (schemathesis) get documented answers and never a server error."""

from __future__ import annotations

import re

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from farm.config import Settings
from web.app import create_app, load_openapi

pytestmark = pytest.mark.integration

METHODS = {"get", "post", "put", "patch", "delete"}


def flask_api_routes() -> set[tuple[str, str]]:
    app = create_app(
        Settings(database_url="sqlite://", redis_url="redis://127.0.0.1:1/0")
    )
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            routes |= {(m.lower(), path) for m in rule.methods or ()} & {
                (m, path) for m in METHODS
            }
    return routes


def documented_routes() -> set[tuple[str, str]]:
    paths = load_openapi()["paths"]
    return {(m, path) for path, item in paths.items() for m in item if m in METHODS}


def test_every_api_route_is_documented_and_nothing_else():
    assert flask_api_routes() == documented_routes()


def test_the_app_serves_its_document_without_a_token(farm):
    response = requests.get(farm.api("/openapi.json"), timeout=10)
    assert response.status_code == 200
    assert response.json() == load_openapi()


# The document the app serves is this file (checked above).
generated = schemathesis.openapi.from_dict(load_openapi())


@generated.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same requests on every run
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_get_documented_answers(case, farm):
    # The farm only reaches git on 127.0.0.1 (FARM_GIT_HOSTS), so whatever git URL
    # is generated, nothing leaves this machine.
    case.call_and_validate(
        base_url=farm.web_url,
        headers={"Authorization": f"Bearer {farm.token}"},
        timeout=30,
        # The document types the fields; the farm also checks what they mean (a
        # git URL it can fetch, a context the archive holds), so a well-typed
        # request may still be refused with a 400 saying why.
        excluded_checks=[
            schemathesis.checks.positive_data_acceptance,
            # Query parameters the document does not name are ignored, not refused.
            schemathesis.checks.negative_data_rejection,
        ],
    )
