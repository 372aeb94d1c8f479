"""The bundled examples, built by the farm from the offline base images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from farm.client import pack_folder
from workers.baseimages import (
    BaseImageSettings,
    detect_debian_mirror,
    ensure_base_images,
)
from workers.baseimages.certs import local_ca_files

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def base_images(engine_url: str) -> Iterator[list[str]]:
    api = docker.APIClient(base_url=engine_url, timeout=3600)
    settings = BaseImageSettings(
        mirror=detect_debian_mirror(), extra_ca_files=tuple(local_ca_files())
    )
    yield ensure_base_images(api, settings)
    api.close()


@pytest.mark.parametrize(
    "example", ["web-go", "api-node", "service-python", "three-stage"]
)
def test_example_builds_on_the_farm(farm, base_images, example):
    response = requests.post(
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
