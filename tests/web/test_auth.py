"""Tokens against the real web app: the API refuses calls without the right one,
and the operator's ``farm token`` commands make and revoke them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

pytestmark = pytest.mark.integration


def farm_token(farm, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FARM_DATABASE_URL": farm.stack.env()["FARM_DATABASE_URL"]}
    return subprocess.run(
        [sys.executable, "-m", "farm", "token", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_api_needs_a_token(farm):
    response = requests.get(farm.api("/builds"), timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert "farm token create" in response.json()["error"]["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer nonsense",
        "Basic YWRtaW46YWRtaW4=",
        "Bearer farm_000000000000_" + "a" * 43,
    ],
)
def test_bad_credentials_are_refused(farm, header):
    response = requests.get(
        farm.api("/builds"), headers={"Authorization": header}, timeout=10
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_health_and_metrics_stay_open(farm):
    assert requests.get(f"{farm.web_url}/healthz", timeout=10).status_code == 200
    assert requests.get(f"{farm.web_url}/metrics", timeout=10).status_code == 200


def test_a_read_token_reads_but_does_not_submit(farm):
    token = farm.stack.create_token("dashboard", ["read"])
    assert (
        requests.get(farm.api("/builds"), headers=bearer(token), timeout=10).status_code
        == 200
    )
    response = requests.post(
        farm.api("/builds"),
        headers=bearer(token),
        json={"git_url": "http://127.0.0.1:9/a.git"},
        timeout=10,
    )
    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["code"], error["details"]["needed"]) == ("forbidden", "submit")


def test_operator_makes_lists_and_revokes_tokens(farm):
    made = farm_token(farm, "create", "--name", "ci-bot", "--scope", "read")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("farm_") and "cannot be shown again" in made.stderr
    token_id = token.split("_")[1]
    assert (
        requests.get(farm.api("/nodes"), headers=bearer(token), timeout=10).status_code
        == 200
    )

    listed = farm_token(farm, "list")
    line = next(line for line in listed.stdout.splitlines() if token_id in line)
    assert "ci-bot" in line and "live" in line
    assert token.split("_", 2)[2] not in listed.stdout  # never the secret

    revoked = farm_token(farm, "revoke", token_id)
    assert revoked.returncode == 0, revoked.stderr
    response = requests.get(farm.api("/nodes"), headers=bearer(token), timeout=10)
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


def test_bad_token_commands_say_why(farm):
    unknown_scope = farm_token(farm, "create", "--name", "x", "--scope", "root")
    assert unknown_scope.returncode == 2 and "root" in unknown_scope.stderr
    no_such = farm_token(farm, "revoke", "ffffffffffff")
    assert no_such.returncode == 1 and "no token" in no_such.stderr
