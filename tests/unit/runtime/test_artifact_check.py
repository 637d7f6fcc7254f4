"""The CPU engine refuses incomplete or differently-built artifacts at load time."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from edgectl.runtime.openvino_engine import REQUIRED_FILES, check_artifact


def artifact(tmp_path: Path, tools: dict[str, str] | None) -> Path:
    for name in REQUIRED_FILES:
        (tmp_path / name).write_text("x", encoding="utf-8")
    if tools is not None:
        manifest = {"runtime_tools": tools}
        (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return tmp_path


def test_a_matching_artifact_passes(tmp_path: Path) -> None:
    installed = {t: metadata.version(t) for t in ("openvino", "openvino-genai")}
    check_artifact(artifact(tmp_path, installed))


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="missing openvino_model.xml, openvino_model.bin"):
        check_artifact(tmp_path)


def test_a_version_mismatch_names_expected_and_found(tmp_path: Path) -> None:
    found = metadata.version("openvino")
    with pytest.raises(RuntimeError) as err:
        check_artifact(artifact(tmp_path, {"openvino": "2020.1.0"}))
    assert f"built for openvino 2020.1.0 but {found} is installed" in str(err.value)
