"""Git push webhooks from GitHub and GitLab against the real farm and a git daemon."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import uuid

import pytest
import requests

from tests.test_end_to_end import (  # noqa: F401  (git_server is a fixture)
    TWO_STAGE,
    git_server,
    publish_repo,
    write_project,
)

pytestmark = pytest.mark.integration


def farm_hook(farm, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **farm.stack.env()}
    return subprocess.run(
        [sys.executable, "-m", "farm", "hook", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.fixture
def repo(farm, git_server, tiny_image, tmp_path):  # noqa: F811
    base_url, root = git_server
    name = f"hooked-{uuid.uuid4().hex[:8]}.git"
    commit = publish_repo(
        root,
        name,
        write_project(tmp_path / "src", TWO_STAGE.format(base=tiny_image), name),
    )
    return f"{base_url}/{name}", commit


def make_hook(farm, provider: str, git_url: str, *extra: str) -> tuple[str, str]:
    made = farm_hook(
        farm,
        "create",
        "--name",
        f"{provider}-app",
        "--provider",
        provider,
        "--git-url",
        git_url,
        *extra,
    )
    assert made.returncode == 0, made.stderr
    fields = {
        key.strip(): value.strip()
        for key, value in (
            line.split(": ", 1) for line in made.stdout.strip().splitlines()
        )
    }
    return fields["URL"], fields.get("Secret") or fields["Secret token"]


def github_push(url: str, secret: str, body: dict, *, delivery: str, **headers):
    raw = json.dumps(body).encode()
    signature = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return requests.post(
        url,
        data=raw,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": f"sha256={signature}",
            **headers,
        },
        timeout=30,
    )


def push_event(git_url: str, commit: str, branch: str = "main") -> dict:
    return {
        "ref": f"refs/heads/{branch}",
        "after": commit,
        "deleted": False,
        "repository": {"clone_url": git_url, "full_name": "team/app"},
    }


def test_a_github_push_builds_the_pushed_commit_once(farm, repo):
    git_url, commit = repo
    url, secret = make_hook(
        farm, "github", git_url, "--branch", "main", "--tag", "hooked/app:{branch}"
    )
    delivery = str(uuid.uuid4())

    first = github_push(url, secret, push_event(git_url, commit), delivery=delivery)

    assert first.status_code == 202, first.text
    accepted = first.json()
    assert accepted["outcome"] == "created"
    build = farm.wait_for(accepted["build"]["id"])
    assert build["state"] == "succeeded", build["error"]
    assert build["source"]["commit"] == commit and build["source"]["ref"] == "main"
    assert build["submitted_by"] == "hook:github-app"
    assert build["image"]["references"] == [f"{farm.registry}/hooked/app:main"]

    again = github_push(url, secret, push_event(git_url, commit), delivery=delivery)
    assert again.status_code == 200
    assert again.json() == {
        "outcome": "duplicate",
        "delivery": delivery,
        "build_id": build["id"],
    }


def test_github_deliveries_that_must_not_build(farm, repo):
    git_url, commit = repo
    url, secret = make_hook(farm, "github", git_url, "--branch", "release/*")
    event = push_event(git_url, commit)

    forged = github_push(url, "not-the-secret", event, delivery="a")
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "unauthorized"

    other_branch = github_push(url, secret, event, delivery="b")
    assert other_branch.status_code == 200
    assert other_branch.json()["outcome"] == "ignored"

    ping = github_push(
        url, secret, {"zen": "hi"}, delivery="c", **{"X-GitHub-Event": "ping"}
    )
    assert ping.json()["outcome"] == "pong"

    elsewhere = push_event(
        "https://git.example.org/other/repo.git", commit, "release/1"
    )
    wrong_repo = github_push(url, secret, elsewhere, delivery="d")
    assert wrong_repo.status_code == 400
    assert wrong_repo.json()["error"]["details"]["field"] == "repository"

    gone = requests.post(
        url.rsplit("/", 1)[0] + "/ffffffffffff", data=b"{}", timeout=10
    )
    assert gone.status_code == 404


def test_a_gitlab_push_builds_with_its_token(farm, repo):
    git_url, commit = repo
    url, secret = make_hook(farm, "gitlab", git_url, "--tag", "hooked/lab:{sha}")
    event = {
        "object_kind": "push",
        "ref": "refs/heads/main",
        "checkout_sha": commit,
        "project": {"git_http_url": git_url, "path_with_namespace": "team/app"},
    }
    headers = {"X-Gitlab-Event": "Push Hook", "Content-Type": "application/json"}

    refused = requests.post(
        url, json=event, headers={**headers, "X-Gitlab-Token": "wrong"}, timeout=30
    )
    assert refused.status_code == 401

    accepted = requests.post(
        url, json=event, headers={**headers, "X-Gitlab-Token": secret}, timeout=30
    )
    assert accepted.status_code == 202, accepted.text
    build = farm.wait_for(accepted.json()["build"]["id"])
    assert build["state"] == "succeeded", build["error"]
    assert build["tags"] == [f"hooked/lab:{commit[:12]}"]

    # No delivery id from this GitLab: the same push is recognised by its commit.
    repeated = requests.post(
        url, json=event, headers={**headers, "X-Gitlab-Token": secret}, timeout=30
    )
    assert repeated.json()["outcome"] == "duplicate"


def test_hook_commands_refuse_bad_settings(farm):
    bad = farm_hook(
        farm,
        "create",
        "--name",
        "x",
        "--provider",
        "github",
        "--git-url",
        "ext::sh -c id",
    )
    assert bad.returncode == 1 and "git URL" in bad.stderr
    long_name = farm_hook(
        farm,
        "create",
        "--name",
        "x" * 65,
        "--provider",
        "github",
        "--git-url",
        "http://127.0.0.1:9/app.git",
    )
    assert long_name.returncode == 1 and "at most 64" in long_name.stderr
    unknown = farm_hook(farm, "delete", "ffffffffffff")
    assert unknown.returncode == 1 and "no hook" in unknown.stderr


def test_hostile_deliveries_are_refused_cheaply(farm, repo):
    git_url, _ = repo
    url, secret = make_hook(farm, "github", git_url)
    huge = requests.post(url, data=b"x" * (26 * 1024 * 1024), timeout=60)
    assert huge.status_code == 413
    deep = b"[" * 100_000
    signature = hmac.new(secret.encode(), deep, hashlib.sha256).hexdigest()
    nested = requests.post(
        url,
        data=deep,
        headers={
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": f"sha256={signature}",
        },
        timeout=30,
    )
    assert nested.status_code == 400
    assert nested.json()["error"]["code"] == "invalid_request"


def test_a_hook_for_a_host_the_farm_may_not_reach_is_refused(farm):
    made = farm_hook(
        farm,
        "create",
        "--name",
        "x",
        "--provider",
        "github",
        "--git-url",
        "git://10.9.9.9/x.git",
    )
    assert made.returncode == 1 and "only reaches the hosts" in made.stderr
