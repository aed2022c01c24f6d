"""The committed dashboard and manifests agree with the code (README, "Operations")."""

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

from temporal_executor.schemas.config import Settings
from temporal_executor.telemetry import metrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy/observability/grafana/dashboards/temporal-executor.json"
KUBERNETES = ROOT / "deploy/kubernetes"
# Prefixes of metrics others define: the Temporal SDK's and prometheus-client's process ones.
FOREIGN = ("temporal_", "process_")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def our_sample_names() -> set[str]:
    assert metrics.MESSAGES_CONSUMED is not None  # defined at import
    names = set()
    for family in REGISTRY.collect():
        for suffix in SUFFIXES.get(family.type, ()):
            names.add(family.name + suffix)
    return names


def test_every_metric_the_dashboard_plots_is_one_the_processes_export() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(expressions) > 20
    used = {
        name
        for expr in expressions
        for name in re.findall(
            r"\b([a-z_]+(?:_total|_bucket|_sum|_count|_bytes|_messages))\b", expr
        )
        if name.startswith(("temporal_executor_", "gen_ai_"))
    }
    ours = our_sample_names()
    assert used, "no metric of ours on the dashboard"
    assert used - ours == set()
    # And every metric of ours is on it, in one form or another.
    families = {
        f.name for f in REGISTRY.collect() if f.name.startswith(("temporal_executor_", "gen_ai_"))
    }
    plotted = " ".join(expressions)
    assert [f for f in families if f not in plotted] == []


def manifests() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(KUBERNETES.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document and "kind" in document
    ]


def test_kubernetes_probes_use_the_port_the_configmap_serves_on() -> None:
    documents = manifests()
    [configmap] = [d for d in documents if d["kind"] == "ConfigMap"]
    settings = Settings.model_validate(yaml.safe_load(configmap["data"]["config.yaml"]))
    port = settings.observability.port
    assert port is not None
    assert settings.observability.host == "0.0.0.0"
    deployments = [d for d in documents if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {
        "temporal-executor-bridge",
        "temporal-executor-worker",
    }
    for deployment in deployments:
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["ports"] == [{"name": "metrics", "containerPort": port}]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert container["resources"]["requests"]["memory"].endswith("Mi")
    kinds = {d["kind"] for d in documents}
    assert {"PodDisruptionBudget", "Service"} <= kinds
