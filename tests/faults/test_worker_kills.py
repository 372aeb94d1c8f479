"""Workers killed with SIGKILL in the middle of builds, again and again across a
batch: every accepted build ends exactly once, and re-runs finish on a live node.

The worker process (the child ``farm worker`` keeps running) is killed, as a crash
or an out-of-memory kill would; its supervisor starts it again, as systemd or a
container runtime would.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from farm.local.stack import LocalFarm
from tests.conftest import (
    ARTIFACTS,
    dockerfile_archive,
    running,
)

pytestmark = pytest.mark.integration

BATCH = 40
KILLS = 20
ENDED = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def farm_of_two(services) -> Iterator[LocalFarm]:
    """Web and two one-slot workers on a queue of their own, sweeping every 2 s."""
    stack = services.farm(
        "worker-kills",
        nodes=("kill-a", "kill-b"),
        env={
            "FARM_REAP_INTERVAL_SECONDS": "2",
            "FARM_WORKER_CONCURRENCY": "1",
            "FARM_STAGE_CACHE": "false",
        },
    )
    yield from running(stack)


def source(base: str, marker: str, seconds: int) -> bytes:
    return dockerfile_archive(
        f"FROM {base}\nRUN echo {marker} started && sleep {seconds} && echo done\n"
    )


def worker_child(farm: LocalFarm, node: str) -> int | None:
    """The pid of the worker process the node's supervisor runs now."""
    supervisor = next(p for p in farm.processes if p.name == f"worker-{node}")
    assert supervisor.pid is not None and supervisor.running()
    path = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children")
    children = [int(pid) for pid in path.read_text().split()]
    return children[0] if children else None


class Farm:
    def __init__(self, stack: LocalFarm) -> None:
        self.stack = stack
        self.http = stack.api_session()
        self.api = f"{stack.web_url}/api/v1"

    def submit(self, archive: bytes) -> str:
        answer = self.http.post(
            f"{self.api}/builds",
            timeout=30,
            files={"archive": ("s.tar.gz", archive)},
        )
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    def build(self, build_id: str) -> dict:
        return self.http.get(f"{self.api}/builds/{build_id}", timeout=10).json()

    def log(self, build_id: str) -> list[str]:
        answer = self.http.get(f"{self.api}/builds/{build_id}/log", timeout=10)
        return list(answer.json()["lines"])


def test_twenty_kills_lose_no_build_and_run_none_twice(farm_of_two, tiny_image):
    farm = Farm(farm_of_two)
    stamp = time.time_ns()
    ids = [
        farm.submit(source(tiny_image, f"kill-{stamp}-{n}", 3)) for n in range(BATCH)
    ]
    # One build is killed on every attempt: it must stop, failed, not loop forever.
    doomed = farm.submit(source(tiny_image, f"doomed-{stamp}", 20))

    killed: dict[str, int] = {}  # build id -> kills
    attempts_killed: set[tuple[str, int]] = set()
    killed_at: dict[str, float] = {}  # build id -> when it was last killed
    restarting: dict[str, int] = {}  # node -> the pid that was killed
    kills = 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        builds = {b: farm.build(b) for b in [*ids, doomed]}
        if all(b["state"] in ENDED for b in builds.values()):
            break
        for build_id, build in builds.items():
            node = build.get("worker")
            if build["state"] != "running" or not node:
                continue
            wanted = build_id == doomed or (kills < KILLS and build_id not in killed)
            attempt = (build_id, build["attempts"])
            child = worker_child(farm_of_two, node)
            if not wanted or attempt in attempts_killed or child is None:
                continue
            if restarting.get(node) == child:
                continue
            if not any("started" in line for line in farm.log(build_id)[-20:]):
                continue  # kill it in its RUN step, not while it is being set up
            os.kill(child, signal.SIGKILL)
            restarting[node] = child
            attempts_killed.add(attempt)
            killed_at[build_id] = time.time()
            killed[build_id] = killed.get(build_id, 0) + 1
            kills += 1
        time.sleep(0.5)

    final = {b: farm.build(b) for b in [*ids, doomed]}
    assert all(b["state"] in ENDED for b in final.values()), "builds still running"
    lost = [b for b in ids if final[b]["state"] != "succeeded"]
    pushes = {b: sum("Pushed " in line for line in farm.log(b)) for b in ids}
    twice = [b for b, count in pushes.items() if count != 1]
    rerun_after = [
        datetime.fromisoformat(final[b]["started_at"]).timestamp() - killed_at[b]
        for b in killed
        if b != doomed
    ]
    figures = {
        "builds_submitted": len(ids) + 1,
        "faults_injected": kills,
        "builds_killed": len(killed),
        "lost": len(lost),
        "pushed_twice_or_never": len(twice),
        "reruns_finished": sum(1 for b in killed if b != doomed and b not in lost),
        "doomed_attempts": final[doomed]["attempts"],
        "slowest_rerun_start_seconds": round(max(rerun_after), 1),
    }
    (ARTIFACTS / "faults-worker-kills.json").write_text(json.dumps(figures, indent=2))
    print(figures)

    assert kills >= KILLS
    assert max(rerun_after) < 180  # a lost node's builds start again within 3 min
    assert lost == [] and twice == []
    for build_id in killed:
        if build_id != doomed:
            assert final[build_id]["attempts"] >= 2
    assert final[doomed]["state"] == "failed"
    assert final[doomed]["error"]["code"] == "worker_lost"
    assert final[doomed]["attempts"] == 3 and killed[doomed] == 3
