"""``edgectl deploy --local``: built artifact -> rendered repository -> running server(s).

Triton first; then, unless ``openai.enabled`` is false, the OpenAI-compatible gateway
on Triton's gRPC port.  A gateway that cannot start stops Triton too, so a failed
deploy leaves nothing running.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgectl.config import EdgectlConfig
from edgectl.deploy.artifacts import served_model
from edgectl.deploy.gateway import LocalGateway
from edgectl.deploy.repository import models_to_load, render_repository
from edgectl.deploy.server import LocalTriton, ServerState


def render_for(config: EdgectlConfig) -> Path:
    server = LocalTriton(config.server)
    return render_repository(
        [served_model(config)], config.engine, server.workdir / "model_repository"
    )


def local_gateway(config: EdgectlConfig) -> LocalGateway:
    server = LocalTriton(config.server)
    return LocalGateway(config.openai, server.workdir, config.server.stop_grace_s)


def deploy_local(config: EdgectlConfig, progress: Callable[[str], None]) -> ServerState:
    server = LocalTriton(config.server)
    server.refuse_if_running()  # before rendering over the repository it serves
    repository = render_for(config)
    progress(f"rendered model repository at {repository}")
    models = models_to_load(served_model(config), config.engine)
    state = server.start(repository, models, progress)
    if config.openai.enabled:
        try:
            local_gateway(config).start(state.grpc_url, progress)
        except BaseException:
            server.stop()
            raise
    return state


def stop_local(config: EdgectlConfig) -> tuple[bool, bool]:
    """Stop the gateway, then Triton: (gateway was running, server was running)."""
    gateway = local_gateway(config).stop()
    return gateway, LocalTriton(config.server).stop()
