"""A worker killed in the middle of a build: the build is re-run on a live node."""

from __future__ import annotations

import io
import os
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from farm.local.process import ServiceProcess
from farm.local.stack import LocalFarm, Node
from tests.conftest import running

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_node_farm(services, tiny_image) -> Iterator[LocalFarm]:
    """Web and two workers on their own queue, sweeping for lost builds every 2 s."""
    stack = services.farm(
        "worker-loss",
        nodes=("node-x", "node-y"),
        env={"FARM_REAP_INTERVAL_SECONDS": "2", "FARM_WORKER_CONCURRENCY": "1"},
    )
    yield from running(stack)


def slow_source(base: str, marker: str) -> bytes:
    dockerfile = f"FROM {base}\nRUN echo {marker} && sleep 6 && echo slept\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    return buffer.getvalue()


def test_build_of_killed_worker_is_rerun_on_the_other(two_node_farm, tiny_image):
    api = f"{two_node_farm.web_url}/api/v1/builds"
    http = two_node_farm.api_session()
    marker = f"marker-{time.time_ns()}"
    build_id = http.post(
        api,
        timeout=30,
        files={"archive": ("s.tar.gz", slow_source(tiny_image, marker))},
    ).json()["id"]
    deadline = time.monotonic() + 60
    build = {}
    while time.monotonic() < deadline:
        build = http.get(f"{api}/{build_id}", timeout=10).json()
        log = http.get(f"{api}/{build_id}/log", timeout=10).json()["lines"]
        if build["state"] == "running" and any(marker in line for line in log):
            break
        time.sleep(0.2)
    first_worker = build["worker"]
    victim = next(
        p for p in two_node_farm.processes if p.name == f"worker-{first_worker}"
    )
    victim.stop(sig=signal.SIGKILL)
    killed_at = time.monotonic()

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        build = http.get(f"{api}/{build_id}", timeout=10).json()
        if build["state"] in {"succeeded", "failed", "cancelled"}:
            break
        time.sleep(0.5)
    assert build["state"] == "succeeded", build["error"]
    assert build["attempts"] == 2
    assert build["worker"] != first_worker
    assert time.monotonic() - killed_at < 60
    log = http.get(f"{api}/{build_id}/log", timeout=10).json()["lines"]
    assert any("stopped answering" in line for line in log)
    assert Path(victim.log_path).exists()

    # The killed node stays listed, down, so an alert on it can fire.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        nodes = node_states(two_node_farm)
        if nodes.get(first_worker) is False:
            break
        time.sleep(1)
    assert nodes[first_worker] is False and any(nodes.values())
    metrics = requests.get(f"{two_node_farm.web_url}/metrics", timeout=10).text
    assert f'farm_node_up{{node="{first_worker}"}} 0.0' in metrics
    # Nothing is known of a down node's engine: no figure rather than a 0.
    assert f'farm_node_engine_up{{node="{first_worker}"}}' not in metrics


def node_states(farm: LocalFarm) -> dict[str, bool]:
    """Each listed node's name and whether it is up."""
    answer = farm.api_session().get(f"{farm.web_url}/api/v1/nodes", timeout=10)
    return {node["name"]: node["up"] for node in answer.json()["nodes"]}


def listed_worker(farm: LocalFarm, name: str) -> tuple[ServiceProcess, int]:
    """A new node on the farm's first engine, once it is listed up: its
    supervising process and the worker's own process id."""
    node = farm.start_worker(Node(name, farm.nodes[0].engine))
    deadline = time.monotonic() + 60
    while node_states(farm).get(name) is not True:
        assert time.monotonic() < deadline, f"{name} never beat"
        time.sleep(0.5)
    assert node.pid is not None
    (worker,) = children(node.pid)
    return node, worker


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def test_a_worker_that_dies_on_its_own_is_started_again(two_node_farm, tiny_image):
    node = next(p for p in two_node_farm.processes if p.name.startswith("worker-"))
    if not node.running():  # the test above may have killed this one
        node = next(
            p
            for p in two_node_farm.processes
            if p.name.startswith("worker-") and p.running()
        )
    assert node.pid is not None
    (first,) = children(node.pid)
    os.kill(first, signal.SIGKILL)  # the worker itself, not its watcher

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        started = children(node.pid)
        if started and started != [first]:
            break
        time.sleep(0.2)
    assert started and started != [first] and node.running()
    http = two_node_farm.api_session()
    build_id = http.post(
        f"{two_node_farm.web_url}/api/v1/builds",
        timeout=30,
        files={"archive": ("s.tar.gz", slow_source(tiny_image, f"again-{first}"))},
    ).json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        build = http.get(
            f"{two_node_farm.web_url}/api/v1/builds/{build_id}", timeout=10
        ).json()
        if build["state"] in {"succeeded", "failed", "cancelled"}:
            break
        time.sleep(0.5)
    assert build["state"] == "succeeded", build["error"]


