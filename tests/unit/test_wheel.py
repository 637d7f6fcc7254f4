"""An installed wheel works outside this checkout: templates and data ship as package data.

The wheel is built from this checkout, installed with ``--no-deps`` into a bare folder,
and run from a temporary directory with only that folder on ``PYTHONPATH`` (the venv's
libraries stay importable). It renders the repository for a small fake artifact the test
writes (a manifest with end/pad ids), and every rendered config must parse with Triton's
``ModelConfig`` schema.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO_ROOT

MAIN = "import sys; from edgectl.cli import main; sys.argv[0] = 'edgectl'; main()"
RENDERED_MODELS = {
    "ensemble",
    "preprocessing",
    "tensorrt_llm",
    "postprocessing",
    "tensorrt_llm_bls",
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheels = tmp_path_factory.mktemp("wheels")
    target = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, REPO_ROOT],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("edgectl-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "-q", "--target", target, wheel],
        check=True, capture_output=True,
    )  # fmt: skip
    return target


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-c", MAIN, *args],
        cwd=cwd, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_the_wheel_carries_the_data_it_needs(installed: Path) -> None:
    data = installed / "edgectl" / "_data"
    for needed in (
        "model_repository/ensemble/config.pbtxt",
        "model_repository/cpu_engine/1/model.py",
        "helm/Chart.yaml",
        "build/smollm2-135m-int8.yaml",
        "build/data/heldout.txt",
        "loadtest/profiles/smoke.yaml",
        "loadtest/locustfile_grpc.py",
        "timeslice/pair-30-70.yaml",
    ):
        assert (data / needed).is_file(), needed
        assert not (data / needed).is_symlink(), f"{needed} must be a copy, not a link"


def test_installed_edgectl_renders_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    manifest = {"serving": {"end_id": 2, "pad_id": 2}}
    (artifact / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    where = run_installed(installed, workdir, "--version")
    assert where.returncode == 0, where.stderr
    probe = subprocess.run(
        [sys.executable, "-c", "import edgectl; print(edgectl.__file__)"],
        cwd=workdir, env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stdout.startswith(str(installed)), "the test must run the installed copy"

    out = tmp_path / "rendered"
    result = run_installed(
        installed, workdir, "--set", f"model.artifact={artifact}", "render", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr

    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    rendered = {path.parent.name: path for path in out.glob("*/config.pbtxt")}
    assert set(rendered) == RENDERED_MODELS
    for name, path in rendered.items():
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        assert config.name == name
    assert (out / "tensorrt_llm" / "1" / "model.py").is_file()
