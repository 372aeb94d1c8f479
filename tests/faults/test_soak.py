"""A soak: several hundred builds through two nodes, with the web app's and the
workers' memory and open files measured as they go. Both must stay flat."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.local.stack import LocalFarm
from tests.conftest import (
    ARTIFACTS,
    dockerfile_archive,
    running,
)

pytestmark = pytest.mark.integration

ROUNDS = 4
PER_ROUND = 90
ENDED = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def soak_farm(services) -> Iterator[LocalFarm]:
    stack = services.farm(
        "soak",
        nodes=("soak-a", "soak-b"),
        env={"FARM_WORKER_CONCURRENCY": "2", "FARM_STAGE_CACHE": "false"},
    )
    yield from running(stack)


def process_tree(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            found += process_tree(int(child))
    return found


def usage(stack: LocalFarm) -> dict[str, tuple[int, int]]:
    """Per farm process (web, each worker, with their children): resident memory in
    KiB and open files."""
    figures = {}
    for process in stack.processes:
        assert process.pid is not None and process.running(), process.name
        rss = files = 0
        for pid in process_tree(process.pid):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
            files += len(list(Path(f"/proc/{pid}/fd").iterdir()))
        figures[process.name] = (rss, files)
    return figures


def test_hundreds_of_builds_leave_memory_and_open_files_flat(soak_farm, tiny_image):
    http = soak_farm.api_session()
    api = f"{soak_farm.web_url}/api/v1/builds"
    stamp = uuid.uuid4().hex[:8]
    samples = []
    total = succeeded = 0
    for round_number in range(ROUNDS):
        ids = []
        for n in range(PER_ROUND):
            dockerfile = f"FROM {tiny_image}\nRUN echo {stamp}-{round_number}-{n}\n"
            answer = http.post(
                api,
                files={"archive": ("s.tar.gz", dockerfile_archive(dockerfile))},
                timeout=30,
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
            # Some follow their log to the end, as the CLI and pages do.
            if n % 10 == 0:
                http.get(f"{api}/{ids[-1]}/log", params={"follow": 1}, timeout=120)
        deadline = time.monotonic() + 600
        while True:
            builds = [http.get(f"{api}/{b}", timeout=10).json() for b in ids]
            if all(b["state"] in ENDED for b in builds):
                break
            assert time.monotonic() < deadline, "the round did not finish"
            time.sleep(2)
        total += len(ids)
        succeeded += sum(b["state"] == "succeeded" for b in builds)
        samples.append(usage(soak_farm))

    figures = {
        "builds": total,
        "succeeded": succeeded,
        "after_each_round": [
            {
                name: {"rss_kib": rss, "open_files": files}
                for name, (rss, files) in s.items()
            }
            for s in samples
        ],
    }
    (ARTIFACTS / "soak.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))
    assert succeeded == total
    # The first round warms caches and pools; from then on nothing may grow much.
    warm, last = samples[1], samples[-1]
    for name, (rss, files) in last.items():
        warm_rss, warm_files = warm[name]
        assert files <= warm_files + 8, f"{name}: open files {warm_files} -> {files}"
        assert rss <= warm_rss * 1.25 + 10_000, f"{name}: RSS {warm_rss} -> {rss} KiB"
