"""The build list with 10,000 builds against 100: the page and the API, first page,
a deep page and one project, and a scrape of /metrics, each the median of 20 requests
through the real app on a database of its own (SQLite here; the queries are the same
on PostgreSQL) and a Redis of its own. The builds' times are spread over the last
30 days, as a farm's history would be; the first scrape of /metrics, which reads the
whole history, is timed on its own.

Run: .venv/bin/python -m bench.list_pages
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from farm.buildspec import ArchiveSource, parse_spec
from farm.config import Settings
from farm.ledger import BuildLedger
from farm.local.process import free_port
from farm.local.redis import LocalRedis
from farm.models import Build, BuildStage, BuildState
from farm.tokens import TokenService
from web.app import create_app

SIZES = (100, 10_000)
HISTORY = timedelta(days=30)
PER_PROJECT = 50  # so that one project's page holds as many builds at either size
REQUESTS = 20
STEPS = [
    {
        "name": f"[build {n}/12] RUN step {n}",
        "stage": "build",
        "internal": False,
        "cached": n % 2 == 0,
        "duration_seconds": 0.5,
        "instruction": "RUN",
    }
    for n in range(1, 13)
]


def fill(ledger: BuildLedger, count: int) -> None:
    ids = []
    for index in range(count):
        spec = parse_spec(
            {"tags": [f"team-{index % (count // PER_PROJECT)}/app:{index}"]},
            ArchiveSource(sha256=f"{index:064x}", size_bytes=1),
        )
        build = ledger.create(spec, queue="builds", submitted_by="bench")
        ledger.claim(build.id, worker="bench")
        ledger.record_steps(build.id, STEPS)
        ledger.record_stages(
            build.id,
            [
                BuildStage(stage="build", role="builder", duration_seconds=6.0),
                BuildStage(stage="app", role="final", duration_seconds=0.5),
            ],
        )
        ledger.finish(
            build.id,
            BuildState.SUCCEEDED,
            log_text="done\n",
            image_size_bytes=10 * 1024**2,
            push_seconds=0.3,
        )
        ids.append(build.id)
    spread_over_history(ledger, ids)


def spread_over_history(ledger: BuildLedger, ids: list[str]) -> None:
    """Move the builds' times back, evenly over :data:`HISTORY`, in their order."""
    now = datetime.now(UTC)
    step = HISTORY / len(ids)
    with ledger.engine.begin() as connection:
        for index, build_id in enumerate(ids):
            ended = now - step * (len(ids) - index)
            connection.execute(
                update(Build)
                .where(Build.id == build_id)
                .values(
                    created_at=ended - timedelta(seconds=7),
                    started_at=ended - timedelta(seconds=6),
                    finished_at=ended,
                )
            )


def timed(client: object, path: str, token: str) -> float:
    seconds = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        response = client.get(  # type: ignore[attr-defined]
            path, headers={"Authorization": f"Bearer {token}"}
        )
        seconds.append(time.perf_counter() - started)
        assert response.status_code == 200, (path, response.status_code)
    return statistics.median(seconds)


def measure(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="farm-bench-list-") as folder:
        redis_server = LocalRedis(Path(folder) / "redis", port=free_port())
        redis_server.start()
        try:
            return measure_with(count, Path(folder), redis_server.url)
        finally:
            redis_server.stop()


def measure_with(count: int, folder: Path, redis_url: str) -> dict[str, float]:
    url = f"sqlite:///{folder / 'farm.db'}"
    ledger = BuildLedger.from_url(url)
    ledger.create_tables()
    started = time.perf_counter()
    fill(ledger, count)
    print(f"{count} builds recorded in {time.perf_counter() - started:.1f} s")
    _, token = TokenService(ledger).create("bench", ["read"])
    settings = Settings(database_url=url, redis_url=redis_url, secret_key="bench")
    client = create_app(settings).test_client()
    middle = max(1, count // 50 // 2)
    project = "team-1/app"  # 50 builds at either size
    started = time.perf_counter()
    client.get("/metrics")
    first_scrape = time.perf_counter() - started
    return {
        "page, first 50": timed(client, "/", token),
        "page, the middle of the list": timed(client, f"/?page={middle}", token),
        "page, one project": timed(client, f"/?project={project}", token),
        "API, first 50": timed(client, "/api/v1/builds", token),
        "API, one project": timed(client, f"/api/v1/builds?project={project}", token),
        "/metrics": timed(client, "/metrics", token),
        "/metrics, a process's first scrape": first_scrape,
    }


def main() -> int:
    small, large = (measure(count) for count in SIZES)
    print(f"\n| request | {SIZES[0]} builds | {SIZES[1]} builds | ratio |")
    print("|---|---|---|---|")
    for (name, fast), slow in zip(small.items(), large.values(), strict=True):
        print(
            f"| {name} | {fast * 1000:.1f} ms | {slow * 1000:.1f} ms | "
            f"{slow / fast:.2f}× |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
