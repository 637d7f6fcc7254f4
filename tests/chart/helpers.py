"""What the chart tests share: where the tools are, the rendered variants, running helm."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm"
TEST_VALUES = Path(__file__).resolve().parent / "values"
TOOLS_BIN = REPO / ".venv-tools" / "bin"
RELEASE, NAMESPACE = "edge", "serving"

# name -> values files (relative to the chart or this folder), in Helm's order.
VARIANTS: dict[str, tuple[Path, ...]] = {
    "cpu": (CHART / "values-cpu.yaml",),
    "gpu": (CHART / "values-gpu.yaml",),
    "cpu-full": (CHART / "values-cpu.yaml", TEST_VALUES / "cpu-full.yaml"),
    "gpu-build": (CHART / "values-gpu.yaml", TEST_VALUES / "gpu-build.yaml"),
    "gpu-gcs": (CHART / "values-gpu.yaml", TEST_VALUES / "gpu-gcs.yaml"),
    "gpu-timeslice": (CHART / "values-gpu.yaml", TEST_VALUES / "gpu-timeslice.yaml"),
    "gpu-mig": (CHART / "values-gpu.yaml", TEST_VALUES / "gpu-mig.yaml"),
}


def tool(name: str, *places: Path) -> Path:
    """A checker binary from where `make install` puts it, else PATH; fail clearly if absent."""
    for place in places:
        if (place / name).is_file():
            return place / name
    found = shutil.which(name)
    if found is None:
        where = ", ".join(str(place) for place in places)
        pytest.fail(
            f"{name} is not installed (looked in {where} and PATH): run `make install`",
            pytrace=False,
        )
    return Path(found)


def run(command: list[str | Path], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=timeout
    )


def helm_template_args(
    files: tuple[Path, ...], sets: tuple[str, ...] = (), json_sets: tuple[str, ...] = ()
) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in files:
        args += ["--values", str(path)]
    for assignment in sets:
        args += ["--set", assignment]
    for assignment in json_sets:
        args += ["--set-json", assignment]
    return args


@dataclass
class Rendered:
    """One `helm template` result: the raw text and its documents by (kind, name)."""

    text: str
    docs: list[dict[str, Any]]

    def get(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = self.all(kind, name)
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    def all(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        return [
            doc
            for doc in self.docs
            if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
        ]

    @property
    def kinds(self) -> set[str]:
        return {doc["kind"] for doc in self.docs}


def render_with(
    helm: Path, files: tuple[Path, ...], *sets: str, json_sets: tuple[str, ...] = ()
) -> Rendered:
    result = run([helm, *helm_template_args(files, sets, json_sets)])
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return Rendered(result.stdout, docs)


def render_error(
    helm: Path, files: tuple[Path, ...], *sets: str, json_sets: tuple[str, ...] = ()
) -> str:
    """helm template's error output for values that must be refused."""
    result = run([helm, *helm_template_args(files, sets, json_sets)])
    assert result.returncode != 0, f"helm accepted {sets} {json_sets}:\n{result.stdout[:500]}"
    return result.stderr
