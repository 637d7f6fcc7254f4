"""The ``edgectl`` command line: wires one thin module per command group.

Commands parse and print; the work lives in the service packages. Heavy libraries
(torch, openvino, transformers) are imported inside commands, so ``edgectl --help``
stays instant.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from edgectl.cli.context import Context, console
from edgectl.errors import EdgectlError

# Command name -> the module holding it: a command's module is imported only when it
# runs (or for --help), so one command never pays for the others' imports.
COMMANDS = {
    "build": "edgectl.cli.build",
    "deploy": "edgectl.cli.serve",
    "stop": "edgectl.cli.serve",
    "status": "edgectl.cli.serve",
    "render": "edgectl.cli.serve",
    "models": "edgectl.cli.serve",
    "generate": "edgectl.cli.generate",
    "loadtest": "edgectl.cli.loadtest",
    "timeslice": "edgectl.cli.timeslice",
}


class LazyGroup(click.Group):
    """A group whose commands live in the modules :data:`COMMANDS` names."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        return getattr(importlib.import_module(module), cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path),
    help="YAML config file (default: ./edgectl.yaml when present, else built-in defaults).",
)  # fmt: skip
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override one config key, e.g. --set server.http_port=9000 (repeatable).",
)  # fmt: skip
@click.version_option(package_name="edgectl")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Build, deploy and drive LLM serving on NVIDIA Triton at edge sites.

    Typical flow: `edgectl build build/smollm2-135m-int8.yaml`, `edgectl deploy --local`,
    `edgectl generate --stream "What is the capital of France?"`, `edgectl stop`.
    """
    ctx.obj = Context(config_path, overrides)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except EdgectlError as err:
        _fail(err)
    except Exception as err:
        from edgectl.runtime.manifest import ManifestError  # a user-facing error too

        if not isinstance(err, ManifestError):
            raise
        _fail(err)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


def _fail(err: Exception) -> None:
    from rich.markup import escape

    console().print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
    sys.exit(1)


if __name__ == "__main__":
    main()
