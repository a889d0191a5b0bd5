"""deploy/kubernetes: node.toml in the ConfigMap, the pods' environment and start script,
probes, ports and selectors, checked against the real NodeSettings and CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fabric.config import load_settings

from ._files import KUBERNETES, ROOT, clean_fabric_env, load_documents, unknown_setting

NS = "agent-fabric"
START = "exec fabric node --config /etc/agent-fabric/node.toml"
KEYS = "/etc/agent-fabric/keys"
# Stands in for `fabric node` at the end of the pods' start script: prints the settings
# the node would run with, loaded by the real load_settings from the real node.toml.
_REPORT = (
    "import json, sys; from pathlib import Path; from fabric.config import load_settings; "
    "s = load_settings(Path(sys.argv[1])); "
    "print(json.dumps(s.model_dump(mode='json')))"
)


def _objects() -> list[dict[str, Any]]:
    objs = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        objs += [dict(doc, _file=path.name) for doc in load_documents(path)]
    return objs


def _one(kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in _objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def _workloads() -> list[dict[str, Any]]:
    return [o for o in _objects() if o["kind"] in ("StatefulSet", "DaemonSet")]


def _node_workloads() -> list[dict[str, Any]]:
    return [
        w
        for w in _workloads()
        if w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == NS
    ]


def _node_container(workload: dict[str, Any]) -> dict[str, Any]:
    (c,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == "node"]
    return dict(c)


def _configmap_toml(key: str) -> str:
    return str(_one("ConfigMap", "fabric-node")["data"][key])


def _subpath_of(container: dict[str, Any]) -> str:
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"].endswith("node.toml")]
    return str(mount["subPath"])


def test_every_object_is_namespaced_and_typed() -> None:
    kinds = set()
    for obj in _objects():
        assert obj.get("apiVersion") and obj.get("kind"), obj["_file"]
        kinds.add(obj["kind"])
        if obj["kind"] not in ("Namespace", "Kustomization"):
            assert obj["metadata"]["namespace"] == NS, (obj["_file"], obj["metadata"]["name"])
    assert {"Namespace", "ConfigMap", "Secret", "Service", "StatefulSet", "DaemonSet"} <= kinds


@pytest.mark.parametrize("key", ["cloud.toml", "host.toml"])
def test_configmap_node_toml_loads(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_fabric_env(monkeypatch)
    path = tmp_path / key
    path.write_text(_configmap_toml(key))
    settings = load_settings(path)
    assert str(settings.socket) == "/run/agent-fabric/node.sock"
    assert settings.state_backend == "redis"


def test_a_wrong_key_in_node_toml_fails_to_load(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(_configmap_toml("cloud.toml") + 'seed = ["tcp://x:1"]\n')
    with pytest.raises(Exception, match="seed"):
        load_settings(path)


def test_pod_environment_names_are_node_settings() -> None:
    assert len(_node_workloads()) == 2
    for workload in _node_workloads():
        for env in _node_container(workload).get("env", []):
            if env["name"].startswith("FABRIC_"):
                assert unknown_setting(env["name"]) is None, env["name"]
        script = "\n".join(_node_container(workload).get("args", []))
        for word in script.replace("=", " ").split():
            if word.startswith(("FABRIC_", "export FABRIC_")):
                assert unknown_setting(word.removeprefix("export ")) is None, word


def _run_start_script(
    workload: str, pod_env: dict[str, str], tmp_path: Path, keys: Path | None
) -> dict[str, Any]:
    """Run the pod's start script with sh, ending in the real load_settings instead of a node."""
    obj = _one(*workload.split("/"))
    container = _node_container(obj)
    assert container["command"] == ["/bin/sh", "-c"]
    (script,) = container["args"]
    assert script.count(START) == 1 and script.rstrip().endswith(START)
    toml = tmp_path / "node.toml"
    toml.write_text(_configmap_toml(_subpath_of(container)))
    script = script.replace(START, f'exec "$PYTHON" -c "$REPORT" {toml}')
    script = script.replace(KEYS, str(keys or tmp_path / "no-keys"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    env.update(pod_env, PYTHON=sys.executable, REPORT=_REPORT)
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.fixture
def curve_keys(tmp_path: Path) -> tuple[Path, str]:
    """A keys directory laid out as the fabric-curve Secret mounts it."""
    from fabric.auth import generate_keypair, load_keypair

    public, secret = generate_keypair(tmp_path / "gen", "cluster")
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy(public, keys / "cluster.key")
    shutil.copy(secret, keys / "cluster.key_secret")
    z85 = load_keypair(secret)[0].decode()
    (keys / "public-key").write_text(z85)
    return keys, z85


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pod", ["node-0", "node-1", "node-2"])
def test_cloud_pod_seeds_every_other_pod_never_itself(pod: str, tmp_path: Path) -> None:
    s = _run_start_script("StatefulSet/node", {"FABRIC_NAME": pod}, tmp_path, None)
    domain = "fabric-peers.agent-fabric.svc.cluster.local"
    others = [f"tcp://node-{i}.{domain}:4251" for i in range(3) if f"node-{i}" != pod]
    assert s["name"] == pod and s["seeds"] == others
    assert s["cluster"] == "tcp://0.0.0.0:4251" and s["curve_key"] is None
    assert _one("StatefulSet", "node")["spec"]["replicas"] == 3
    assert _one("Service", "fabric-peers")["spec"]["clusterIP"] == "None"


@pytest.mark.timeout(60)
def test_cloud_pod_turns_curve_on_when_the_secret_is_mounted(
    tmp_path: Path, curve_keys: tuple[Path, str]
) -> None:
    keys, z85 = curve_keys
    s = _run_start_script("StatefulSet/node", {"FABRIC_NAME": "node-2"}, tmp_path, keys)
    assert len(s["seeds"]) == 2 and all(u.endswith(f":4251?key={z85}") for u in s["seeds"])
    assert s["curve_key"] == str(keys / "cluster.key_secret")
    assert s["curve_allowed"] == [str(keys / "cluster.key")]
    # The node's own check of that key material, as it runs at mesh start.
    from fabric.auth import load_keypair, resolve_public_key

    assert load_keypair(Path(s["curve_key"]))[0].decode() == z85
    assert resolve_public_key(s["curve_allowed"][0]).decode() == z85


@pytest.mark.timeout(60)
def test_host_pod_is_a_leaf_of_every_cloud_pod(tmp_path: Path) -> None:
    s = _run_start_script("DaemonSet/host-node", {"FABRIC_NAME": "worker-a"}, tmp_path, None)
    domain = "fabric-peers.agent-fabric.svc.cluster.local"
    assert s["leaf_of"] == [f"tcp://node-{i}.{domain}:4251" for i in range(3)]
    assert s["role"] == "edge" and s["cluster"] is None and not s["seeds"] and s["shm"]


def test_probes_run_fabric_status_on_the_configured_socket(tmp_path: Path) -> None:
    for workload in _node_workloads():
        container = _node_container(workload)
        path = tmp_path / "n.toml"
        path.write_text(_configmap_toml(_subpath_of(container)))
        socket = load_settings(path).socket
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = container[probe]["exec"]["command"]
            assert command == ["fabric", "status", "--url", f"unix://{socket}"], probe
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert str(socket.parent) in mounts


def test_resources_fit_a_two_core_machine() -> None:
    cpu = 0.0
    for workload in _workloads():
        for c in workload["spec"]["template"]["spec"]["containers"]:
            req, lim = c["resources"]["requests"], c["resources"]["limits"]
            assert {"cpu", "memory"} <= set(req) and {"cpu", "memory"} <= set(lim), c["name"]
            replicas = workload["spec"].get("replicas", 1)
            cpu += replicas * (
                float(req["cpu"][:-1]) / 1000 if req["cpu"].endswith("m") else float(req["cpu"])
            )
    # Everything on one 2-core host (3 cloud pods, Valkey, one host node) must be schedulable.
    assert cpu <= 1.5, cpu


def test_services_select_pods_and_name_their_ports() -> None:
    templates = [
        (w["spec"]["template"]["metadata"]["labels"], w["spec"]["template"]["spec"]["containers"])
        for w in _workloads()
    ]
    for svc in (o for o in _objects() if o["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        matched = [cs for labels, cs in templates if selector.items() <= labels.items()]
        assert matched, f"Service {svc['metadata']['name']} selects no pod"
        for port in svc["spec"]["ports"]:
            names = {p.get("name") for cs in matched for c in cs for p in c.get("ports", [])}
            assert port["targetPort"] in names, (svc["metadata"]["name"], port)


def test_host_socket_is_a_host_path_directory() -> None:
    spec = _one("DaemonSet", "host-node")["spec"]["template"]["spec"]
    (run,) = [v for v in spec["volumes"] if v["name"] == "run"]
    assert run["hostPath"] == {"path": "/run/agent-fabric", "type": "DirectoryOrCreate"}
    user = _node_container(_one("DaemonSet", "host-node"))["securityContext"]["runAsUser"]
    (init,) = spec["initContainers"]
    assert f"chown {user}:{user} /run/agent-fabric" in " ".join(init["command"])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.timeout(60)
def test_kustomize_builds_offline() -> None:
    done = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    kinds = [
        line.split(":", 1)[1].strip()
        for line in done.stdout.splitlines()
        if line.startswith("kind:")
    ]
    assert "Secret" not in kinds  # the curve Secret is a template, created by hand
    assert {"StatefulSet", "DaemonSet", "ConfigMap", "Namespace"} <= set(kinds)
