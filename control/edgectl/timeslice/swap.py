"""Swap mode of ``edgectl timeslice``: models that do not fit take turns.

``start_swap`` installs, for each served name ``M`` of the policy, an always-loaded front
model ``M`` (``model_repository/timeslice_front``) and a backing ensemble ``M_backing``
whose steps keep the usual names (``M_preprocessing``, ``M_tensorrt_llm``,
``M_postprocessing``).  Clients call ``M`` as before.  The backing ensembles start
unloaded; the scheduler inside the fronts (see :mod:`edgectl.runtime.swap`)
loads and unloads them through Triton's explicit model control as demand requires.
``swap_status`` reads the board; ``stop_swap`` unloads everything it installed.
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from edgectl.client import TritonClient
from edgectl.config import EdgectlConfig, ServerConfig
from edgectl.deploy.repository import (
    TEMPLATES,
    ServedModel,
    _render_one,
    parse_model_config,
    render_repository,
)
from edgectl.deploy.server import LocalTriton, ServerState
from edgectl.errors import EdgectlError
from edgectl.progress import Progress
from edgectl.runtime.swap import IN, PLAN_FILE, RESIDENT_PHASES, Board, SwapModel, SwapPlan
from edgectl.timeslice.policy import TimeslicePolicy, plan_models, resolved_mode

BOARD_DIR = Path("timeslice") / "swap"
FRONT_TEMPLATE = TEMPLATES / "timeslice_front"
BACKING_SUFFIX = "_backing"
UNLOAD_TIMEOUT_S = 120.0


def board_dir(workdir: Path) -> Path:
    return Path(workdir) / BOARD_DIR


def backing_name(name: str) -> str:
    return f"{name}{BACKING_SUFFIX}"


@dataclass(frozen=True)
class BackingModel(ServedModel):
    """The ensemble behind a front: its own name, but the steps of the served name."""

    front: str = ""

    @property
    def step_names(self) -> dict[str, str]:
        steps = ServedModel(
            self.front, self.engine, self.engine_dir, self.tokenizer_dir, self.end_id, self.pad_id
        ).step_names
        return {**steps, "ensemble_name": self.name}


def _client(state: ServerState) -> TritonClient:
    return TritonClient(state.http_url, state.grpc_url, timeout_s=UNLOAD_TIMEOUT_S)


def _front_io(backing_config: Path) -> str:
    """The backing ensemble's inputs and outputs, as config text for its front."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    parsed = parse_model_config(backing_config.read_text(encoding="utf-8"), str(backing_config))
    io = model_config_pb2.ModelConfig()
    io.input.extend(parsed.input)
    io.output.extend(parsed.output)
    return text_format.MessageToString(io)


def _render(
    plan: SwapPlan, backings: list[BackingModel], config: EdgectlConfig, workdir: Path
) -> Path:
    """Backing ensembles with their steps, plus one front per served name, in a scratch dir."""
    out = Path(workdir) / "timeslice" / "swap_repository"
    render_repository(backings, config.engine, out)
    for model, backing in zip(plan.models, backings, strict=True):
        values = {
            "front_name": model.name,
            "backing_name": backing.name,
            "max_batch_size": str(config.engine.max_batch_size),
            "front_io": _front_io(out / backing.name / "config.pbtxt"),
            "board_dir": str(board_dir(workdir).resolve()),
        }
        _render_one(FRONT_TEMPLATE, out / model.name, values)
    return out


def _install(rendered: Path, repository: Path) -> list[str]:
    """Move the rendered models into the served repository (replacing same names)."""
    names = []
    for source in sorted(rendered.iterdir()):
        target = repository / source.name
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(source), str(target))
        names.append(source.name)
    shutil.rmtree(rendered, ignore_errors=True)
    return names


