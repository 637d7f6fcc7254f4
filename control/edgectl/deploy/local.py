"""``edgectl deploy --local``: built artifact -> rendered repository -> running server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgectl.config import EdgectlConfig
from edgectl.deploy.artifacts import served_model
from edgectl.deploy.repository import models_to_load, render_repository
from edgectl.deploy.server import LocalTriton, ServerState


def render_for(config: EdgectlConfig) -> Path:
    server = LocalTriton(config.server)
    return render_repository(
        [served_model(config)], config.engine, server.workdir / "model_repository"
    )


def deploy_local(config: EdgectlConfig, progress: Callable[[str], None]) -> ServerState:
    server = LocalTriton(config.server)
    server.refuse_if_running()  # before rendering over the repository it serves
    repository = render_for(config)
    progress(f"rendered model repository at {repository}")
    return server.start(repository, models_to_load(served_model(config), config.engine), progress)
