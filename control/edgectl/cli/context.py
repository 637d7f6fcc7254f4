"""What every command shares: the lazily loaded config, the Triton client, progress output."""

from __future__ import annotations

from pathlib import Path

import click

from edgectl.config import EdgectlConfig, load_config


def console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def progress(message: str) -> None:
    console().print(f"[cyan]>[/cyan] {message}")


class Context:
    def __init__(self, config_path: Path | None, overrides: tuple[str, ...]) -> None:
        self._path = config_path
        self._overrides = overrides
        self._config: EdgectlConfig | None = None

    @property
    def config(self) -> EdgectlConfig:
        if self._config is None:
            self._config = load_config(self._path, self._overrides)
        return self._config

    def client(self):
        from edgectl.client import TritonClient

        server = self.config.server
        return TritonClient(
            f"http://{server.host}:{server.http_port}",
            f"{server.host}:{server.grpc_port}",
            timeout_s=self.config.client.timeout_s,
        )


pass_context = click.make_pass_decorator(Context)


TARGET = click.option(
    "--target", type=click.Choice(["local", "k8s"]), default="local", show_default=True,
    help="local: the tritonserver on this machine; k8s: the Helm release (config section k8s).",
)  # fmt: skip
