"""The monitoring in deploy/monitoring, proven against a real Prometheus (Debian's)
scraping the real farm after real builds: a failed one, a two-stage one and the
same again from cache."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import yaml

from farm.local.process import ServiceProcess, free_port, port_open, wait_until
from tests.conftest import ARTIFACTS
from tests.test_alert_rules import MONITORING, RULES, alert_signal, rules
from tests.test_end_to_end import archive_of

pytestmark = pytest.mark.integration

DASHBOARD = MONITORING / "grafana" / "farm-dashboard.json"


def panel_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_promtool_accepts_the_rules_and_the_config():
    for check in (
        ["rules", str(RULES)],
        ["config", str(MONITORING / "prometheus.yml")],
    ):
        done = subprocess.run(
            ["promtool", "check", *check], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_is_a_grafana_dashboard_with_a_query_in_every_panel():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    panels = dashboard["panels"]
    assert panels[0]["type"] == "row"  # every graph sits in a section
    ids = [panel["id"] for panel in panels]
    assert len(set(ids)) == len(ids)
    for panel in panels:
        assert panel["type"] in ("row", "timeseries") and panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        if panel["type"] == "timeseries":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
            assert panel["datasource"]["uid"] == "${datasource}"
    # Graphs tile the grid: none overlaps another, none spills past 24 columns.
    cells = set()
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another"
                cells.add((x, y))


@pytest.fixture(scope="module")
def prometheus(farm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("prometheus")
    shutil.copy(RULES, folder / RULES.name)
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["static_configs"] = [
        {"targets": [farm.web_url.removeprefix("http://")]}
    ]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    server = ServiceProcess(
        "prometheus",
        [
            "prometheus",
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log_path=ARTIFACTS / "logs" / "prometheus.log",
    )
    server.start()
    try:
        wait_until(
            lambda: port_open(port),
            timeout_seconds=60,
            what="prometheus",
            log_path=server.log_path,
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def query(prometheus: str, expr: str) -> list:
    answer = requests.get(
        f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10
    ).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def finite(series: list) -> list[float]:
    """The values of a query's answer that are numbers (not NaN or infinite)."""
    values = [float(one["value"][1]) for one in series]
    return [value for value in values if math.isfinite(value)]


def family_of(sample_name: str | None) -> str:
    """A pattern for a family in PromQL, whichever of its series a query names."""
    if sample_name is None:
        return r"(?!)"  # matches nothing
    family = re.sub(r"_(bucket|count|sum)$", "", sample_name)
    return rf"(?<![\w:]){re.escape(family)}(_bucket|_count|_sum)?(?![\w:])"


def build(farm, folder: Path, dockerfile: str) -> dict:
    (folder / "Dockerfile").write_text(dockerfile)
    response = farm.http.post(
        farm.api("/builds"),
        files={"archive": ("a.tar.gz", archive_of(folder))},
        timeout=30,
    )
    return farm.wait_for(response.json()["id"])


def scraped_since(prometheus: str, since: float, scrapes: int) -> bool:
    """Whether Prometheus scraped the farm at least ``scrapes`` times after the
    Unix time ``since``."""
    window = max(1, int(time.time() - since) + 1)
    samples = query(prometheus, f'up{{job="farm"}}[{window}s]')
    stamps = [t for t, up in samples[0]["values"] if up == "1"] if samples else []
    return len([t for t in stamps if t > since]) >= scrapes


def wait_for_scrapes(check: Callable[[], bool]) -> None:
    wait_until(
        check,
        timeout_seconds=60,
        what="prometheus scraping the farm",
        log_path=ARTIFACTS / "logs" / "prometheus.log",
    )


def test_every_panel_and_alert_reads_real_data(farm, tiny_image, prometheus, tmp_path):
    # Rates and quantiles need the builds to happen between scrapes.
    began = time.time()
    wait_for_scrapes(lambda: scraped_since(prometheus, began, 2))
    word = uuid.uuid4().hex
    assert (
        build(farm, tmp_path, f"FROM {tiny_image}\nRUN exit 4\n# {word}\n")["state"]
        == "failed"
    )
    ok = (
        f"FROM {tiny_image} AS build\nRUN echo {word} > /out\n"
        f"FROM {tiny_image}\nCOPY --from=build /out /out\n"
    )
    assert build(farm, tmp_path, ok)["state"] == "succeeded"
    assert build(farm, tmp_path, ok)["steps_cached"] == 2  # the cached one

    built = time.time()
    wait_for_scrapes(lambda: scraped_since(prometheus, built, 3))

    for expr in panel_queries():
        assert finite(query(prometheus, expr)), f"panel query has no number: {expr}"
    failed = query(prometheus, 'sum(farm_builds_total{state="failed"})')
    assert failed and float(failed[0]["value"][1]) >= 1
    for record in [rule["record"] for rule in rules() if "record" in rule]:
        assert finite(query(prometheus, record)), f"recording rule {record} has no data"
    for rule in [rule for rule in rules() if "alert" in rule]:
        signal = alert_signal(rule)
        assert finite(query(prometheus, signal)), (
            f"{rule['alert']}: {signal!r} returned no number"
        )

    exported = {
        series["metric"]["__name__"]
        for series in query(prometheus, 'group by (__name__) ({__name__=~"farm_.+"})')
    }
    panels = " ".join(panel_queries())
    shown = " ".join(
        [panels]
        + [r["expr"] for r in rules() if re.search(family_of(r.get("record")), panels)]
    )
    unshown = {name for name in exported if not re.search(family_of(name), shown)}
    assert exported and not unshown, f"families no panel or rule shows: {unshown}"
