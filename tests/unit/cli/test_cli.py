from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib import metadata

import click
import pytest
from click.testing import CliRunner

from edgectl import cli as cli_module
from edgectl.cli import cli

HEAVY_MODULES = ("torch", "openvino", "openvino_genai", "transformers", "optimum", "nncf")


def command_paths(group: click.Group = cli, prefix: tuple[str, ...] = ()):
    """Every command and subcommand as the argument path that reaches it."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from command_paths(command, path)


def resolve(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        command = command.get_command(click.Context(command), name)
    return command


def words(text: str) -> str:
    return " ".join(text.split())


ALL_PATHS = [(), *command_paths()]


def test_every_documented_command_exists():
    paths = {" ".join(path) for path in command_paths()}
    expected = {"build", "deploy", "stop", "status", "generate", "render", "models"}
    assert expected | {"models list", "models load", "models unload"} <= paths


@pytest.mark.parametrize("path", ALL_PATHS, ids=lambda path: " ".join(path) or "edgectl")
def test_help_exits_zero_and_describes_the_command(path):
    command = resolve(path)
    assert command.help, f"{' '.join(path)} has no description"
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    first_paragraph = command.help.split("\n\n")[0]
    assert words(first_paragraph) in words(result.output)


def test_short_help_option_works():
    result = CliRunner().invoke(cli, ["-h"])
    assert result.exit_code == 0
    assert "Build, deploy and drive LLM serving" in result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"], prog_name="edgectl")
    assert result.exit_code == 0
    assert result.output.strip() == f"edgectl, version {metadata.version('edgectl')}"


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--set", "server.htp_port=1", "status"], 1, "server.htp_port: unknown key"),
        (["--set", "nonsense", "status"], 1, "--set expects KEY=VALUE"),
        (["no-such-command"], 2, "No such command"),
    ],
)
def test_main_reports_errors_without_a_traceback(
    monkeypatch, capsys, tmp_path, args, code, fragment
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["edgectl", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli_module.main()
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert fragment in err
    assert "Traceback" not in err


def test_help_does_not_import_heavy_libraries(tmp_path):
    """`edgectl --help` (and every command's --help) must stay instant."""
    script = textwrap.dedent(
        f"""
        import json, sys
        import click
        from click.testing import CliRunner
        from edgectl.cli import cli

        def paths(group, prefix=()):
            for name, command in group.commands.items():
                yield (*prefix, name)
                if isinstance(command, click.Group):
                    yield from paths(command, (*prefix, name))

        runner = CliRunner()
        codes = [runner.invoke(cli, [*p, "--help"]).exit_code for p in [(), *paths(cli)]]
        heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY_MODULES!r}))
        print(json.dumps({{"codes": codes, "heavy": heavy}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["codes"] and set(report["codes"]) == {0}
    assert report["heavy"] == []


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_generate_without_a_server_says_how_to_start_one(protocol: str) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "edgectl.cli", "--set", f"server.{protocol}_port={port}",
         "generate", "--protocol", protocol, "hello"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no Triton server is answering at" in result.stderr
    assert f"{port} ({protocol})" in result.stderr
    assert "edgectl deploy --local" in result.stderr
