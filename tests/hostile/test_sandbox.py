"""What a build's RUN steps cannot do on a real engine: ask for the host's network
or privileges, mount the host's files, or reach the farm's Redis and database."""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import docker
import pytest

from tests.test_metrics import submit

pytestmark = pytest.mark.integration


def log_of(farm, build_id: str) -> str:
    answer = farm.http.get(farm.api(f"/builds/{build_id}/log"), timeout=10).json()
    return "\n".join(answer["lines"])


@pytest.fixture
def gateway(farm) -> str:
    """The engine's bridge address: the host as build containers see it."""
    api = docker.APIClient(base_url=farm.engine_url)
    try:
        return str(api.inspect_network("bridge")["IPAM"]["Config"][0]["Gateway"])
    finally:
        api.close()


@pytest.fixture
def listener(gateway) -> Iterator[int]:
    """A port of our own on the bridge address, which builds may reach: the
    control that shows the probe works."""
    server = socket.create_server((gateway, 0))
    server.settimeout(0.5)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
                connection.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


@pytest.mark.parametrize(
    "run",
    [
        "RUN --network=host true",
        "RUN --security=insecure true",
        "RUN --mount=type=bind,source=/etc,target=/host cat /host/hostname",
    ],
    ids=["host-network", "insecure", "host-mount"],
)
def test_steps_that_ask_for_the_host_fail(farm, tiny_image, tmp_path, run):
    marker = uuid.uuid4().hex
    build_id = submit(farm, tmp_path, f"FROM {tiny_image}\n# {marker}\n{run}\n")
    build = farm.wait_for(build_id)
    assert build["state"] == "failed", log_of(farm, build_id)
    assert build["error"]["code"] == "build_failed"
    assert build["error"]["message"]


def test_steps_cannot_reach_the_farms_redis_or_database(
    farm, tiny_image, tmp_path, gateway, listener
):
    env = farm.stack.env()
    redis_port = urlsplit(env["FARM_REDIS_URL"]).port
    database_port = urlsplit(env["FARM_DATABASE_URL"]).port
    targets = [
        f"127.0.0.1:{redis_port}",
        f"{gateway}:{redis_port}",
        f"127.0.0.1:{database_port}",
        f"{gateway}:{database_port}",
        f"{gateway}:{listener}",  # the control: this one answers
    ]
    probe = " ".join(targets)
    dockerfile = (
        f"FROM {tiny_image}\n"
        f"RUN for t in {probe}; do "
        'if nc -w 2 "${t%:*}" "${t#*:}" </dev/null; then echo "REACHED $t"; '
        'else echo "REFUSED $t"; fi; done; echo probed-' + uuid.uuid4().hex + "\n"
    )
    build = farm.wait_for(submit(farm, tmp_path, dockerfile))
    log = log_of(farm, build["id"])
    assert build["state"] == "succeeded", log
    assert f"REACHED {gateway}:{listener}" in log
    for target in targets[:-1]:
        assert f"REFUSED {target}" in log, log


def test_builds_running_side_by_side_cannot_reach_each_other(
    farm, tiny_image, tmp_path
):
    """Another submitter's build on the same node listens; this one tries every
    address near its own on the engine's bridge."""
    marker = uuid.uuid4().hex
    listening = submit(
        farm,
        tmp_path,
        f"FROM {tiny_image}\nRUN echo listening-{marker} && "
        'timeout 20 nc -l -p 9999 > /tmp/got; echo "GOT:$(cat /tmp/got)"\n',
    )
    deadline = time.monotonic() + 60
    while f"listening-{marker}" not in log_of(farm, listening):
        assert time.monotonic() < deadline, log_of(farm, listening)
        time.sleep(0.5)
    sender = tmp_path / "sender"
    sender.mkdir()
    probe = submit(
        farm,
        sender,
        f"FROM {tiny_image}\nRUN net=$(ip route | awk '/src/ {{print $NF}}'); "
        'net="${net%.*}"; for i in $(seq 1 12); do '
        f'echo other-{marker} | nc -w 1 "$net.$i" 9999 && echo "SENT $net.$i"; '
        "done; true\n",
    )
    sent = farm.wait_for(probe)
    listened = farm.wait_for(listening)
    assert sent["state"] == "succeeded", log_of(farm, probe)
    assert listened["state"] == "succeeded", log_of(farm, listening)
    assert re.search(r"SENT \d", log_of(farm, probe)) is None, log_of(farm, probe)
    assert f"other-{marker}" not in log_of(farm, listening)
    assert "GOT:" in log_of(farm, listening)
