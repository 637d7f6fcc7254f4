"""Markdown report and PNG plots of a load-test run, from its summary.json alone.

Tables use genai-perf's metric names; the batch-size table and the side-by-side
comparison answer "how many users, at what latency, with which batch settings".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

LATENCY_PLOT = "latency_vs_load.png"
THROUGHPUT_PLOT = "throughput_vs_load.png"

Step = dict[str, Any]
_LATENCY_METRICS = ("time_to_first_token", "inter_token_latency", "request_latency")


def _stat(step: Step, metric: str, stat: str = "avg") -> float | None:
    value = step["metrics"].get(metric)
    return None if value is None else value.get(stat)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _variants(summary: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(step["variant"] for step in summary["steps"]))


def _steps_of(summary: dict[str, Any], variant: str) -> list[Step]:
    return sorted(
        (s for s in summary["steps"] if s["variant"] == variant), key=lambda s: s["level"]
    )


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _level_header(summary: dict[str, Any]) -> str:
    return "concurrency" if summary["profile"]["mode"] == "concurrency" else "req/s"


def metrics_tables(summary: dict[str, Any]) -> list[str]:
    """Per step: request counts, TTFT, ITL, request latency (avg/p50/p90/p99), throughput."""
    stats = ("avg", "p50", "p90", "p99")
    header = ["variant", _level_header(summary), "requests", "failed"]
    latency_rows, throughput_rows = [], []
    for step in summary["steps"]:
        lead = [step["variant"], f"{step['level']:g}"]
        counts = [str(step["metrics"]["request_count"]), str(step["metrics"]["failure_count"])]
        latency_rows.append(
            [*lead, *counts] + [_fmt(_stat(step, m, s)) for m in _LATENCY_METRICS for s in stats]
        )
        throughput_rows.append(
            [
                *lead,
                _fmt(_stat(step, "output_token_throughput")),
                _fmt(_stat(step, "request_throughput"), 2),
                _fmt(_stat(step, "output_sequence_length")),
                _fmt(_stat(step, "input_sequence_length")),
                _fmt(step.get("server_rss_mib"), 0),
            ]
        )
    latency_header = header + [
        f"{name} {s} (ms)" for name in ("TTFT", "ITL", "request latency") for s in stats
    ]
    return [
        "## Latency",
        "",
        "TTFT = time to first token, ITL = inter-token latency, request latency = send to "
        "last token (client side, milliseconds).",
        "",
        *_table(latency_header, latency_rows),
        "",
        "## Throughput",
        "",
        *_table(
            [
                "variant",
                _level_header(summary),
                "output token throughput (tokens/s)",
                "request throughput (req/s)",
                "output sequence length (avg)",
                "input sequence length (avg)",
                "server RSS peak (MiB)",
            ],
            throughput_rows,
        ),  # fmt: skip
        "",
    ]


def batch_size_table(summary: dict[str, Any], variant: str) -> list[str]:
    """The "Optimal Batch Size" table: memory, p50 latency, throughput, efficiency vs 1."""
    steps = _steps_of(summary, variant)
    base = next((s for s in steps if s["level"] == 1), None)
    base_tput = _stat(base, "output_token_throughput") if base else None
    rows = []
    best: tuple[float, Step] | None = None
    for step in steps:
        tput = _stat(step, "output_token_throughput")
        speedup = tput / base_tput if tput and base_tput else None
        rows.append(
            [
                f"{step['level']:g}",
                _fmt(step.get("server_rss_mib"), 0),
                _fmt(_stat(step, "request_latency", "p50"), 0),
                _fmt(_stat(step, "time_to_first_token", "p50"), 0),
                _fmt(tput),
                f"{speedup:.2f}x" if speedup else "n/a",
                f"{100 * speedup / step['level']:.0f}%" if speedup else "n/a",
            ]
        )
        if tput and (best is None or tput > best[0]):
            best = (tput, step)
    lines = [
        f"### Optimal batch size: {variant}",
        "",
        "Concurrency = requests in flight = the batch the engine can form.  Efficiency = "
        "throughput / (concurrency x throughput at 1): 100% is perfectly linear scaling.",
        "",
        *_table(
            [
                "concurrency",
                "server RSS (MiB)",
                "p50 latency (ms)",
                "p50 TTFT (ms)",
                "throughput (tokens/s)",
                "vs concurrency 1",
                "efficiency",
            ],
            rows,
        ),  # fmt: skip
    ]
    if best is not None:
        knee = next(s for s in steps if (_stat(s, "output_token_throughput") or 0) >= 0.9 * best[0])
        lines += [
            "",
            f"Highest throughput at concurrency {best[1]['level']:g} ({best[0]:.1f} tokens/s); "
            f"90% of it first at concurrency {knee['level']:g} "
            f"(p50 latency {_fmt(_stat(knee, 'request_latency', 'p50'), 0)} ms).",
        ]
    return lines + [""]


def comparison_table(summary: dict[str, Any]) -> list[str]:
    """Variants side by side per level, with the ratio to the first variant."""
    variants = _variants(summary)
    if len(variants) < 2:
        return []
    first = variants[0]
    columns: list[tuple[str, Callable[[Step], float | None]]] = [
        ("output tokens/s", lambda s: _stat(s, "output_token_throughput")),
        ("requests/s", lambda s: _stat(s, "request_throughput")),
        ("p50 TTFT (ms)", lambda s: _stat(s, "time_to_first_token", "p50")),
        ("p50 latency (ms)", lambda s: _stat(s, "request_latency", "p50")),
        ("p99 latency (ms)", lambda s: _stat(s, "request_latency", "p99")),
    ]
    by_key = {(s["variant"], s["level"]): s for s in summary["steps"]}
    rows = []
    for level in sorted({s["level"] for s in summary["steps"]}):
        base = by_key.get((first, level))
        for variant in variants:
            step = by_key.get((variant, level))
            if step is None:
                continue
            cells = []
            for _, get in columns:
                value = get(step)
                ref = get(base) if base else None
                ratio = f" ({value / ref:.2f}x)" if variant != first and value and ref else ""
                cells.append(_fmt(value) + ratio)
            rows.append([f"{level:g}", variant, *cells])
    return [
        "## Side by side",
        "",
        f"Same load on each server, steps interleaved in one run; ratios are to `{first}`.",
        "",
        *_table([_level_header(summary), "variant", *(name for name, _ in columns)], rows),
        "",
    ]


def breakdown_tables(summary: dict[str, Any]) -> list[str]:
    """Per-stage server-side latency per request, one column per step."""
    lines = ["## Per-stage latency breakdown (server side, from Triton statistics)", ""]
    for variant in _variants(summary):
        steps = [s for s in _steps_of(summary, variant) if s.get("breakdown")]
        if not steps:
            notes = {s.get("note", "") for s in _steps_of(summary, variant)} - {""}
            lines += [f"{variant}: no breakdown. {' '.join(sorted(notes))}", ""]
            continue
        names = [stage["name"] for stage in steps[0]["breakdown"]["stages"]]
        rows = []
        for name in names:
            cells = []
            for step in steps:
                stage = next(x for x in step["breakdown"]["stages"] if x["name"] == name)
                cells.append(f"{stage['ms']:.1f} ({stage['pct']:.0f}%)")
            rows.append([name, *cells])
        rows.append(["**total**", *(f"**{s['breakdown']['total_ms']:.1f}**" for s in steps)])
        rows.append(
            [
                "detokenization overlapped",
                *(f"{s['breakdown']['overlapped_ms']:.1f}" for s in steps),
            ]
        )
        rows.append(["client latency (avg)", *(_fmt(_stat(s, "request_latency")) for s in steps)])
        header = [f"{variant}: ms per request (% of total)"] + [
            f"{_level_header(summary)} {s['level']:g}" for s in steps
        ]
        lines += [*_table(header, rows), ""]
    lines += [
        "The stages add up to the ensemble's server-side time.  Triton times the engine "
        "step's `execute`, which only enqueues (the step is decoupled), so the engine row is "
        "the remainder: prefill, decode and any wait for a batch slot.  When streaming, "
        "detokenization runs once per response while the engine generates the next tokens; "
        "only its last call is on the critical path (the rest is the overlapped row).  "
        "Client latency minus the total is transport and client time (Triton's statistics "
        "also count the step's warm-up requests; the client's do not).",
        "",
    ]
    return lines


def error_lines(summary: dict[str, Any]) -> list[str]:
    lines = []
    for step in summary["steps"]:
        for message, count in step["metrics"]["errors"].items():
            lines.append(f"- {step['step']}: {count} x `{message}`")
    return ["## Failures", "", *lines, ""] if lines else []


def render_markdown(summary: dict[str, Any], plots: list[str]) -> str:
    profile = summary["profile"]
    servers = ", ".join(f"`{s['variant']}` at {s['target']}" for s in summary["servers"])
    lines = [
        f"# Load test `{profile['name']}`",
        "",
        f"- model `{summary['model']}` on {servers}; {summary['started_at']}; "
        f"{summary['machine']['cpus']} CPUs",
        f"- {profile['input_tokens']} input tokens (synthetic), "
        + (
            f"exactly {profile['output_tokens']} output tokens (end_id {profile['end_id']})"
            if profile["end_id"] is not None
            else f"up to {profile['output_tokens']} output tokens"
        )
        + f", {'streaming' if profile['stream'] else 'not streaming'}",
        f"- each step: {profile['warmup_requests']} warm-up request(s) (excluded), then "
        f"{profile['duration_s']} s or {profile['max_requests']} requests, whichever ends first"
        + (
            f"; {profile['rounds']} interleaved rounds pooled"
            if profile.get("rounds", 1) > 1
            else ""
        ),
        "",
        *metrics_tables(summary),
    ]
    if profile["mode"] == "concurrency":
        lines += ["## Batch size", ""]
        for variant in _variants(summary):
            lines += batch_size_table(summary, variant)
    lines += comparison_table(summary)
    lines += breakdown_tables(summary)
    lines += [f"![{name}]({name})" for name in plots] + [""]
    lines += error_lines(summary)
    return "\n".join(lines)


def plot(summary: dict[str, Any], run_dir: Path) -> list[str]:
    """Latency percentiles and throughput vs load, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xlabel = _level_header(summary)
    log_x = summary["profile"]["mode"] == "concurrency"
    written = []

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, title in (
        (axes[0], "time_to_first_token", "Time to first token"),
        (axes[1], "request_latency", "Request latency"),
    ):
        for index, variant in enumerate(_variants(summary)):  # one colour per variant
            steps = [s for s in _steps_of(summary, variant) if s["metrics"].get(metric)]
            x = [s["level"] for s in steps]
            for stat, style in (("p50", "-o"), ("p90", "--s"), ("p99", ":^")):
                values = [_stat(s, metric, stat) for s in steps]
                ax.plot(x, values, style, color=f"C{index}", label=f"{variant} {stat}")
        _axes(ax, title, xlabel, "ms", log_x)
    fig.tight_layout()
    fig.savefig(run_dir / LATENCY_PLOT, dpi=110)
    plt.close(fig)
    written.append(LATENCY_PLOT)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, title, unit in (
        (axes[0], "output_token_throughput", "Output token throughput", "tokens/s"),
        (axes[1], "request_throughput", "Request throughput", "requests/s"),
    ):
        for variant in _variants(summary):
            steps = [s for s in _steps_of(summary, variant) if s["metrics"].get(metric)]
            ax.plot(
                [s["level"] for s in steps], [_stat(s, metric) for s in steps], "-o", label=variant
            )
        _axes(ax, title, xlabel, unit, log_x)
    fig.tight_layout()
    fig.savefig(run_dir / THROUGHPUT_PLOT, dpi=110)
    plt.close(fig)
    written.append(THROUGHPUT_PLOT)
    return written