def test_a_worker_stopped_on_purpose_leaves_the_node_list(two_node_farm):
    node = next(
        p
        for p in two_node_farm.processes
        if p.name.startswith("worker-") and p.running()
    )
    name = node.name.removeprefix("worker-")
    assert node_states(two_node_farm).get(name) is True
    node.stop()  # SIGTERM: the worker finishes what it runs, then leaves
    assert name not in node_states(two_node_farm)
    assert node.popen is not None and node.popen.returncode == 0


def test_a_worker_sent_many_stop_signals_at_once_still_leaves(
    two_node_farm, tiny_image
):
    """TERM to a process group reaches the worker twice (once more from its
    supervisor); a stop signal that comes while another is being handled must
    not hang the worker. Here a flood of them, while it runs a build."""
    for other in two_node_farm.processes:  # the build must go to this one
        if other.name.startswith("worker-"):
            other.stop()
    engine = two_node_farm.nodes[0].engine
    node = two_node_farm.start_worker(Node("node-storm", engine))
    http = two_node_farm.api_session()
    api = f"{two_node_farm.web_url}/api/v1/builds"
    build_id = http.post(
        api,
        timeout=30,
        files={
            "archive": ("s.tar.gz", slow_source(tiny_image, f"storm-{time.time_ns()}"))
        },
    ).json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        build = http.get(f"{api}/{build_id}", timeout=10).json()
        if build["state"] == "running":
            break
        time.sleep(0.2)
    assert build["state"] == "running" and build["worker"] == "node-storm"
    assert node.pid is not None
    (worker,) = children(node.pid)

    # For 2 s, as fast as they go: many arrive while others are being handled.
    # The build (6 s) keeps the worker from exiting meanwhile.
    flood_until = time.monotonic() + 2
    while time.monotonic() < flood_until:
        os.kill(worker, signal.SIGTERM)
    listed = http.get(f"{two_node_farm.web_url}/api/v1/nodes", timeout=10).json()
    storm = next(n for n in listed["nodes"] if n["name"] == "node-storm")
    assert storm["up"] and storm["draining"] and storm["builds"] == [build_id]

    assert node.popen is not None
    node.popen.wait(timeout=60)  # after the build, as for one TERM
    assert node.popen.returncode == 0
    assert "node-storm" not in node_states(two_node_farm)
    build = http.get(f"{api}/{build_id}", timeout=10).json()
    assert build["state"] == "succeeded" and build["attempts"] == 1


def test_a_worker_stopped_while_waiting_for_its_engine_leaves_the_node_list(
    two_node_farm,
):
    """Stopped before it took any build (here: its engine never answered), a
    worker leaves the node list at once and exits cleanly."""
    node = two_node_farm.start_worker(Node("node-engineless", "no-such-engine"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "node-engineless" in node_states(two_node_farm):
            break
        time.sleep(0.5)
    assert node_states(two_node_farm).get("node-engineless") is True
    node.stop()
    assert node.popen is not None and node.popen.returncode == 0
    assert "node-engineless" not in node_states(two_node_farm)
    assert "stopped before taking builds" in node.log_path.read_text()


def test_a_worker_stopped_while_waiting_to_be_started_again_leaves(two_node_farm):
    """Its worker was killed; stopped during the pause before the next start, the
    supervisor exits cleanly and takes the node off the list itself."""
    node, worker = listed_worker(two_node_farm, "node-between")
    assert node.pid is not None and node.popen is not None
    os.kill(worker, signal.SIGKILL)
    while children(node.pid) == [worker]:
        time.sleep(0.05)
    assert children(node.pid) == []  # waiting its 5 s to start it again
    os.kill(node.pid, signal.SIGTERM)
    assert node.popen.wait(timeout=30) == 0
    assert "node-between" not in node_states(two_node_farm)


def test_a_worker_stopped_as_it_starts_exits_cleanly(two_node_farm):
    engine = two_node_farm.nodes[0].engine
    node = two_node_farm.start_worker(Node("node-early", engine))
    assert node.pid is not None and node.popen is not None
    deadline = time.monotonic() + 30
    while not children(node.pid):
        assert time.monotonic() < deadline, "no worker was started"
        time.sleep(0.01)
    os.kill(node.pid, signal.SIGTERM)  # before the worker has handlers of its own
    assert node.popen.wait(timeout=30) == 0
    assert "node-early" not in node_states(two_node_farm)


def test_a_worker_stopped_as_it_starts_again_leaves(two_node_farm):
    """Killed, started again, and stopped before the new run has handlers: the
    node the killed run left listed is taken off."""
    node, worker = listed_worker(two_node_farm, "node-again")
    assert node.pid is not None and node.popen is not None
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while children(node.pid) in ([], [worker]):
        assert time.monotonic() < deadline, "it was not started again"
        time.sleep(0.01)
    os.kill(node.pid, signal.SIGTERM)
    assert node.popen.wait(timeout=30) == 0
    assert "node-again" not in node_states(two_node_farm)
