"""Per-build limits on a real farm: a build that runs past FARM_BUILD_TIMEOUT_SECONDS
is stopped and recorded as timed out while it keeps printing (so it is the limit, not
silence, that ends it); one whose log passes FARM_MAX_LOG_BYTES is stopped too. On
disk: an image over FARM_MAX_IMAGE_BYTES is not pushed, and a build that fills the
engine's disk past FARM_MIN_FREE_DISK_BYTES is stopped while it writes."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import docker
import pytest
import requests

from farm.local.stack import LocalFarm
from tests.conftest import (
    dockerfile_archive,
    running,
)

pytestmark = pytest.mark.integration

LIMIT_SECONDS = 6
LOG_LIMIT_BYTES = 100_000


@pytest.fixture(scope="module")
def limited_farm(services) -> Iterator[LocalFarm]:
    stack = services.farm(
        "time-limit",
        nodes=("node-limit",),
        env={
            "FARM_BUILD_TIMEOUT_SECONDS": str(LIMIT_SECONDS),
            "FARM_MAX_LOG_BYTES": str(LOG_LIMIT_BYTES),
        },
    )
    yield from running(stack)


def ticking_source(base: str, marker: str) -> bytes:
    return dockerfile_archive(
        f"FROM {base}\nRUN for i in $(seq 1 120); do echo {marker} $i; sleep 1; done\n"
    )


def processes_with(marker: str) -> list[str]:
    listing = subprocess.run(
        ["ps", "-eo", "args"], capture_output=True, text=True, check=True
    )
    return [line for line in listing.stdout.splitlines() if marker in line]


def ended(http: requests.Session, url: str) -> dict:
    """The build at ``url`` once it ended (or as it is after two minutes)."""
    deadline = time.monotonic() + 120
    while True:
        build: dict = http.get(url, timeout=10).json()
        if build["state"] in {"succeeded", "failed", "cancelled"}:
            return build
        if time.monotonic() > deadline:
            return build
        time.sleep(0.5)


def test_a_build_over_the_time_limit_is_stopped_and_counted_as_timeout(
    limited_farm, tiny_image
):
    http = limited_farm.api_session()
    api = f"{limited_farm.web_url}/api/v1/builds"
    marker = f"tick-{uuid.uuid4().hex}"
    build_id = http.post(
        api,
        timeout=30,
        files={"archive": ("s.tar.gz", ticking_source(tiny_image, marker))},
    ).json()["id"]

    build = ended(http, f"{api}/{build_id}")
    assert build["state"] == "failed"
    assert build["error"]["code"] == "timed_out"
    assert f"limit of {LIMIT_SECONDS}s" in build["error"]["message"]
    assert LIMIT_SECONDS <= build["duration_seconds"] < LIMIT_SECONDS + 15
    log = http.get(f"{api}/{build_id}/log", timeout=10).json()["lines"]
    assert any(f"{marker} 2" in line for line in log)  # it did print meanwhile
    time.sleep(3)
    assert processes_with(marker + " ") == []  # the RUN step is gone from the engine

    metrics = requests.get(f"{limited_farm.web_url}/metrics", timeout=10).text
    timed_out = [
        line
        for line in metrics.splitlines()
        if line.startswith('farm_builds_total{failure="timeout",state="failed"}')
        or line.startswith('farm_builds_total{state="failed",failure="timeout"}')
    ]
    assert timed_out and float(timed_out[0].split()[-1]) >= 1


def test_a_build_whose_log_passes_the_limit_is_stopped(limited_farm, tiny_image):
    http = limited_farm.api_session()
    api = f"{limited_farm.web_url}/api/v1/builds"
    marker = f"chatty-{uuid.uuid4().hex}"
    line = f"{marker} " + "x" * 60
    source = dockerfile_archive(
        f"FROM {tiny_image}\n"
        f'RUN i=0; while [ $i -lt 20000 ]; do echo "{line} $i"; i=$((i+1)); done\n'
    )
    build_id = http.post(
        api, timeout=30, files={"archive": ("s.tar.gz", source)}
    ).json()["id"]
    build = ended(http, f"{api}/{build_id}")
    assert build["state"] == "failed"
    assert build["error"]["code"] == "log_too_large"
    text = http.get(f"{api}/{build_id}/log", timeout=10).text
    assert LOG_LIMIT_BYTES / 2 < len(text) < LOG_LIMIT_BYTES * 1.5
    assert "FARM_MAX_LOG_BYTES" in text


IMAGE_LIMIT_BYTES = 20 * 1024**2
FILL_BYTES = 1024**3


@pytest.fixture(scope="module")
def engine_free_bytes(engine_url) -> int:
    api = docker.APIClient(base_url=engine_url)
    try:
        disk = os.statvfs(api.info()["DockerRootDir"])
    finally:
        api.close()
    return disk.f_bavail * disk.f_frsize


@pytest.fixture(scope="module")
def disk_farm(services, engine_free_bytes) -> Iterator[LocalFarm]:
    """Its floor lies 400 MB under the free space now: writing 1 GB crosses it."""
    stack = services.farm(
        "disk-limits",
        nodes=("node-disk",),
        env={
            "FARM_MAX_IMAGE_BYTES": str(IMAGE_LIMIT_BYTES),
            "FARM_MIN_FREE_DISK_BYTES": str(engine_free_bytes - 400 * 1024**2),
            "FARM_STAGE_CACHE": "false",
        },
    )
    yield from running(stack)


def build_in(stack: LocalFarm, dockerfile: str) -> dict:
    http = stack.api_session()
    api = f"{stack.web_url}/api/v1/builds"
    answer = http.post(
        api, timeout=30, files={"archive": ("s.tar.gz", dockerfile_archive(dockerfile))}
    )
    assert answer.status_code == 202, answer.text
    return ended(http, f"{api}/{answer.json()['id']}")


def test_an_image_over_the_size_limit_is_not_pushed(disk_farm, tiny_image):
    marker = uuid.uuid4().hex
    build = build_in(
        disk_farm,
        f"FROM {tiny_image}\nRUN echo {marker} && head -c 30000000 /dev/zero > /big\n",
    )
    assert build["state"] == "failed"
    assert build["error"]["code"] == "image_too_large"
    assert "FARM_MAX_IMAGE_BYTES" in build["error"]["message"]
    assert build["image"] is None


def test_a_build_filling_the_engines_disk_is_stopped_while_it_writes(
    disk_farm, tiny_image, engine_free_bytes
):
    marker = f"fill-{uuid.uuid4().hex}"
    build = build_in(
        disk_farm,
        f"FROM {tiny_image}\n"
        f"RUN echo {marker} && head -c {FILL_BYTES} /dev/zero > /fill && sleep 60\n",
    )
    assert build["state"] == "failed"
    assert build["error"]["code"] == "disk_full"
    assert "FARM_MIN_FREE_DISK_BYTES" in build["error"]["message"]
    assert build["duration_seconds"] < 50  # stopped, not left to its sleep
    time.sleep(3)
    assert processes_with(marker + " ") == []