def _axes(ax: Any, title: str, xlabel: str, ylabel: str, log_x: bool) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_x:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(lambda value, _pos: f"{value:g}")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def write_report(summary: dict[str, Any], run_dir: Path) -> Path:
    plots = plot(summary, run_dir)
    path = run_dir / "report.md"
    path.write_text(render_markdown(summary, plots), encoding="utf-8")
    return path


def console_table(summary: dict[str, Any]) -> str:
    """One line per step for the terminal; report.md has the full tables."""
    rows = [
        [
            step["step"],
            str(step["metrics"]["request_count"]),
            str(step["metrics"]["failure_count"]),
            _fmt(_stat(step, "time_to_first_token", "p50"), 0),
            _fmt(_stat(step, "inter_token_latency", "p50")),
            _fmt(_stat(step, "request_latency", "p50"), 0),
            _fmt(_stat(step, "output_token_throughput")),
            _fmt(_stat(step, "request_throughput"), 2),
            _fmt(step.get("server_rss_mib"), 0),
        ]
        for step in summary["steps"]
    ]
    header = ["step", "requests", "failed", "TTFT p50 ms", "ITL p50 ms", "latency p50 ms",
              "tokens/s", "req/s", "RSS MiB"]  # fmt: skip
    return "\n".join(_table(header, rows))
