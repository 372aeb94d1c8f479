"""A farm with the default destination policy, shared by the hostile-input suites,
with ``git`` and ``tar`` shims first on its PATH that note every call, so "no
process ran" is observed, not assumed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from farm.local.stack import LocalFarm
from tests.conftest import running


@pytest.fixture(scope="package")
def shims(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shims")
    calls = folder / "calls.log"
    for tool in ("git", "tar"):
        real = f"/usr/bin/{tool}"
        script = folder / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\nexec {real} "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    calls.touch()
    return folder


@pytest.fixture(scope="package")
def hostile_farm(shims, services) -> Iterator[LocalFarm]:
    """Web and worker with the default policy: no allow list, nothing internal."""
    stack = services.farm(
        "hostile",
        nodes=("hostile-a",),
        env={
            "FARM_GIT_HOSTS": "",
            "FARM_CALLBACK_HOSTS": "",
            # Only so the control below can make git run without any network;
            # file:// being refused by default is covered in tests/farm.
            "FARM_ALLOW_FILE_URLS": "true",
            "PATH": f"{shims}:{os.environ['PATH']}",
        },
    )
    yield from running(stack)


@pytest.fixture(scope="package")
def bridge_address(engine_url) -> str:
    """A private address on this machine: the test engine's bridge."""
    api = docker.APIClient(base_url=engine_url)
    try:
        return str(api.inspect_network("bridge")["IPAM"]["Config"][0]["Gateway"])
    finally:
        api.close()
