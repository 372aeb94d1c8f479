"""The ``farm`` command line against a running farm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def run_farm(
    *args: str, server: str, token: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm", *args, "--server", server],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FARM_TOKEN": token, "FARM_TOKEN_FILE": "/nonexistent"},
    )


def test_submit_folder_waits_and_prints_digest(farm, tiny_image, tmp_path: Path):
    (tmp_path / "Dockerfile").write_text(
        f"FROM {tiny_image} AS build\nARG GREETING\nRUN echo $GREETING > /g\n"
        f"FROM {tiny_image}\nCOPY --from=build /g /g\n"
    )
    done = run_farm(
        "submit",
        str(tmp_path),
        "--tag",
        "cli/greet:1",
        "--build-arg",
        "GREETING=hi",
        "--wait",
        server=farm.web_url,
        token=farm.token,
    )
    assert done.returncode == 0, done.stderr
    assert f"{farm.registry}/cli/greet:1@sha256:" in done.stdout
    assert "RUN echo hi > /g" in done.stderr  # the followed log
    # Off a terminal, the progress line is printed at each change of state.
    assert "[succeeded] 2/2 steps done, " in done.stderr


def test_failed_build_exits_one_and_names_the_line(farm, tiny_image, tmp_path: Path):
    (tmp_path / "Dockerfile").write_text(f"FROM {tiny_image}\nRUN exit 7\n")
    done = run_farm(
        "submit", str(tmp_path), "--wait", server=farm.web_url, token=farm.token
    )
    assert done.returncode == 1
    assert "failed" in done.stdout and "dockerfile_line 2" in done.stdout


def test_unreachable_farm_exits_three(tmp_path: Path):
    done = run_farm("status", server="http://127.0.0.1:9")
    assert done.returncode == 3 and "Could not reach" in done.stderr


def test_missing_folder_is_a_usage_error(farm, tmp_path: Path):
    done = run_farm(
        "submit", str(tmp_path / "nope"), server=farm.web_url, token=farm.token
    )
    assert done.returncode == 2 and "neither a folder nor a git URL" in done.stderr
    bad_arg = run_farm(
        "submit",
        str(tmp_path),
        "--build-arg",
        "NOEQUALS",
        server=farm.web_url,
        token=farm.token,
    )
    assert bad_arg.returncode == 2 and "NAME=value" in bad_arg.stderr


def test_ref_with_a_folder_is_a_usage_error(farm, tmp_path: Path):
    done = run_farm(
        "submit", str(tmp_path), "--ref", "main", server=farm.web_url, token=farm.token
    )
    assert done.returncode == 2 and "--ref applies to git sources" in done.stderr


def test_group_submit_waits_for_the_smoke_test(farm, tiny_image, tmp_path: Path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site/Dockerfile").write_text(
        f"FROM {tiny_image}\nRUN mkdir /www && echo {tmp_path.name} > /www/index.html\n"
        'EXPOSE 8080\nCMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n'
    )
    (tmp_path / "group.json").write_text(
        '{"smoke_test": {"seconds": 1}, "images": [{"name": "site", '
        '"context": "site", "smoke": {"path": "/index.html"}}]}'
    )
    done = run_farm(
        "group",
        "submit",
        str(tmp_path),
        "--file",
        str(tmp_path / "group.json"),
        "--wait",
        server=farm.web_url,
        token=farm.token,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "succeeded  smoke test passed" in done.stdout
    assert "site  stayed up, answered  (GET /index.html answered 200)" in done.stdout


@pytest.mark.parametrize(
    "group_file, message",
    [
        ("images: [web]\n", "is not valid JSON"),
        ('{"images": [{"name": "a", "context": "a"}]}', "there is no"),
    ],
)
def test_a_group_the_cli_cannot_send_is_a_usage_error(
    farm, tmp_path: Path, group_file, message
):
    (tmp_path / "group.json").write_text(group_file)
    done = run_farm(
        "group",
        "submit",
        str(tmp_path),
        "-f",
        str(tmp_path / "group.json"),
        server=farm.web_url,
        token=farm.token,
    )
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_retry_follows_a_new_build_of_the_same_inputs(farm, tiny_image, tmp_path):
    (tmp_path / "Dockerfile").write_text(
        f"FROM {tiny_image}\nRUN echo {tmp_path.name}-{os.getpid()} && exit 9\n"
    )
    first = run_farm(
        "submit", str(tmp_path), "--follow", server=farm.web_url, token=farm.token
    )
    assert first.returncode == 1
    failed_id = first.stdout.split()[0]
    again = run_farm(
        "retry", failed_id, "--follow", server=farm.web_url, token=farm.token
    )
    assert again.returncode == 1  # the same inputs fail the same way
    assert "created" in again.stdout and failed_id not in again.stdout.split()[1]
    assert "exit 9" in again.stderr


def test_submit_sends_the_queue_and_priority(farm, tiny_image, tmp_path: Path):
    (tmp_path / "Dockerfile").write_text(f"FROM {tiny_image}\nRUN echo {tmp_path}\n")
    done = run_farm(
        "submit",
        str(tmp_path),
        "--queue",
        "idle",  # no node serves it: the build waits there
        "--priority",
        "urgent",
        "--json",
        server=farm.web_url,
        token=farm.token,
    )
    assert done.returncode == 0, done.stderr
    build = json.loads(done.stdout)
    assert (build["queue"], build["priority"]) == ("idle", "urgent")
    farm.http.post(farm.api(f"/builds/{build['id']}/cancel"), timeout=10)
