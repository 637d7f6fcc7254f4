"""``edgectl deploy --local``: built artifact -> rendered repository -> running server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgectl.builder import artifact_dir, read_manifest
from edgectl.config import EdgectlConfig
from edgectl.errors import EdgectlError
from edgectl.recipe import load_recipe
from edgectl.repository import ServedModel, render_repository
from edgectl.server import LocalTriton, ServerState


def served_model(config: EdgectlConfig) -> ServedModel:
    """The configured model, resolved to its built artifact."""
    model = config.model
    artifact = model.artifact
    if artifact is None:
        artifact = artifact_dir(load_recipe(model.recipe))
    artifact = Path(artifact).expanduser().resolve()
    if not artifact.is_dir():
        raise EdgectlError(
            f"model.artifact {artifact} does not exist; "
            f"build it with `edgectl build {model.recipe}`"
        )
    serving = read_manifest(artifact)["serving"]
    return ServedModel(
        name=model.name,
        engine=model.engine,
        engine_dir=artifact,
        tokenizer_dir=artifact,
        end_id=int(serving["end_id"]),
        pad_id=int(serving["pad_id"]),
    )


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
    return server.start(repository, [config.model.name], progress)
