"""deploy/: the Prometheus scrape config, the Grafana dashboard and provisioning, and the
compose profile that brings them up; parsed and cross-checked (no docker here)."""

from __future__ import annotations

import json
import re
from typing import Any

from fabric.metrics import NODE_METRICS, SDK_METRICS, parse_listen

from ._files import COMPOSE, DEPLOY, load_documents

DASHBOARD = DEPLOY / "grafana" / "agent-fabric.json"
PROVISIONING = COMPOSE / "grafana" / "provisioning"


def _compose() -> dict[str, Any]:
    (doc,) = load_documents(COMPOSE / "docker-compose.yml")
    return dict(doc)


def _series() -> set[str]:
    """Every Prometheus series name the node and the SDK can export."""
    names = set()
    for name, kind, _, _ in (*NODE_METRICS, *SDK_METRICS):
        if kind == "counter":
            names.add(name + "_total")
        elif kind == "histogram":
            names |= {name + "_bucket", name + "_count", name + "_sum"}
        else:
            names.add(name)
    return names


def test_monitoring_profile_brings_up_prometheus_and_grafana() -> None:
    services = _compose()["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
        for mount in services[name]["volumes"]:
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name} mounts missing {source}"
    assert "prometheus" in services["grafana"]["depends_on"]


def test_prometheus_scrapes_every_node_on_its_metrics_port() -> None:
    (config,) = load_documents(COMPOSE / "prometheus.yml")
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    services = _compose()["services"]
    nodes = {n: s for n, s in services.items() if s.get("image") == "agent-fabric:dev"}
    assert nodes
    expected = set()
    for name, service in nodes.items():
        env = service["environment"]
        _, port = parse_listen(str(env["FABRIC_METRICS"]))
        expected.add(f"{service.get('hostname', name)}:{port}")
    assert targets == expected


def test_grafana_datasource_matches_the_dashboard() -> None:
    (ds_doc,) = load_documents(PROVISIONING / "datasources" / "prometheus.yaml")
    (source,) = ds_doc["datasources"]
    assert source["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {p["datasource"]["uid"] for p in dashboard["panels"]}
    uids |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {source["uid"]}
    (prov_doc,) = load_documents(PROVISIONING / "dashboards" / "agent-fabric.yaml")
    (prov,) = prov_doc["providers"]
    mounts = _compose()["services"]["grafana"]["volumes"]
    assert any(m.endswith(f":{prov['options']['path']}/agent-fabric.json:ro") for m in mounts)


def test_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    known = _series()
    used = set()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")"), expr
            for name in re.findall(r"\bfabric_[a-z_]+", expr):
                assert name in known, f"{panel['title']}: unknown series {name}"
                used.add(name)
    # the dashboard covers what the issue asks to watch
    for needed in ("fabric_messages_in_total", "fabric_hop_seconds_bucket",
                   "fabric_queue_depth_bytes_bucket", "fabric_slow_consumer_drops_total",
                   "fabric_pool_bytes_in_use", "fabric_peer_rtt_seconds", "fabric_peer_up",
                   "fabric_state_operations_total", "fabric_migrations_total"):
        assert needed in used, needed
