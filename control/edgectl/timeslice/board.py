"""``edgectl timeslice board POLICY --repository DIR``: the slot board for a server edgectl
does not drive (the Helm chart's init container).

``timeslice apply`` renders, starts and loads models itself; in a server pod the repository
is already rendered and Triton loads its models at start.  What the pod still needs for
co-resident shares is the slot board every CPU engine step consults, written before Triton
starts.  The board's folder and the engine step names are read from the rendered repository
(each CPU engine step's ``timeslice_dir`` parameter), never assumed, so the board lands where
the engines look.  Only co-resident policies can be put in force this way: swapping loads and
unloads models, which needs the control plane.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgectl.deploy.repository import parse_model_config
from edgectl.errors import EdgectlError
from edgectl.runtime.slots import SlotBoard, SlotSpec
from edgectl.timeslice.policy import TimeslicePolicy, estimate_memory_gb


@dataclass(frozen=True)
class EngineStep:
    """A policy model's CPU engine step as the rendered repository serves it."""

    model: str  # the served ensemble
    name: str  # the engine step the board keys by
    board_dir: Path  # its timeslice_dir parameter
    model_dir: Path
    kv_cache_gb: float


@dataclass(frozen=True)
class InstalledBoard:
    board_dir: Path
    engines: dict[str, SlotSpec]  # engine step -> its slots
    memory_gb: float  # the models' estimates together (policy memory_gb or from the artifact)


def _config(repository: Path, name: str, what: str):
    path = repository / name / "config.pbtxt"
    if not path.is_file():
        raise EdgectlError(f"{what} {name!r} is not in the repository {repository} (no {path})")
    return parse_model_config(path.read_text(encoding="utf-8"), str(path))


def engine_step(repository: Path, model: str) -> EngineStep:
    """Find ``model``'s CPU engine step: the ensemble step whose config names a board folder."""
    ensemble = _config(repository, model, "policy model")
    if ensemble.platform != "ensemble":
        raise EdgectlError(f"policy model {model!r} is not an ensemble in {repository}")
    for step in ensemble.ensemble_scheduling.step:
        config = _config(repository, step.model_name, f"step of {model}")
        params = {key: value.string_value for key, value in config.parameters.items()}
        if params.get("timeslice_dir"):
            return EngineStep(
                model=model,
                name=step.model_name,
                board_dir=Path(params["timeslice_dir"]),
                model_dir=Path(params["model_dir"]),
                kv_cache_gb=float(params["kv_cache_gb"]),
            )
        if config.backend == "tensorrtllm":
            from edgectl.timeslice.service import ENFORCEMENT

            raise EdgectlError(
                f"policy model {model!r} runs on the tensorrtllm backend ({step.model_name}); "
                f"a slot board cannot share it: {ENFORCEMENT['trtllm']}"
            )
    raise EdgectlError(f"policy model {model!r}: no step of it reads a time-slicing board")


def install_board(policy: TimeslicePolicy, repository: Path) -> InstalledBoard:
    """Check ``policy`` against what ``repository`` serves, then write its slot board.

    Refused, naming the model: a model the repository does not serve, a GPU engine step, an
    ``artifact`` other than the one served, models that need more than the memory budget
    together (they are all loaded at start), and mode ``swap``.
    """
    if policy.mode == "swap":
        raise EdgectlError(
            f"policy {policy.name}: mode swap loads and unloads models, which needs the edgectl "
            "control plane (`edgectl timeslice apply`); a board alone enforces mode coresident"
        )
    repository = Path(repository)
    steps = [engine_step(repository, model.name) for model in policy.models]
    folders = {step.board_dir for step in steps}
    if len(folders) != 1:
        raise EdgectlError(
            f"policy {policy.name}: the engine steps read different boards "
            f"({', '.join(sorted(map(str, folders)))}); render the models together"
        )
    memory = 0.0
    for model, step in zip(policy.models, steps, strict=True):
        if model.artifact is not None and model.artifact.resolve() != step.model_dir.resolve():
            raise EdgectlError(
                f"policy model {model.name}: artifact {model.artifact} is not what "
                f"{step.name} serves ({step.model_dir})"
            )
        if model.memory_gb is not None:
            memory += model.memory_gb
        elif step.model_dir.is_dir():
            memory += estimate_memory_gb(step.model_dir, step.kv_cache_gb)
        else:
            raise EdgectlError(
                f"policy model {model.name}: {step.name} serves {step.model_dir}, which does "
                "not exist here, so its memory cannot be estimated (set memory_gb)"
            )
    if memory > policy.memory_budget_gb:
        raise EdgectlError(
            f"policy {policy.name}: the models need {memory:.2f} GB together but "
            f"memory_budget_gb is {policy.memory_budget_gb:g}, and every model stays loaded "
            "here (swapping needs `edgectl timeslice apply`); raise the budget or serve fewer"
        )
    engines = {
        step.name: SlotSpec(model.share, policy.slot_ms(model), model.priority)
        for model, step in zip(policy.models, steps, strict=True)
    }
    (board_dir,) = folders
    SlotBoard(board_dir).install(policy.name, engines)
    return InstalledBoard(board_dir, engines, round(memory, 3))
