"""``edgectl timeslice apply|status|off`` against the local server.

The policy in force is recorded in ``<server.workdir>/timeslice/policy.json``; the
co-resident slot board every CPU engine step consults lives in
``<server.workdir>/run/timeslice/`` (see :mod:`edgectl.runtime.slots`).  Swap mode is
handed to :mod:`edgectl.timeslice.swap`.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import psutil

from edgectl.config import EdgectlConfig
from edgectl.deploy.repository import ServedModel, render_repository
from edgectl.deploy.server import LocalTriton, ServerState
from edgectl.errors import EdgectlError
from edgectl.progress import Progress
from edgectl.runtime.files import write_json_atomic
from edgectl.runtime.processes import server_rss_bytes
from edgectl.runtime.slots import SlotBoard, SlotSpec
from edgectl.timeslice.policy import PlannedModel, TimeslicePolicy, plan_models, resolved_mode

RECORD = "policy.json"
# Who divides the device in co-resident mode (docs/timeslice-coresident.md says why).
ENFORCEMENT = {
    "cpu": "slot board (CPU engine step asks before every pipeline step)",
    "trtllm": "none: the TensorRT-LLM executor has no per-step hook; the GPU's own "
    "time-slicing shares it (use swap mode, MIG or MPS for hard shares)",
}


def record_path(workdir: Path) -> Path:
    return Path(workdir) / "timeslice" / RECORD


def board_dir(workdir: Path) -> Path:
    """Where rendered CPU engine steps look for the board (``template_values`` run dir)."""
    return Path(workdir) / "run" / "timeslice"


def read_record(workdir: Path) -> dict[str, Any] | None:
    try:
        return json.loads(record_path(workdir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise EdgectlError(
            f"{record_path(workdir)} is corrupt ({err}); run `timeslice off`"
        ) from None


def _write_record(workdir: Path, record: dict[str, Any]) -> None:
    write_json_atomic(record_path(workdir), record)


def _client(state: ServerState, config: EdgectlConfig):
    from edgectl.client import TritonClient

    return TritonClient(state.http_url, state.grpc_url, timeout_s=config.client.timeout_s)


def _swap_module():
    from edgectl.timeslice import swap

    return swap


# -- apply ------------------------------------------------------------------------------
def apply(policy: TimeslicePolicy, config: EdgectlConfig, progress: Progress) -> dict[str, Any]:
    """Put ``policy`` in force on the local server (started if it is not running)."""
    server = LocalTriton(config.server)
    planned = plan_models(policy, config)
    mode = resolved_mode(policy, planned)
    need = sum(item.memory_gb for item in planned)
    progress(
        f"policy {policy.name}: {len(planned)} models need ~{need:.2f} GB of "
        f"{policy.memory_budget_gb:g} GB -> mode {mode}"
    )
    previous = read_record(server.workdir)
    if previous is not None and previous.get("mode") == "swap":
        progress(f"stopping the swap schedule of policy {previous['policy']['name']}")
        _swap_module().stop_swap(server.workdir)
    record: dict[str, Any] = {
        "policy": policy.model_dump(mode="json"),
        "mode": mode,
        "applied_at": time.time(),
        "models": {
            item.share.name: {
                "engine_step": item.served.step_names["engine_name"],
                "steps": sorted(set(item.served.step_names.values())),
                "memory_gb": item.memory_gb,
                "memory_source": item.memory_source,
                "enforcement": ENFORCEMENT[item.served.engine],
            }
            for item in planned
        },
        "unloaded": list((previous or {}).get("unloaded", [])),
    }
    if mode == "swap":
        SlotBoard(board_dir(server.workdir)).remove()  # a co-resident policy's slots end
        _swap_module().start_swap(policy, server.running(), server.workdir, progress, config=config)
        _write_record(server.workdir, record)
        return record
    record["unloaded"] = _apply_coresident(policy, planned, config, server, record, progress)
    _write_record(server.workdir, record)
    return record


def _apply_coresident(
    policy: TimeslicePolicy,
    planned: list[PlannedModel],
    config: EdgectlConfig,
    server: LocalTriton,
    record: dict[str, Any],
    progress: Progress,
) -> list[str]:
    """Render, install the slot board, load; returns the models unloaded to make room."""
    names = [item.share.name for item in planned]
    for item in planned:
        if item.served.engine != "cpu":
            progress(f"warning: {item.share.name}: shares not enforced: {ENFORCEMENT['trtllm']}")
    served = [item.served for item in planned] + _normal_models(config, names)
    out = server.workdir / "model_repository"
    before = {item.share.name: _rendered(out, item.served) for item in planned}
    repository = render_repository(served, config.engine, out)
    # Before any policy engine loads: its first step is already governed.
    SlotBoard(board_dir(server.workdir)).install(
        policy.name,
        {
            item.served.step_names["engine_name"]: SlotSpec(
                share=item.share.share,
                slot_ms=policy.slot_ms(item.share),
                priority=item.share.priority,
            )
            for item in planned
        },
    )
    state = server.running()
    if state is None:
        progress(f"starting tritonserver with {', '.join(names)}")
        server.start(repository, names, progress)
        return list(record["unloaded"])
    client = _client(state, config)
    index = client.list_models()
    ready = {m.get("name") for m in index if m.get("state") == "READY"}
    for item in planned:
        name = item.share.name
        if name in ready and before[name] == _rendered(out, item.served):
            progress(f"{name} is loaded and unchanged: its new slots apply at its next step")
            continue
        progress(f"loading {name}")
        client.load_model(name)
    unloaded = list(record["unloaded"])
    for model in index:
        name = model.get("name", "")
        if model.get("state") == "READY" and _is_ensemble(state, name) and name not in names:
            progress(f"unloading {name} (not in the policy; the budget covers the policy only)")
            client.unload_model(name)
            unloaded.append(name)
    return sorted(set(unloaded) - set(names))


def _rendered(repository: Path, model: ServedModel) -> dict[str, str]:
    """The rendered configs of a model's ensemble and steps (to skip needless reloads)."""
    texts = {}
    for step in model.step_names.values():
        path = repository / step / "config.pbtxt"
        texts[step] = path.read_text(encoding="utf-8") if path.is_file() else ""
    return texts