def start_swap(
    policy: TimeslicePolicy,
    server_state: ServerState | None,
    workdir: Path,
    progress: Progress,
    config: EdgectlConfig | None = None,
) -> dict[str, Any]:
    """Install and load the fronts of ``policy``; nothing is swapped in until a request
    asks for it.  ``config`` (the server's own) gives the engine limits to render with,
    and lets this start the server when none is running."""
    if server_state is None and config is None:
        raise EdgectlError("swap mode needs a running server: run `edgectl deploy --local` first")
    config = config or EdgectlConfig()
    planned = plan_models(policy, config)
    resolved_mode(policy, planned)  # refuses a model that alone exceeds the budget
    backings = [
        BackingModel(**{**vars(item.served), "name": backing_name(item.share.name)},
                     front=item.share.name)
        for item in planned
    ]  # fmt: skip
    plan = SwapPlan(
        policy=policy.name,
        memory_budget_gb=policy.memory_budget_gb,
        wait_timeout_s=policy.swap.wait_timeout_s,
        min_resident_s=policy.swap.min_resident_s,
        models=[
            SwapModel(
                name=item.share.name,
                backing=backing.name,
                steps=[
                    backing.name,
                    *(backing.step_names[key] for key in
                      ("preprocessing_name", "engine_name", "postprocessing_name")),
                ],
                memory_gb=item.memory_gb,
                share=item.share.share,
                priority=item.share.priority,
            )
            for item, backing in zip(planned, backings, strict=True)
        ],
    )  # fmt: skip
    if server_state is None:  # start one serving nothing; the fronts are loaded below
        server = LocalTriton(config.server)
        repository = server.workdir / "model_repository"
        repository.mkdir(parents=True, exist_ok=True)
        progress("starting tritonserver for swap mode")
        server_state = server.start(repository, [], progress)
    client = _client(server_state)
    ready = {m["name"] for m in client.list_models() if m.get("state") == "READY"}
    for model in plan.models:
        for name in (model.name, model.backing):
            if name in ready:  # e.g. the co-resident ensemble of the same name
                progress(f"unloading {name} (swap mode replaces it)")
                client.unload_model(name)
    board = Board(board_dir(workdir))
    if (board.directory / PLAN_FILE).exists():
        stop_swap(workdir)  # a previous swap policy still in force
    rendered = _render(plan, backings, config, workdir)
    shutil.rmtree(board.directory, ignore_errors=True)
    board.write_plan(plan)
    _install(rendered, Path(server_state.repository))
    for model in plan.models:
        progress(
            f"loading swap front {model.name} (backing {model.backing}, ~{model.memory_gb:g} GB,"
            f" swapped in on demand)"
        )
        client.load_model(model.name)
    return swap_status(workdir)


def _running(workdir: Path) -> ServerState | None:
    return LocalTriton(ServerConfig(workdir=Path(workdir))).running()


def _wait_scheduler_stopped(board: Board) -> None:
    """The scheduler finishes the swap it is doing (a load takes seconds), then stops."""
    deadline = time.monotonic() + UNLOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        schedule = board.schedule()
        pid = schedule.get("scheduler_pid")
        if schedule.get("stopped") or not pid or not psutil.pid_exists(pid):
            return
        time.sleep(0.1)
    raise EdgectlError(f"the swap scheduler (pid {pid}) did not stop within {UNLOAD_TIMEOUT_S:g}s")


def stop_swap(workdir: Path) -> None:
    """Stop scheduling, unload the fronts (each refuses what it still queues), then the
    backing models."""
    board = Board(board_dir(workdir))
    try:
        plan = board.plan()
    except FileNotFoundError:
        return
    state = _running(workdir)
    if state is not None:
        board.set_stopping()
        _wait_scheduler_stopped(board)
        client = _client(state)
        for model in plan.models:
            client.unload_model(model.name, wait=False)
        _wait_unloaded(client)
        ready = {m["name"] for m in client.list_models() if m.get("state") == "READY"}
        for model in plan.models:
            if ready & set(model.steps):
                client.unload_model(model.backing, wait=False)  # and the steps only it uses
        _wait_unloaded(client)
    shutil.rmtree(board.directory, ignore_errors=True)


