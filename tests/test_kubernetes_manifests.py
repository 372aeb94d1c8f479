"""The Kubernetes manifests in deploy/kubernetes: every core resource passes the
Kubernetes schema (strict: no unknown fields) of the oldest and newest versions we
support, the KEDA ScaledObject passes a schema of KEDA's documented fields, and the
pieces agree with each other and with the farm: settings that exist, a metric the
farm exports in a query Prometheus accepts, a drain shorter than the grace period."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from farm.builds import BuildService
from farm.config import Settings
from farm.metrics import FarmCollector

FOLDER = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
VERSIONS = ["1.29.0", "1.37.0"]


def documents() -> list[dict[str, Any]]:
    found = []
    for path in sorted(FOLDER.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


DOCS = documents()
CORE = [doc for doc in DOCS if not doc["apiVersion"].startswith("keda.sh/")]


def named(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "doc", CORE, ids=[f"{d['kind']}/{d['metadata']['name']}" for d in CORE]
)
def test_core_resources_pass_the_kubernetes_schema(doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


# KEDA's ScaledObject fields as its documentation lists them (keda.sh/v1alpha1);
# additionalProperties false, so a misspelt field fails as it would in the cluster.
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object"},
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "behavior": {"type": "object"},
                            },
                        },
                        "scalingModifiers": {"type": "object"},
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {
                                "enum": ["AverageValue", "Value", "Utilization"]
                            },
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {"type": "object"},
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_the_scaled_object_passes_kedas_schema_and_scales_the_workers():
    scaled = named("ScaledObject", "farm-worker")
    jsonschema.validate(scaled, SCALED_OBJECT)
    assert scaled["spec"]["scaleTargetRef"]["name"] == "farm-worker"
    named("Deployment", "farm-worker")  # the target exists
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    # One node's slots per replica: the threshold is the worker's concurrency.
    config = named("ConfigMap", "farm-config")["data"]
    assert trigger["metadata"]["threshold"] == config["FARM_WORKER_CONCURRENCY"]


def test_the_scaling_query_names_a_metric_the_farm_exports_and_parses(tmp_path):
    (trigger,) = named("ScaledObject", "farm-worker")["spec"]["triggers"]
    query = trigger["metadata"]["query"]
    # What a farm over an empty database exports (Redis is left unreachable).
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/farm.db", redis_url="redis://127.0.0.1:9/0"
    )
    collector = FarmCollector(BuildService.from_settings(settings))
    exported = {family.name for family in collector.collect()}
    assert "farm_queue_demand_builds" in query
    assert "farm_queue_demand_builds" in exported
    rules = tmp_path / "query.yml"
    rules.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "q", "rules": [{"record": "q", "expr": query}]}]}
        )
    )
    checked = subprocess.run(
        ["promtool", "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def farm_containers() -> list[dict[str, Any]]:
    return [
        container
        for doc in DOCS
        if doc["kind"] in ("Deployment", "StatefulSet")
        for container in doc["spec"]["template"]["spec"]["containers"]
        if container["image"] == "farm"
    ]


def test_every_farm_setting_named_is_one_the_farm_reads():
    known = {f"FARM_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    named_here = set(named("ConfigMap", "farm-config")["data"])
    named_here |= {
        key
        for key in named("Secret", "farm-secrets")["stringData"]
        if key.startswith("FARM_")
    }
    for container in farm_containers():
        named_here |= {var["name"] for var in container.get("env", [])}
    assert named_here - known == set()


def test_workers_drain_within_their_grace_period_and_run_unprivileged():
    pod = named("Deployment", "farm-worker")["spec"]["template"]["spec"]
    drain = int(named("ConfigMap", "farm-config")["data"]["FARM_DRAIN_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > drain
    containers = {c["name"]: c for c in pod["containers"]}
    assert containers["worker"]["securityContext"]["runAsNonRoot"] is True
    engine_args = containers["engine"]["args"]
    worker_env = {v["name"]: v.get("value") for v in containers["worker"]["env"]}
    engine_url = worker_env["FARM_ENGINE_URL"]
    assert f"--host={engine_url}" in engine_args
    registry = named("ConfigMap", "farm-config")["data"]["FARM_REGISTRY"]
    assert f"--insecure-registry={registry}" in engine_args


def test_the_kustomization_lists_every_manifest():
    listed = yaml.safe_load((FOLDER / "kustomization.yaml").read_text())["resources"]
    present = sorted(
        p.name for p in FOLDER.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    assert sorted(listed) == present


def test_the_engine_starts_behind_the_farm_firewall():
    """The engine container runs engine-firewall.sh (from the ConfigMap the
    kustomization makes of it) before dockerd, with the registry it lets through."""
    kustomization = yaml.safe_load((FOLDER / "kustomization.yaml").read_text())
    generated = {g["name"]: g["files"] for g in kustomization["configMapGenerator"]}
    assert generated["farm-engine-firewall"] == ["engine-firewall.sh"]
    assert (FOLDER / "engine-firewall.sh").is_file()
    pod = named("Deployment", "farm-worker")["spec"]["template"]["spec"]
    engine = next(c for c in pod["containers"] if c["name"] == "engine")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in engine["volumeMounts"] if m["name"] == "engine-firewall")
    assert volumes["engine-firewall"]["configMap"]["name"] == "farm-engine-firewall"
    assert engine["command"] == ["sh", f"{mount['mountPath']}/engine-firewall.sh"]
    assert engine["args"][:2] == ["dockerd-entrypoint.sh", "dockerd"]
    sources = {e["configMapRef"]["name"] for e in engine["envFrom"]}
    assert "farm-config" in sources  # FARM_REGISTRY, which the script opens
