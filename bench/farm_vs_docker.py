"""Time the farm against a plain ``docker build`` of the same examples on one engine.

Starts its own farm (Redis, registry, engine ``bench0``, web app, one worker) on
loopback, then for each example: clears the engine's build cache, builds it with the
Docker CLI (cold, then cached), clears the cache again and builds it through the farm's
API (cold, then cached). The farm's figures are wall time from the POST to the final
state, so they include fetching the source, pushing to the registry and recording.

Run: .venv/bin/python -m bench.farm_vs_docker [example ...]
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import docker

from farm.client import pack_folder
from farm.local.process import free_port
from farm.local.stack import LocalFarm, Node
from workers.baseimages import (
    BaseImageSettings,
    detect_debian_mirror,
    ensure_base_images,
    push_base_images,
)
from workers.baseimages.certs import local_ca_files

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_NAMES = ["web-go", "api-node", "service-python", "three-stage"]
DOCKER_CLI = "/usr/bin/docker"  # Debian's 20.10 client drives BuildKit without buildx


def plain_build(engine_url: str, folder: Path, tag: str) -> float:
    started = time.monotonic()
    subprocess.run(
        [DOCKER_CLI, "-H", engine_url, "build", "-q", "-t", tag, str(folder)],
        check=True,
        capture_output=True,
        env={"DOCKER_BUILDKIT": "1"},
    )
    return time.monotonic() - started


def farm_build(
    stack: LocalFarm, folder: Path, tag: str, *, queue: str = ""
) -> tuple[float, dict]:
    http, web_url = stack.api_session(), stack.web_url
    archive = pack_folder(folder)
    started = time.monotonic()
    response = http.post(
        f"{web_url}/api/v1/builds",
        timeout=60,
        data={"tags": tag, "queue": queue},
        files={"archive": ("src.tar.gz", archive)},
    )
    response.raise_for_status()
    build_url = f"{web_url}/api/v1/builds/{response.json()['id']}"
    while True:
        build = http.get(build_url, timeout=10).json()
        if build["state"] in {"succeeded", "failed", "cancelled"}:
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    while build.get("cache_state") == "exporting":  # let the cache reach the registry
        time.sleep(0.05)
        build = http.get(build_url, timeout=10).json()
    if build["state"] != "succeeded":
        raise RuntimeError(
            f"farm build of {folder.name} {build['state']}: {build['error']}"
        )
    return elapsed, build


def start_bench(description: str) -> list[str]:
    """Read the examples to run from the command line and set up the process."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("examples", nargs="*", default=EXAMPLE_NAMES)
    logging.basicConfig(level=logging.WARNING)
    # Stop the services we started even when told to stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return list(parser.parse_args().examples)


def main() -> int:
    report(measure(start_bench(__doc__ or "")))
    return 0


def measure(examples: list[str]) -> list[Row]:
    """Start a one-node farm, time every example both ways, stop the farm."""
    with tempfile.TemporaryDirectory(prefix="farm-bench-") as state:
        stack = bench_farm(Path(state), (Node("node-a", "bench0"),))
        stack.start()
        try:
            return run(stack, examples)
        finally:
            stack.stop()


def bench_farm(
    state: Path, nodes: tuple[Node, ...], env: dict[str, str] | None = None
) -> LocalFarm:
    """A farm of its own on free loopback ports, not yet started."""
    return LocalFarm(
        state_dir=state,
        redis_port=free_port(),
        registry_port=free_port(),
        web_port=free_port(),
        nodes=nodes,
        extra_env={"FARM_SECRET_KEY": "bench", **(env or {})},
    )


def seed_base_images(stack: LocalFarm) -> docker.APIClient:
    """Base images in the first node's engine and in the farm's registry."""
    api = docker.APIClient(base_url=stack.engine_url, timeout=3600)
    print(
        "making base images (once per machine) and seeding the registry...", flush=True
    )
    settings = BaseImageSettings(
        mirror=detect_debian_mirror(), extra_ca_files=local_ca_files()
    )
    ensure_base_images(api, settings)
    # As in a real farm, the base images' layers are in the registry already, so a
    # push sends only the layers the build made.
    push_base_images(api, stack.registry)
    return api


@dataclass(frozen=True)
class Row:
    """One example: seconds for docker build and the farm, cold and cached."""

    name: str
    docker_cold: float
    farm_cold: float
    docker_cached: float
    farm_cached: float
    farm_cached_steps: str

    @property
    def cached_allowance(self) -> float:
        """The target for a cached farm build: docker build × 1.2 + 0.3 s."""
        return self.docker_cached * 1.2 + 0.3


def run(stack: LocalFarm, examples: list[str]) -> list[Row]:
    api = seed_base_images(stack)
    rows = []
    for name in examples:
        folder = EXAMPLES / name
        api.prune_builds(all=True)
        plain_cold = plain_build(stack.engine_url, folder, f"bench/{name}:plain")
        plain_cached = plain_build(stack.engine_url, folder, f"bench/{name}:plain")
        api.prune_builds(all=True)
        farm_cold, cold = farm_build(stack, folder, f"bench/{name}:farm")
        farm_cached, cached = farm_build(stack, folder, f"bench/{name}:farm")
        rows.append(
            Row(
                name,
                plain_cold,
                farm_cold,
                plain_cached,
                farm_cached,
                f"{cached['steps_cached']}/{cached['steps_total']}",
            )
        )
        print(f"{name}: done", flush=True)
    api.close()
    return rows


def cold_ratio(rows: list[Row]) -> float:
    return sum(r.farm_cold for r in rows) / sum(r.docker_cold for r in rows)


def report(rows: list[Row]) -> None:
    print()
    print(
        "| example | docker build cold | farm cold | ratio | docker build cached |"
        " farm cached | target (×1.2 + 0.3 s) | farm cached steps |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.name} | {r.docker_cold:.2f} s | {r.farm_cold:.2f} s | "
            f"{r.farm_cold / r.docker_cold:.2f}× | {r.docker_cached:.2f} s | "
            f"{r.farm_cached:.2f} s | {r.cached_allowance:.2f} s | "
            f"{r.farm_cached_steps} |"
        )
    print(
        f"\ncold total: docker build {sum(r.docker_cold for r in rows):.1f} s, "
        f"farm {sum(r.farm_cold for r in rows):.1f} s ({cold_ratio(rows):.2f}×)"
    )


if __name__ == "__main__":
    sys.exit(main())
