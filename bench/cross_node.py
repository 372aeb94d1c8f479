"""Two nodes sharing one layer cache: cross-node rebuilds and builds in parallel.

Starts its own farm with two nodes, each a worker on its own engine (``bench0`` and
``bench1``), and measures in one run:

* for each example: a cold build on node A, then the same source on node B after B's
  engine dropped all its build cache, so B can only use what A left in the registry;
* 40 small builds one after another on one node, then 40 others at once on both.

Run: .venv/bin/python -m bench.cross_node [example ...]
"""

from __future__ import annotations

import io
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import docker

from bench.farm_vs_docker import (
    EXAMPLES,
    bench_farm,
    farm_build,
    seed_base_images,
    start_bench,
)
from farm.local.stack import LocalFarm, Node

SMALL_BUILDS = 40
SMALL_IMAGE = "farm-base/busybox:latest"  # node B pulls it from the registry


def submit(stack: LocalFarm, dockerfile: str, *, queue: str) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    response = stack.api_session().post(
        f"{stack.web_url}/api/v1/builds",
        timeout=60,
        data={"queue": queue},
        files={"archive": ("s.tar.gz", buffer.getvalue())},
    )
    response.raise_for_status()
    return response.json()["id"]


def wait_all(stack: LocalFarm, build_ids: list[str]) -> None:
    pending = set(build_ids)
    while pending:
        for build_id in list(pending):
            build = (
                stack.api_session()
                .get(f"{stack.web_url}/api/v1/builds/{build_id}", timeout=10)
                .json()
            )
            if build["state"] in {"succeeded", "failed", "cancelled"}:
                if build["state"] != "succeeded":
                    raise RuntimeError(f"{build_id}: {build['error']}")
                pending.discard(build_id)
        time.sleep(0.1)


def small_dockerfile(index: int, run: str) -> str:
    return f"FROM {SMALL_IMAGE}\nRUN echo {run}-{index} > /id && sleep 1\n"


def cross_node(
    stack: LocalFarm, examples: list[str], run: str
) -> list[tuple[str, float, float, int, int]]:
    rows = []
    engines = [docker.APIClient(base_url=node.engine_url) for node in stack.nodes]
    for name in examples:
        for api in engines:
            api.prune_builds(all=True)
        tag = f"bench-{run}/{name}:1"
        cold, on_a = farm_build(stack, EXAMPLES / name, tag, queue="a")
        engines[1].prune_builds(all=True)
        warm, on_b = farm_build(stack, EXAMPLES / name, tag, queue="b")
        assert on_a["worker"] == "node-a" and on_b["worker"] == "node-b"
        rows.append((name, cold, warm, on_b["steps_cached"], on_b["steps_total"]))
        print(f"{name}: done", flush=True)
    return rows


def parallel(stack: LocalFarm, run: str) -> tuple[float, float]:
    started = time.monotonic()
    for index in range(SMALL_BUILDS):
        wait_all(
            stack,
            [submit(stack, small_dockerfile(index, run), queue="a")],
        )
    one_by_one = time.monotonic() - started
    started = time.monotonic()
    ids = [
        submit(stack, small_dockerfile(index, run + "-p"), queue="builds")
        for index in range(SMALL_BUILDS)
    ]
    wait_all(stack, ids)
    return one_by_one, time.monotonic() - started


@dataclass(frozen=True)
class Outcome:
    """Per example: (name, cold on A, on B, steps cached on B, steps on B); and
    the 40 small builds one after another and at once."""

    rows: list[tuple[str, float, float, int, int]]
    one_by_one: float
    at_once: float

    @property
    def cross_ratio(self) -> float:
        """All examples together: time on node B over time cold on node A."""
        return sum(r[2] for r in self.rows) / sum(r[1] for r in self.rows)

    @property
    def cached_share(self) -> float:
        return sum(r[3] for r in self.rows) / max(sum(r[4] for r in self.rows), 1)


def main() -> int:
    report(measure(start_bench(__doc__ or "")))
    return 0


def measure(examples: list[str]) -> Outcome:
    """Start a two-node farm, run both measurements, stop the farm."""
    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="farm-bench-") as state:
        stack = bench_farm(
            Path(state),
            (
                Node("node-a", "bench0", "builds,a"),
                Node("node-b", "bench1", "builds,b"),
            ),
            {"FARM_QUEUES": "builds,a,b"},
        )
        stack.start_services()
        try:
            seed_base_images(stack).close()
            stack.start_farm()  # node B pulls the base images it lacks here
            rows = cross_node(stack, examples, run)
            one_by_one, at_once = parallel(stack, run)
        finally:
            stack.stop()
    return Outcome(rows, one_by_one, at_once)


def report(outcome: Outcome) -> None:
    print(
        "\n| example | cold on node A | node B, shared cache only | ratio |"
        " steps cached on B |"
    )
    print("|---|---|---|---|---|")
    for name, cold, warm, cached, total in outcome.rows:
        print(
            f"| {name} | {cold:.2f} s | {warm:.2f} s | {warm / cold:.2f}× | "
            f"{cached}/{total} ({100 * cached / max(total, 1):.0f}%) |"
        )
    print(
        f"\nall examples: node B {outcome.cross_ratio:.2f}× of the cold time, "
        f"{100 * outcome.cached_share:.0f}% of the steps cached"
    )
    print(
        f"{SMALL_BUILDS} small builds: one after another on one node "
        f"{outcome.one_by_one:.1f} s; at once on two nodes {outcome.at_once:.1f} s "
        f"({outcome.at_once / outcome.one_by_one:.2f}×)"
    )


if __name__ == "__main__":
    sys.exit(main())
