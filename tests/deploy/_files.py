"""Reading the deployment files the way their tools do, for the checks in this package.

Only the parts the tests need: YAML documents (PyYAML), compose's ``${VAR:-default}``
interpolation and ``<<`` merges (PyYAML resolves merges itself), and the mapping from a
``FABRIC_*`` environment name to the ``NodeSettings`` field it sets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"

PREFIX = "FABRIC_"
# Not NodeSettings fields: FABRIC_URL is read by agents and `fabric status`, not by the node.
AGENT_ONLY = frozenset({"FABRIC_URL"})

_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


def yaml_module() -> Any:
    """PyYAML, or skip: it is not (yet) a declared dev dependency."""
    return pytest.importorskip("yaml")


def yaml_files() -> list[Path]:
    return sorted([*COMPOSE.glob("*.y*ml"), *KUBERNETES.glob("*.y*ml")])


def load_documents(path: Path) -> list[Any]:
    """Every non-empty document of a YAML file."""
    yaml = yaml_module()
    with path.open() as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable syntax: ``${X}``, ``${X:-default}``, ``${X-default}``, ``${X:?err}``.

    Raises:
        KeyError: a required variable (``:?``/``?``) or a bare ``${X}`` missing from env.
    """

    def repl(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        if name in env and (env[name] or op not in (":-", ":?")):
            return env[name]
        if op in (":-", "-"):
            return arg or ""
        raise KeyError(f"${{{name}}} is required: {arg or 'unset'}")

    return _INTERPOLATION.sub(repl, value.replace("$$", "\0")).replace("\0", "$")


def field_path(env_name: str) -> list[str]:
    """``FABRIC_POOL__THRESHOLD`` -> ``["pool", "threshold"]``."""
    assert env_name.startswith(PREFIX), env_name
    return env_name[len(PREFIX) :].lower().split("__")


def unknown_setting(env_name: str) -> str | None:
    """Why ``env_name`` sets no NodeSettings field, or None when it does."""
    from pydantic import BaseModel

    from fabric.config import NodeSettings

    if env_name in AGENT_ONLY:
        return None
    model: type[BaseModel] = NodeSettings
    parts = field_path(env_name)
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None:
            return f"{env_name}: no field {'.'.join(parts[: i + 1])!r} in NodeSettings"
        annotation = info.annotation
        if i < len(parts) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return f"{env_name}: {'.'.join(parts[: i + 1])!r} has no nested fields"
            model = annotation
    return None


def unknown_toml_keys(table: Mapping[str, Any], model: Any = None, where: str = "") -> list[str]:
    """Keys of a node.toml table that are not NodeSettings (or nested model) fields."""
    from pydantic import BaseModel

    from fabric.config import NodeSettings

    model = model or NodeSettings
    bad = []
    for key, value in table.items():
        info = model.model_fields.get(key)
        if info is None:
            bad.append(f"{where}{key}")
            continue
        sub = info.annotation
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            bad += unknown_toml_keys(value, sub, f"{where}{key}.")
    return bad


def fabric_env_items(env: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for key, value in env.items():
        if key.startswith(PREFIX):
            yield key, str(value)


def clean_fabric_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No inherited FABRIC_* may leak into a settings check."""
    for key in list(os.environ):
        if key.startswith(PREFIX):
            monkeypatch.delenv(key)


def fabric_cli() -> list[str]:
    """The installed ``fabric`` console script next to this interpreter, else ``-m fabric``."""
    import sys

    script = Path(sys.executable).with_name("fabric")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fabric"]
