"""The ``edgectl`` command line: wires one thin module per command group.

Commands parse and print; the work lives in the service packages. Heavy libraries
(torch, openvino, transformers) are imported inside commands, so ``edgectl --help``
stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgectl.cli.build import build
from edgectl.cli.context import Context, console
from edgectl.cli.generate import generate
from edgectl.cli.loadtest import loadtest
from edgectl.cli.plan import plan
from edgectl.cli.serve import deploy, models, render, status, stop
from edgectl.cli.timeslice import timeslice
from edgectl.errors import EdgectlError
from edgectl.runtime.manifest import ManifestError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


for command in (build, deploy, stop, status, models, generate, render, loadtest, plan, timeslice):
    cli.add_command(command)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except (EdgectlError, ManifestError) as err:
        from rich.markup import escape

        console().print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
