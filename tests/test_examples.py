"""The bundled examples, built by the farm from the offline base images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from farm.client import pack_folder

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    "example", ["web-go", "api-node", "service-python", "three-stage"]
)
def test_example_builds_on_the_farm(farm, base_images, example):
    response = farm.http.post(
        farm.api("/builds"),
        timeout=60,
        data={"tags": f"examples/{example}:test"},
        files={"archive": (f"{example}.tar.gz", pack_folder(EXAMPLES / example))},
    )
    assert response.status_code == 202, response.text
    build = farm.wait_for(response.json()["id"], timeout_seconds=900)
    assert build["state"] == "succeeded", build["error"]
    stages = {step["stage"] for step in build["steps"] if not step["internal"]}
    assert len(stages) >= 2, stages  # a builder stage and a runtime stage at least
    assert build["image"]["digest"].startswith("sha256:")


def test_the_example_app_builds_as_a_group_and_answers_together(farm, base_images):
    """The front end answers its page only if it reaches the API by name."""
    done = subprocess.run(
        [sys.executable, "-m", "farm", "group", "submit", str(EXAMPLES)]
        + ["--file", str(EXAMPLES / "farm-group.json"), "--wait", "--json"]
        + ["--server", farm.web_url],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "FARM_TOKEN": farm.token},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    group = json.loads(done.stdout)
    assert group["state"] == "succeeded"
    smoke = group["smoke_test"]
    assert smoke["state"] == "passed", smoke
    results = {result["name"]: result for result in smoke["images"]}
    assert set(results) == {"api", "web", "stats", "roman"}
    assert {r["http_status"] for r in results.values()} == {200}
    assert (results["web"]["port"], results["api"]["port"]) == (8080, 3000)
