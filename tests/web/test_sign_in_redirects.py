"""Where signing in leads: back to the page that asked, never off the site, and
never to an error, whatever ``next`` holds."""

from __future__ import annotations

import re

import pytest

from farm.config import Settings
from farm.ledger import BuildLedger
from farm.tokens import TokenService
from web.app import create_app

HOSTILE = [
    "//evil.example/x",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "/\\evil.example",
    "/\\\\evil.example",
    "https://evil.example/",
    "javascript:alert(1)",
    "/ /evil.example",
    "/\x7f/evil.example",
    "",
]


@pytest.fixture
def signed_in(tmp_path):
    """A test client of the real app over a SQLite ledger, and a token."""
    url = f"sqlite:///{tmp_path}/farm.db"
    ledger = BuildLedger.from_url(url)
    ledger.create_tables()
    _, token = TokenService(ledger).create("someone", ["read"])
    app = create_app(Settings(database_url=url, secret_key="x"))
    return app.test_client(), token


def sign_in(client, token: str, target: str):
    page = client.get("/sign-in", query_string={"next": target})
    assert page.status_code == 200
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
    assert csrf is not None, page.text[:500]
    return client.post(
        "/sign-in",
        query_string={"next": target},
        data={"csrf_token": csrf[1], "token": token},
    )


@pytest.mark.parametrize("target", HOSTILE)
def test_a_next_that_would_leave_the_site_leads_home(signed_in, target):
    client, token = signed_in
    answer = sign_in(client, token, target)
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/"


def test_a_next_on_the_site_is_followed(signed_in):
    client, token = signed_in
    answer = sign_in(client, token, "/builds/abc?tab=log")
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/builds/abc?tab=log"
