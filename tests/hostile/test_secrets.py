"""Secret build args, against the real farm: their values never show in an answer,
a page, a live or stored log, a step or an error, and the request is warned."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.test_metrics import submit

pytestmark = pytest.mark.integration


def everything_shown(farm, build_id: str) -> str:
    """Every answer and page that says something about the build, as text."""
    api = farm.api(f"/builds/{build_id}")
    shown = [
        farm.http.get(api, timeout=10).text,
        farm.http.get(f"{api}/log", timeout=10).text,
        farm.http.get(f"{api}/log", params={"follow": 1}, timeout=60).text,
        farm.http.get(farm.api("/builds"), timeout=10).text,
        farm.http.get(f"{farm.web_url}/builds/{build_id}", timeout=10).text,
        farm.http.get(f"{farm.web_url}/", timeout=10).text,
    ]
    return "\n".join(shown)


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_secret_build_args_are_masked_everywhere(farm, tiny_image, tmp_path, outcome):
    secret = f"s3cret-{uuid.uuid4().hex}"
    end = "exit 0" if outcome == "succeeded" else f"echo failing with {secret}; exit 7"
    dockerfile = (
        f"FROM {tiny_image}\nARG NPM_TOKEN\nARG COLOR\n"
        f"RUN echo token is $NPM_TOKEN and color $COLOR && {end}\n"
    )
    (tmp_path / "Dockerfile").write_text(dockerfile)
    build_id = submit(
        farm,
        tmp_path,
        dockerfile,
        build_args=f"NPM_TOKEN={secret}\nCOLOR=blue-{outcome}",
    )
    answer = farm.http.get(farm.api(f"/builds/{build_id}"), timeout=10).json()
    assert answer["build_args"] == {"NPM_TOKEN": "***", "COLOR": f"blue-{outcome}"}
    assert any("NPM_TOKEN" in warning for warning in answer["warnings"])

    build = farm.wait_for(build_id)
    assert build["state"] == outcome
    shown = everything_shown(farm, build_id)
    assert secret not in shown
    lines = farm.http.get(farm.api(f"/builds/{build_id}/log"), timeout=10).json()
    assert any(
        f"token is *** and color blue-{outcome}" in line for line in lines["lines"]
    )
    assert secret not in requests.get(f"{farm.web_url}/metrics", timeout=10).text
