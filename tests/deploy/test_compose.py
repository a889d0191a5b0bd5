"""deploy/compose: the image, and every node service's environment as a real NodeSettings."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from typing import Any
from urllib.parse import urlsplit

import pytest

from fabric.config import NodeSettings, load_settings

from ._files import (
    COMPOSE,
    ROOT,
    clean_fabric_env,
    fabric_cli,
    fabric_env_items,
    interpolate,
    load_documents,
    unknown_setting,
)

IMAGE = "agent-fabric:dev"
# What `export FABRIC_CLUSTER_KEY=...` gives docker-compose.curve.yml: a Z85 public key.
SHELL_ENV = {"FABRIC_CLUSTER_KEY": "gC2A$?7A$scH#Gxau+a/FvcYIRJhbr{[gk)m0@c9"}


def _compose(name: str = "docker-compose.yml") -> dict[str, Any]:
    (doc,) = load_documents(COMPOSE / name)
    assert isinstance(doc, dict)
    return doc


def _node_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in doc["services"].items() if v.get("image") == IMAGE}


def _environment(service: dict[str, Any], overlay: dict[str, Any] | None = None) -> dict[str, str]:
    env = dict(service.get("environment") or {})
    if overlay:
        env.update(overlay.get("environment") or {})
    return {k: interpolate(str(v), SHELL_ENV) for k, v in env.items()}


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> NodeSettings:
    clean_fabric_env(monkeypatch)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url.partition("?key=")[0])
    assert parts.scheme == "tcp" and parts.hostname and parts.port, url
    return parts.hostname, parts.port


def test_compose_has_the_cluster_the_edge_and_the_state_tier() -> None:
    doc = _compose()
    nodes = _node_services(doc)
    assert sorted(nodes) == ["edge-0", "node-0", "node-1", "node-2"]
    assert {"valkey", "otel-collector"} <= set(doc["services"])
    assert doc["services"]["otel-collector"]["profiles"] == ["otel"]
    assert "profiles" not in doc["services"]["valkey"]


def test_every_fabric_variable_is_a_node_setting() -> None:
    for overlay_file in ("docker-compose.yml", "docker-compose.curve.yml"):
        for name, service in _compose(overlay_file)["services"].items():
            for key, _ in fabric_env_items(service.get("environment") or {}):
                assert unknown_setting(key) is None, f"{overlay_file} {name}: {key}"


def test_a_misspelt_variable_would_be_caught() -> None:
    assert unknown_setting("FABRIC_SEED") is not None
    assert unknown_setting("FABRIC_POOL__TRESHOLD") is not None
    assert unknown_setting("FABRIC_SITE__X") is not None
    assert unknown_setting("FABRIC_POOL__THRESHOLD") is None


@pytest.mark.parametrize("with_curve", [False, True], ids=["plain", "curve"])
def test_each_node_environment_validates_and_forms_the_mesh(
    with_curve: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = _compose()
    overlay = _compose("docker-compose.curve.yml")["services"] if with_curve else {}
    nodes = _node_services(doc)
    settings = {
        name: _settings(_environment(svc, overlay.get(name)), monkeypatch)
        for name, svc in nodes.items()
    }
    cloud = {n for n, s in settings.items() if s.cluster}
    assert cloud == {"node-0", "node-1", "node-2"}
    for name, s in settings.items():
        assert s.name == name == nodes[name]["hostname"]
        assert s.state_backend == "redis"
        assert _host_port(s.state_url.replace("redis://", "tcp://"))[0] == "valkey"
        assert s.listen == "tcp://0.0.0.0:4250"
        if name in cloud:
            port = _host_port(s.cluster or "")[1]
            seeds = {_host_port(u)[0] for u in s.seeds}
            # Full mesh, and never itself: a node that dials itself is refused forever.
            assert seeds == cloud - {name}, name
            assert all(_host_port(u)[1] == port for u in s.seeds)
            assert not s.leaf_of
        else:
            assert not s.seeds and s.role == "edge"
            assert {_host_port(u)[0] for u in s.leaf_of} <= cloud
        dialled = s.seeds + s.leaf_of
        if with_curve:
            assert s.curve_key is not None and s.curve_allowed
            assert all(u.endswith("?key=" + SHELL_ENV["FABRIC_CLUSTER_KEY"]) for u in dialled)
        else:
            assert s.curve_key is None and all("?key=" not in u for u in dialled)


def test_curve_overlay_refuses_to_start_without_the_key() -> None:
    service = _compose("docker-compose.curve.yml")["services"]["node-0"]
    with pytest.raises(KeyError, match="FABRIC_CLUSTER_KEY"):
        {k: interpolate(str(v), {}) for k, v in service["environment"].items()}


def test_curve_overlay_secrets_are_declared() -> None:
    doc = _compose("docker-compose.curve.yml")
    declared = set(doc["secrets"])
    for name, service in doc["services"].items():
        assert set(service["secrets"]) <= declared, name
        env = service["environment"]
        assert env["FABRIC_CURVE_KEY"].removeprefix("/run/secrets/") in declared
        for path in json.loads(env["FABRIC_CURVE_ALLOWED"]):
            assert path.removeprefix("/run/secrets/") in declared


def test_otel_collector_receives_where_nodes_export() -> None:
    (config,) = load_documents(COMPOSE / "otel-collector.yaml")
    endpoint = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    env = _compose()["services"]["node-0"]["environment"]
    host, port = _host_port(env["FABRIC_OTLP_ENDPOINT"].replace("http://", "tcp://"))
    assert host == "otel-collector" and endpoint.endswith(f":{port}")
    assert config["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]


# -- Dockerfile -----------------------------------------------------------------------------


def _dockerfile() -> str:
    # Join continuation lines, the way the Dockerfile parser reads instructions.
    return re.sub(r"\\\n", " ", (COMPOSE / "Dockerfile").read_text())


def _instruction(name: str) -> list[str]:
    return [
        line.split(None, 1)[1]
        for line in _dockerfile().splitlines()
        if line.split(None, 1)[:1] == [name]
    ]


def test_dockerfile_base_user_and_extras() -> None:
    assert _instruction("FROM") == ["python:3.11-slim"]
    (user,) = _instruction("USER")
    assert not user.startswith(("0", "root"))
    assert any('pip install ".[redis,otel]"' in run for run in _instruction("RUN"))
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert {"redis", "otel"} <= set(extras)
    for copy in _instruction("COPY"):
        for src in copy.split()[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"


def test_dockerfile_env_names_are_node_settings() -> None:
    names = re.findall(r"(FABRIC_[A-Z_]+)=", " ".join(_instruction("ENV")))
    assert "FABRIC_SOCKET" in names
    for name in names:
        assert unknown_setting(name) is None, name


def test_dockerfile_entrypoint_and_healthcheck_are_real_commands() -> None:
    (entry,) = _instruction("ENTRYPOINT")
    argv = json.loads(entry)
    assert argv == ["fabric", "node"]
    (health,) = _instruction("HEALTHCHECK")
    check = json.loads(health.split("CMD", 1)[1])
    assert check[:2] == ["fabric", "status"] and "--url" in check
    socket = dict(re.findall(r"(FABRIC_SOCKET)=(\S+)", _dockerfile()))["FABRIC_SOCKET"]
    assert check[check.index("--url") + 1] == f"unix://{socket}"
    for command, option in ((argv, "--config"), (check[:2], "--url")):
        done = subprocess.run(
            [*fabric_cli(), *command[1:], "--help"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert option in done.stdout


# Top-level modules of the extras the image does not install (bench, gateway, webrtc, dev).
_NOT_IN_IMAGE = (
    "hdrh httpx aiohttp nats zenoh matplotlib numpy fastapi uvicorn starlette aiortc "
    "hypothesis pytest yaml"
)
_WITHOUT_EXTRAS = f"""
import importlib.abc, sys
blocked = set({_NOT_IN_IMAGE.split()!r})
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError("not in the image: " + name)
sys.meta_path.insert(0, Block())
sys.argv = ["fabric", *sys.argv[1:]]
from fabric.cli import main
main()
"""


@pytest.mark.parametrize("command", [["node", "--help"], ["status", "--help"]])
def test_image_commands_work_with_only_the_redis_and_otel_extras(command: list[str]) -> None:
    """The image installs .[redis,otel]: the CLI must not need bench or gateway packages."""
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRAS, *command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    bench = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRAS, "bench"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert bench.returncode == 2  # the import block is real: bench reports its missing extra
