"""No shell, ever: subprocesses get argument lists, so user input cannot become a command."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ["control", "model_repository", "loadtest", "scripts", "benchmarks"]
SHELL_CALLS = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"}
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


def python_files() -> list[Path]:
    """Project sources: tracked or new files, not git-ignored outputs (run results, venvs)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *SOURCE_DIRS],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return sorted(ROOT / name for name in listed if name.endswith(".py"))


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def shell_findings(source: str) -> list[str]:
    findings = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        line = f"line {node.lineno}: {name}"
        if name in SHELL_CALLS:
            findings.append(f"{line} runs a shell")
        for keyword in node.keywords:
            if keyword.arg == "shell" and not (
                isinstance(keyword.value, ast.Constant) and keyword.value.value is False
            ):
                findings.append(f"{line} passes shell=")
        if name.split(".")[-1] in SUBPROCESS_CALLS and name.startswith(("subprocess", "Popen")):
            first = node.args[0] if node.args else None
            if isinstance(first, (ast.Constant, ast.JoinedStr, ast.BinOp)):
                findings.append(f"{line} gets a command string, not an argument list")
    return findings


def test_the_checker_catches_each_pattern() -> None:
    bad = (
        "import os, subprocess\n"
        "os.system('ls')\n"
        "subprocess.run('ls -l', shell=True)\n"
        "subprocess.Popen(f'helm {x}')\n"
    )
    found = shell_findings(bad)
    assert len(found) == 4, found
    assert shell_findings("import subprocess\nsubprocess.run(['ls', path], check=True)\n") == []


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_project_code_never_builds_shell_commands(path: Path) -> None:
    assert shell_findings(path.read_text(encoding="utf-8")) == []
