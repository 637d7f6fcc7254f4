"""The selection matrix: every device x weight precision at one workload, the best cell
per constraint (latency, cost, energy, quality) marked; markdown and PNG.

Quality comes from the quantization report (``build/report/results/report.csv``) when
there is one: it was measured on the embedded SmolLM2-135M, so it ranks precisions, it
does not predict another model's perplexity.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from edgectl.build.recipe import Precision, Recipe
from edgectl.errors import EdgectlError
from edgectl.plan.catalog import Device, all_devices
from edgectl.plan.shapes import ModelShape
from edgectl.plan.sizing import Plan, Workload, make_plan
from edgectl.resources import recipes_dir

PRECISIONS = ("fp16", "int8_wo", "int8_sq", "int4_awq")
REPORT_CSV = Path("build/report/results/report.csv")
CONSTRAINTS = {"latency": "L", "cost": "$", "energy": "E", "quality": "Q"}


@dataclass
class Cell:
    device: str
    precision: str
    kv_cache: str
    plan: Plan
    quality_loss_pct: float | None
    best: list[str] = field(default_factory=list)

    @property
    def latency_ms(self) -> float:
        """Request latency: TTFT plus the output at the per-sequence decode rate."""
        per_seq = self.plan.value("decode_tok_s_per_seq")
        return self.plan.value("ttft_ms") + self.plan.workload.output_tokens / per_seq * 1e3

    def summary(self) -> dict:
        p = self.plan
        return {
            "device": self.device,
            "precision": self.precision,
            "kv_cache": self.kv_cache,
            "fits": p.fits,
            "sequences_fit": p.sequences,
            "tok_s": p.value("decode_tok_s"),
            "ttft_ms": p.value("ttft_ms"),
            "latency_ms": self.latency_ms,
            "usd_per_1k_queries": p.value("usd_per_1k_queries"),
            "wh_per_query": p.value("wh_per_query"),
            "quality_loss_pct": self.quality_loss_pct,
            "best_for": self.best,
        }


@dataclass
class Matrix:
    recipe: str
    model: str
    workload: Workload
    devices: list[str]
    cells: dict[tuple[str, str], Cell]
    quality_source: str | None

    def as_json(self) -> dict:
        return {
            "recipe": self.recipe,
            "model": self.model,
            "workload": vars(self.workload),
            "quality_source": self.quality_source,
            "cells": [cell.summary() for cell in self.cells.values()],
        }


def quality_by_precision(path: Path | None = None) -> tuple[dict[str, float], str | None]:
    """quality_loss_pct per weight format from the report CSV (the single-format rows)."""
    candidates = [path] if path else [REPORT_CSV, recipes_dir() / "report/results/report.csv"]
    for candidate in candidates:
        if candidate and candidate.is_file():
            with candidate.open(encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            losses = {}
            for row in rows:
                fmt = row["precision"].split()[0]
                if fmt in PRECISIONS or fmt in ("fp32", "int4_wo", "int4_gptq"):
                    losses.setdefault(fmt, float(row["quality_loss_pct"]))
            return losses, str(candidate)
    return {}, None


def variant(recipe: Recipe, weights: str, device: Device) -> Recipe:
    """The recipe at another weight format, with a KV cache TensorRT-LLM accepts with it."""
    kv = recipe.precision.kv_cache
    if kv == "fp8" and (weights.startswith("int8") or "fp8" not in device.tflops):
        kv = "int8" if weights.startswith("int8") else "fp16"
    precision = Precision(weights=weights, group_size=recipe.precision.group_size, kv_cache=kv)
    return recipe.model_copy(update={"precision": precision, "mixed_precision": None})


def build_matrix(
    recipe: Recipe,
    shape: ModelShape,
    work: Workload,
    devices: dict[str, Device] | None = None,
    quality_csv: Path | None = None,
) -> Matrix:
    devices = devices if devices is not None else all_devices()
    losses, source = quality_by_precision(quality_csv)
    cells = {}
    for name, device in devices.items():
        for weights in PRECISIONS:
            changed = variant(recipe, weights, device)
            plan = make_plan(changed, name, device, shape, work)
            cells[(name, weights)] = Cell(
                name, weights, changed.precision.kv_cache, plan, losses.get(weights)
            )
    _mark_best(list(cells.values()), bool(losses))
    return Matrix(recipe.name, shape.name, work, list(devices), cells, source)


def _mark_best(cells: list[Cell], with_quality: bool) -> None:
    fitting = [c for c in cells if c.plan.fits]
    if not fitting:
        raise EdgectlError("no device fits this recipe at this context: try a shorter --context")
    keys = {
        "latency": lambda c: c.latency_ms,
        "cost": lambda c: c.plan.value("usd_per_1k_queries"),
        "energy": lambda c: c.plan.value("wh_per_query"),
    }
    if with_quality:
        keys["quality"] = lambda c: (
            c.quality_loss_pct if c.quality_loss_pct is not None else math.inf,
            c.plan.value("usd_per_1k_queries"),
        )
    for constraint, key in keys.items():
        min(fitting, key=key).best.append(constraint)


def cell_lines(cell: Cell) -> list[str]:
    """A cell's text: fits?, tok/s, TTFT, $/1k queries, Wh/query (and the quality loss)."""
    p = cell.plan
    if not p.fits:
        return ["does not fit"]
    lines = [
        f"fits {p.sequences:,} seq",
        f"{p.value('decode_tok_s'):,.0f} tok/s",
        f"TTFT {p.value('ttft_ms'):,.0f} ms",
        f"${p.value('usd_per_1k_queries'):.3g}/1k q",
        f"{p.value('wh_per_query'):.2g} Wh/q",
    ]
    if cell.quality_loss_pct is not None:
        lines.append(f"ppl +{cell.quality_loss_pct:.1f}%")
    return lines


