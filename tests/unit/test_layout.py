"""The package's shape: what runs inside tritonserver imports only ``edgectl.runtime``,
``edgectl.runtime`` imports nothing from the control side, and no module imports itself
back through a cycle. Imports inside functions count too: they run in the same process.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "control" / "edgectl"
MODELS = sorted((REPO_ROOT / "model_repository").glob("*/1/model.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for path in PACKAGE.rglob("*.py")
        if "_data" not in path.relative_to(PACKAGE).parts
    }


def edgectl_imports(path: Path, known: set[str]) -> set[str]:
    """Every ``edgectl`` module ``path`` imports, at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from edgectl.x import y`` imports the submodule edgectl.x.y when there is one.
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in known
                else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name == "edgectl" or name.startswith("edgectl."))
    return found


def test_the_walker_sees_lazy_and_from_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import os\nfrom edgectl.runtime import engine\n"
        "def f():\n    from edgectl.build.recipe import Recipe\n"
    )
    known = {"edgectl.runtime.engine", "edgectl.build.recipe"}
    assert edgectl_imports(source, known) == known


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.parent.parent.name)
def test_triton_models_import_only_the_runtime(model: Path) -> None:
    outside = {
        name
        for name in edgectl_imports(model, set(package_modules()))
        if not name.startswith("edgectl.runtime")
    }
    assert not outside, f"{model} imports {sorted(outside)}: only edgectl.runtime runs in Triton"


def test_the_runtime_imports_nothing_from_the_control_side() -> None:
    modules = package_modules()
    offenders = {
        name: sorted(
            i for i in edgectl_imports(path, set(modules)) if not i.startswith("edgectl.runtime")
        )
        for name, path in modules.items()
        if name.startswith("edgectl.runtime")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in ``graph`` as a path that returns to its start, else None."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return visiting[visiting.index(node) :] + [node]
        if node in done:
            return None
        visiting.append(node)
        for nxt in sorted(graph.get(node, ())):
            cycle = visit(nxt)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_inside_edgectl() -> None:
    modules = package_modules()
    graph = {
        name: {i for i in edgectl_imports(path, set(modules)) if i in modules and i != name}
        for name, path in modules.items()
    }
    assert import_cycle(graph) is None


def test_every_subpackage_says_what_it_is_for() -> None:
    for init in PACKAGE.rglob("__init__.py"):
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert docstring, f"{init} needs a one-line docstring saying what the package is for"