def _wait_unloaded(client: TritonClient) -> None:
    deadline = time.monotonic() + UNLOAD_TIMEOUT_S
    while True:
        stuck = [m["name"] for m in client.list_models() if m.get("state") == "UNLOADING"]
        if not stuck:
            return
        if time.monotonic() > deadline:
            raise EdgectlError(
                f"{', '.join(stuck)} still unloading after {UNLOAD_TIMEOUT_S:g}s; Triton waits"
                " for requests it counts in flight; `edgectl stop` ends the server"
            )
        time.sleep(0.1)


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "count": len(values),
        "p50": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def swap_status(workdir: Path) -> dict[str, Any]:
    """Per model: phase, queue, waits, swaps; overall: swap times and memory freed."""
    board = Board(board_dir(workdir))
    try:
        plan = board.plan()
    except FileNotFoundError:
        return {"active": False}
    schedule = board.schedule()
    now, wall = time.monotonic(), time.time()
    events = schedule.get("events", [])
    models = []
    for model in plan.models:
        entry = schedule.get("models", {}).get(model.name, {})
        demand = board.demand(model.name)
        phase = entry.get("phase", "out")
        row: dict[str, Any] = {
            "name": model.name,
            "backing": model.backing,
            "phase": phase,
            "phase_for_s": round(now - entry["since"], 1) if "since" in entry else None,
            "memory_gb": model.memory_gb,
            "share": model.share,
            "priority": model.priority,
            "swap_ins": entry.get("swap_ins", 0),
            "swap_outs": entry.get("swap_outs", 0),
            "last_error": entry.get("last_error"),
        }
        if demand is not None:
            row.update(
                queue_depth=demand.queued,
                in_flight=demand.in_flight,
                oldest_wait_s=round(demand.oldest_wait_s, 2),
                requests=demand.requests,
                completed=demand.completed,
                waited=demand.waited,
                wait_s_mean=round(demand.wait_s_total / demand.waited, 3) if demand.waited else 0,
                wait_s_max=round(demand.wait_s_max, 3),
                timeouts=demand.timeouts,
                front_seen_s_ago=round(wall - demand.updated_at, 1),
            )
        models.append(row)
    ins = [e for e in events if e["kind"] == "in" and not e.get("error")]
    outs = [e for e in events if e["kind"] == "out" and not e.get("error")]
    last_out = outs[-1] if outs else None
    return {
        "active": True,
        "policy": plan.policy,
        "memory_budget_gb": plan.memory_budget_gb,
        "wait_timeout_s": plan.wait_timeout_s,
        "min_resident_s": plan.min_resident_s,
        "resident": [
            m.name
            for m in plan.models
            if schedule.get("models", {}).get(m.name, {}).get("phase") in RESIDENT_PHASES
        ],
        "serving": [
            m.name
            for m in plan.models
            if schedule.get("models", {}).get(m.name, {}).get("phase") == IN
        ],  # fmt: skip
        "scheduler_pid": schedule.get("scheduler_pid"),
        "swap_ins": len(ins),
        "swap_outs": len(outs),
        "load_s": _summary([e["seconds"] for e in ins]),
        "swap_s": _summary([e["swap_s"] for e in ins if e.get("swap_s") is not None]),
        "unload_s": _summary([e["seconds"] for e in outs]),
        "failed_swaps": sum(1 for e in events if e.get("error")),
        "last_unload": None
        if last_out is None
        else {
            "model": last_out["model"],
            "rss_before_mb": round(last_out["rss_before"] / 2**20, 1),
            "rss_after_mb": round(last_out["rss_after"] / 2**20, 1),
            "stubs_rss_mb": round(last_out["stubs_rss"] / 2**20, 1),
        },
        "models": models,
        "recent_events": events[-10:],
    }
