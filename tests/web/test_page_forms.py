"""The pages' forms on the real app: where signing in leads (back to the page
that asked, never off the site, never to an error, whatever ``next`` holds), and a
refused build form that never carries a secret back to the browser."""

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
    _, token = TokenService(ledger).create("someone", ["submit"])
    app = create_app(Settings(database_url=url, secret_key="x"))
    return app.test_client(), token


def csrf_of(page) -> str:
    assert page.status_code == 200
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
    assert found is not None, page.text[:500]
    return found[1]


def sign_in(client, token: str, target: str):
    page = client.get("/sign-in", query_string={"next": target})
    return client.post(
        "/sign-in",
        query_string={"next": target},
        data={"csrf_token": csrf_of(page), "token": token},
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


def test_a_refused_build_form_comes_back_without_its_secrets(signed_in):
    client, token = signed_in
    sign_in(client, token, "/")
    form = {
        "csrf_token": csrf_of(client.get("/builds/new")),
        "source": "git",
        # Refused: the host is loopback, and the default policy keeps it out.
        "git_url": "https://deploy:url-pass-4242@127.0.0.1/team/app.git",
        "git_ref": "main",
        "context": ".",
        "dockerfile": "Dockerfile",
        "build_args": "NPM_TOKEN=npm-tok-4242\nDATABASE_URL=postgres://a:db-pw-4242@db/a"
        "\nVERSION=1.2",
        "queue": "builds",
        "priority": "normal",
    }
    answer = client.post("/builds/new", data=form)
    assert answer.status_code == 400
    page = answer.text
    assert "internal address" in page
    for secret in ("url-pass-4242", "npm-tok-4242", "db-pw-4242"):
        assert secret not in page
    assert "NPM_TOKEN=" in page and "VERSION=1.2" in page
    assert "https://127.0.0.1/team/app.git" in page
    assert "enter them again" in page


@pytest.mark.parametrize("page", ["9999999999999999999", "0", "-1", "x", "1e9"])
def test_any_page_number_shows_a_page(signed_in, page):
    client, token = signed_in
    sign_in(client, token, "/")
    assert client.get("/", query_string={"page": page}).status_code == 200
