"""Fixtures for the chart tests: the real helm, kubernetes-validate and checkov, all offline.

`make install` puts helm in .venv/bin and the two checkers in .venv-tools/bin; a test that
needs one fails (never skips) with the command that installs it, since `make test` runs it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.chart.helpers import TOOLS_BIN, VARIANTS, Rendered, render_with, tool

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.chart)


@pytest.fixture(scope="session")
def helm() -> Path:
    return tool("helm", Path(sys.executable).parent)


@pytest.fixture(scope="session")
def kubernetes_validate() -> Path:
    return tool("kubernetes-validate", TOOLS_BIN)


@pytest.fixture(scope="session")
def checkov() -> Path:
    return tool("checkov", TOOLS_BIN)


@pytest.fixture(scope="session")
def rendered(helm: Path) -> dict[str, Rendered]:
    """Every variant, rendered once per session."""
    return {name: render_with(helm, files) for name, files in VARIANTS.items()}


@pytest.fixture(scope="session")
def manifests_dir(rendered: dict[str, Rendered], tmp_path_factory) -> Path:
    """The rendered variants as files, for the command-line checkers."""
    folder = tmp_path_factory.mktemp("manifests")
    for name, result in rendered.items():
        (folder / f"{name}.yaml").write_text(result.text, encoding="utf-8")
    return folder