def _normal_models(config: EdgectlConfig, policy_names: list[str]) -> list[ServedModel]:
    """The configured model too (unless the policy serves that name), so `off` can load it."""
    from edgectl.deploy.artifacts import served_model

    if config.model.name in policy_names:
        return []
    try:
        return [served_model(config)]
    except EdgectlError:
        return []  # not built: `off` will say so if it has to load it


def _is_ensemble(state: ServerState, name: str) -> bool:
    config = Path(state.repository) / name / "config.pbtxt"
    try:
        return 'platform: "ensemble"' in config.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False


# -- off -----------------------------------------------------------------------------------
def off(config: EdgectlConfig, progress: Progress) -> dict[str, Any]:
    """Lift the policy: engines step freely again; models it unloaded are loaded back."""
    server = LocalTriton(config.server)
    record = read_record(server.workdir)
    SlotBoard(board_dir(server.workdir)).remove()
    if record is None:
        return {"policy": None, "reloaded": []}
    if record.get("mode") == "swap":
        progress("stopping the swap schedule")
        _swap_module().stop_swap(server.workdir)
    reloaded = []
    state = server.running()
    if state is not None:
        client = _client(state, config)
        for name in record.get("unloaded", []):
            progress(f"loading {name} back")
            client.load_model(name)
            reloaded.append(name)
    record_path(server.workdir).unlink(missing_ok=True)
    return {"policy": record["policy"]["name"], "mode": record["mode"], "reloaded": reloaded}


# -- status --------------------------------------------------------------------------------
def status(config: EdgectlConfig) -> dict[str, Any]:
    """Configured vs achieved share, slot length, waits, queue depth and memory per model."""
    server = LocalTriton(config.server)
    record = read_record(server.workdir)
    if record is None:
        return {"policy": None}
    policy = TimeslicePolicy.model_validate(record["policy"])
    state = server.running()
    report: dict[str, Any] = {
        "policy": policy.name,
        "mode": record["mode"],
        "applied_at": record["applied_at"],
        "server": "up" if state is not None else "down",
        "memory_budget_gb": policy.memory_budget_gb,
    }
    if record["mode"] == "swap":
        report["swap"] = _swap_module().swap_status(server.workdir)
    board = SlotBoard(board_dir(server.workdir)).snapshot()
    queues = _engine_gauges(state, config) if state is not None else {}
    rss = stub_rss_by_model(state.pid) if state is not None else {}
    configured = policy.configured_shares()
    total_busy = sum(m["busy_s"] for m in (board or {}).get("models", {}).values())
    models = []
    for item in policy.models:
        engine = record["models"][item.name]["engine_step"]
        slots = (board or {}).get("models", {}).get(engine)
        entry: dict[str, Any] = {
            "name": item.name,
            "configured_share": configured[item.name],
            "slot_ms": policy.slot_ms(item),
            "priority": item.priority,
            "memory_estimate_gb": record["models"][item.name]["memory_gb"],
            "memory_rss_gb": (
                sum(rss.get(step, 0) for step in record["models"][item.name]["steps"]) / 1e9
                if rss
                else None
            ),
            "queue_waiting": queues.get(("waiting", engine)),
            "queue_active": queues.get(("active", engine)),
            "enforcement": record["models"][item.name]["enforcement"],
        }
        if slots is not None:
            entry.update(
                achieved_share=slots["busy_s"] / total_busy if total_busy else None,
                device_s=round(slots["busy_s"], 3),
                slots=slots["slots"],
                mean_slot_ms=round(1000 * slots["busy_s"] / slots["slots"], 1)
                if slots["slots"]
                else None,
                slot_waits=slots["waits"],
                slot_wait_s=round(slots["wait_s"], 3),
                max_slot_wait_ms=round(1000 * slots["max_wait_s"], 1),
                holds_device=board["holder"] == engine,
                has_work=slots["wants"] and board["now"] - slots["seen"] < 5.0,
            )
        models.append(entry)
    report["models"] = models
    if state is not None:
        report["memory_in_use_gb"] = server_rss_bytes(state.pid) / 1e9
    return report


