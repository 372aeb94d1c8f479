"""The monitoring in deploy/monitoring, proven against a real Prometheus (Debian's)
scraping the real farm after real builds: a failed one, a two-stage one and the
same again from cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
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
    return [target["expr"] for panel in panels for target in panel["targets"]]


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
    for panel in dashboard["panels"]:
        assert panel["type"] == "timeseries" and panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])


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


def build(farm, folder: Path, dockerfile: str) -> dict:
    (folder / "Dockerfile").write_text(dockerfile)
    response = farm.http.post(
        farm.api("/builds"),
        files={"archive": ("a.tar.gz", archive_of(folder))},
        timeout=30,
    )
    return farm.wait_for(response.json()["id"])


def test_every_panel_and_alert_reads_real_data(farm, tiny_image, prometheus, tmp_path):
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

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # a few scrapes after the builds
        samples = query(prometheus, 'count_over_time(up{job="farm"}[1m])')
        if samples and float(samples[0]["value"][1]) >= 5:
            break
        time.sleep(1)

    for expr in panel_queries():
        assert query(prometheus, expr), f"panel query returned nothing: {expr}"
    failed = query(prometheus, 'sum(farm_builds_total{state="failed"})')
    assert failed and float(failed[0]["value"][1]) >= 1
    for record in [rule["record"] for rule in rules() if "record" in rule]:
        assert query(prometheus, record), f"recording rule {record} has no data"
    for rule in [rule for rule in rules() if "alert" in rule]:
        signal = alert_signal(rule)
        assert query(prometheus, signal), (
            f"{rule['alert']}: {signal!r} returned nothing"
        )