def markdown(matrix: Matrix) -> str:
    work = matrix.workload
    out = [
        f"# Selection matrix: {matrix.recipe} ({matrix.model})",
        "",
        f"Context {work.context}, {work.input_tokens} tokens in, {work.output_tokens} out, "
        f"concurrency {work.concurrency}. Each cell: fits (sequences), aggregate decode tok/s, "
        "TTFT, USD per 1,000 queries, Wh per query (estimate from TDP). Estimates from the "
        "device catalog, not measurements. Best per constraint in bold: "
        + ", ".join(f"{mark} {name}" for name, mark in CONSTRAINTS.items())
        + ".",
        "",
        "| device | " + " | ".join(PRECISIONS) + " |",
        "|---|" + "---|" * len(PRECISIONS),
    ]
    for device in matrix.devices:
        row = []
        for weights in PRECISIONS:
            cell = matrix.cells[(device, weights)]
            text = "<br>".join(cell_lines(cell))
            if cell.best:
                marks = " ".join(CONSTRAINTS[b] for b in cell.best)
                text = f"**{text}<br>best: {marks}**"
            row.append(text)
        out.append(f"| {device} | " + " | ".join(row) + " |")
    out.append("")
    for constraint in CONSTRAINTS:
        best = [c for c in matrix.cells.values() if constraint in c.best]
        if best:
            c = best[0]
            out.append(f"* best for {constraint}: {c.device} x {c.precision} (KV {c.kv_cache})")
    if matrix.quality_source:
        out.append(
            f"* quality: perplexity loss from {matrix.quality_source} (measured on "
            "SmolLM2-135M; it ranks precisions, it does not predict this model's loss)"
        )
    out.append(
        "* FP8 KV cache only where the device has FP8 (else FP16); INT8 weights take an "
        "INT8 KV cache instead of FP8 (TensorRT-LLM refuses the mix)."
    )
    return "\n".join(out) + "\n"


def write_matrix(matrix: Matrix, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{matrix.recipe}-matrix.md"
    md.write_text(markdown(matrix), encoding="utf-8")
    png = out / f"{matrix.recipe}-matrix.png"
    draw_png(matrix, png)
    return {"md": md, "png": png}


def draw_png(matrix: Matrix, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = matrix_figure(matrix)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def matrix_figure(matrix: Matrix):
    """A grid of fixed-size cells with a fixed number of text lines, so labels cannot overlap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    cols, rows = len(PRECISIONS), len(matrix.devices)
    cell_w, cell_h, label_w, header_h = 2.0, 1.25, 2.1, 0.5
    fig = plt.figure(figsize=(label_w + cols * cell_w, header_h + rows * cell_h + 0.7))
    ax = fig.add_axes((0, 0, 1, 1))
    width, height = label_w + cols * cell_w, header_h + rows * cell_h + 0.7
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    top = height - 0.7
    ax.text(
        width / 2,
        height - 0.35,
        f"{matrix.recipe}: ctx {matrix.workload.context}, "
        f"concurrency {matrix.workload.concurrency}",
        ha="center",
        va="center",
        fontsize=10,
        weight="bold",
    )
    for j, weights in enumerate(PRECISIONS):
        x = label_w + j * cell_w + cell_w / 2
        ax.text(x, top - header_h / 2, weights, ha="center", va="center", fontsize=9, weight="bold")
    for i, device in enumerate(matrix.devices):
        y0 = top - header_h - (i + 1) * cell_h
        ax.text(0.1, y0 + cell_h / 2, device, ha="left", va="center", fontsize=8.5)
        for j, weights in enumerate(PRECISIONS):
            cell = matrix.cells[(device, weights)]
            x0 = label_w + j * cell_w
            face = "#dff0d8" if cell.plan.fits else "#f2dede"
            edge, lw = ("#1f4e9c", 2.5) if cell.best else ("#999999", 0.6)
            ax.add_patch(
                Rectangle(
                    (x0 + 0.04, y0 + 0.04),
                    cell_w - 0.08,
                    cell_h - 0.08,
                    facecolor=face,
                    edgecolor=edge,
                    linewidth=lw,
                )
            )
            lines = cell_lines(cell)
            if cell.best:
                lines = lines + ["best: " + " ".join(CONSTRAINTS[b] for b in cell.best)]
            ax.text(
                x0 + cell_w / 2,
                y0 + cell_h / 2,
                "\n".join(lines),
                ha="center",
                va="center",
                fontsize=6.5,
                linespacing=1.25,
                weight="bold" if cell.best else "normal",
            )
    return fig