def _engine_gauges(state: ServerState, config: EdgectlConfig) -> dict[tuple[str, str], float]:
    """``edgectl_engine_{waiting,active}`` per engine step from Triton's /metrics."""
    url = f"http://{state.host}:{state.metrics_port}"
    try:
        text = _client(state, config).metrics(url)
    except EdgectlError:
        return {}
    gauges = {}
    pattern = re.compile(r'^edgectl_engine_(waiting|active)\{model="([^"]+)"\} (\S+)$')
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            gauges[(match[1], match[2])] = float(match[3])
    return gauges


def stub_rss_by_model(pid: int) -> dict[str, int]:
    """RSS of each Python stub, keyed by the model (folder) it runs."""
    from edgectl.timeslice.measure import stub_processes

    rss: dict[str, int] = {}
    for model, procs in stub_processes(pid).items():
        for proc in procs:
            try:
                rss[model] = rss.get(model, 0) + proc.memory_info().rss
            except psutil.Error:
                continue
    return rss


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def format_status(report: dict[str, Any]) -> str:
    """The human table of ``timeslice status`` (``--json`` prints ``report`` itself)."""
    if report["policy"] is None:
        return "no time-slicing policy in force"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(report["applied_at"]))
    in_use = report.get("memory_in_use_gb")
    lines = [
        f"policy {report['policy']} ({report['mode']}) since {since}; server {report['server']}",
        f"memory in use {_num(None if in_use is None else round(in_use, 2), ' GB')}"
        f" of budget {report['memory_budget_gb']:g} GB",
        "model            share cfg  achieved  slot_ms  prio  slots  waits  wait_s  "
        "max_wait_ms  queue(wait/run)  rss_gb  est_gb",
    ]
    for m in report["models"]:
        queue = f"{_num(m['queue_waiting'])}/{_num(m['queue_active'])}"
        rss = None if m["memory_rss_gb"] is None else round(m["memory_rss_gb"], 2)
        lines.append(
            f"{m['name']:<16} {_pct(m['configured_share']):>9}  {_pct(m.get('achieved_share')):>8}"
            f"  {m['slot_ms']:>7}  {m['priority']:>4}  {_num(m.get('slots')):>5}"
            f"  {_num(m.get('slot_waits')):>5}  {_num(m.get('slot_wait_s')):>6}"
            f"  {_num(m.get('max_slot_wait_ms')):>11}  {queue:>15}  {_num(rss):>6}"
            f"  {m['memory_estimate_gb']:>6g}"
        )
    for m in report["models"]:
        if not m["enforcement"].startswith("slot board"):
            lines.append(f"note: {m['name']}: {m['enforcement']}")
    if "swap" in report:
        lines.extend(_swap_lines(report["swap"]))
    return "\n".join(lines)


def _swap_lines(swap: dict[str, Any]) -> list[str]:
    """Swap mode's part of the table: who is in, swap counts and times, memory freed."""
    if not swap.get("active"):
        return ["swap: not active"]

    def timing(summary: dict[str, float] | None) -> str:
        return "-" if not summary else f"p50 {summary['p50']:g} s, max {summary['max']:g} s"

    lines = [
        f"swap: resident {', '.join(swap['resident']) or 'none'}; "
        f"{swap['swap_ins']} swap-ins, {swap['swap_outs']} swap-outs, "
        f"{swap['failed_swaps']} failed",
        f"swap: load {timing(swap['load_s'])}; unload {timing(swap['unload_s'])}; "
        f"swap seen by clients {timing(swap['swap_s'])}",
    ]
    last = swap.get("last_unload")
    if last:
        lines.append(
            f"swap: last unload {last['model']}: server RSS {last['rss_before_mb']:g} -> "
            f"{last['rss_after_mb']:g} MB (its stubs held {last['stubs_rss_mb']:g} MB)"
        )
    for model in swap["models"]:
        lines.append(
            f"swap: {model['name']}: {model['phase']}, queue {model.get('queue_depth', '-')}, "
            f"timeouts {model.get('timeouts', '-')}, waited max {model.get('wait_s_max', '-')} s"
        )
    return lines
