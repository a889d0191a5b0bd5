"""Every YAML file under deploy/ parses, and every document has a shape its tool accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._files import DEPLOY, load_documents, yaml_files, yaml_module


def test_there_are_yaml_files_to_check() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in yaml_files()}
    assert {"compose/docker-compose.yml", "kubernetes/cloud-statefulset.yaml"} <= names


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_yaml_parses_to_mappings(path: Path) -> None:
    docs = load_documents(path)
    assert docs, f"{path} holds no document"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is {type(doc).__name__}, not a mapping"


def test_broken_yaml_is_reported(tmp_path: Path) -> None:
    """The parse check above can fail: a tab-indented mapping is a YAML error."""
    yaml = yaml_module()
    bad = tmp_path / "bad.yaml"
    bad.write_text("a:\n\t b: 1\n")
    with pytest.raises(yaml.YAMLError):
        load_documents(bad)
