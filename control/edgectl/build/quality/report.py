"""The quantization report: every recipe of a set built, measured and tabulated.

One table (Markdown + CSV + PNG) of precision x {bytes on disk, memory reduction vs FP32,
held-out perplexity, quality loss, single-stream CPU tok/s}, checked against the targets
(INT8 <= 30% of FP32 bytes and <= 1% ppl; INT4 <= 18% and <= 5%). Measuring is injected so
the table logic is tested without models.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from edgectl.build.recipe import INT4_FORMATS, Recipe, load_recipe
from edgectl.build.sources import model_label
from edgectl.errors import EdgectlError
from edgectl.progress import Progress
from edgectl.resources import recipes_dir
from edgectl.runtime.manifest import MANIFEST, read_manifest, tool_versions

REPORT_DIR = recipes_dir() / "report"
MODEL_FILES = ("openvino_model.xml", "openvino_model.bin")
COMMAND = "edgectl build --report"
# Quality targets: (largest share of FP32 bytes, largest perplexity increase), in %.
TARGETS = {"int8": (30.0, 1.0), "int4": (18.0, 5.0)}
SPEED_ROUNDS = 3
REPORT_TOOLS = ("openvino", "openvino-genai", "nncf", "optimum-intel", "transformers")


@dataclass
class Measurement:
    """What is measured on one built artifact."""

    model_bytes: int  # the served IR: openvino_model.xml + .bin (tokenizers excluded)
    perplexity: float
    perplexity_stderr_pct: float  # standard error across windows, relative, in %
    scored_tokens: int
    tokens_per_s: float
    trtllm_bytes: int | None = None
    window_nll: list[float] | None = None  # per held-out window, for paired differences


@dataclass
class Row:
    recipe: str
    precision: str
    model_bytes: int
    size_pct_of_fp32: float
    reduction_x: float
    perplexity: float
    perplexity_stderr_pct: float
    quality_loss_pct: float
    quality_loss_stderr_pct: float | None
    tokens_per_s: float
    target: str
    verdict: str
    trtllm_bytes: int | None = None


def precision_label(recipe: Recipe) -> str:
    """A short human label: ``int4_awq g64``, ``mixed int4_awq/int8_wo, head int8_wo``."""
    precision = recipe.precision
    formats = [precision.weights]
    if recipe.mixed_precision is not None:
        formats += [item.weights for item in recipe.mixed_precision.layers]
    formats = list(dict.fromkeys(formats))
    label = formats[0] if len(formats) == 1 else "mixed " + "/".join(formats)
    if set(formats) & set(INT4_FORMATS):
        label += f" g{precision.group_size}"
        if recipe.cpu.ratio < 1:
            label += f" ratio {recipe.cpu.ratio:g}"
    if recipe.mixed_precision is not None:
        label += f", head {recipe.mixed_precision.lm_head}"
    return label


def target_class(recipe: Recipe) -> str | None:
    """``int4`` if any layer is 4-bit, ``int8`` if the smallest format is 8-bit, else None."""
    formats = {recipe.precision.weights}
    if recipe.mixed_precision is not None:
        formats |= {item.weights for item in recipe.mixed_precision.layers}
    if formats & set(INT4_FORMATS):
        return "int4"
    if any(kind.startswith("int8") for kind in formats):
        return "int8"
    return None


def verdict(target: str | None, size_pct: float, loss_pct: float) -> str:
    if target is None:
        return "reference" if size_pct == 100.0 else "-"
    max_size, max_loss = TARGETS[target]
    misses = []
    if size_pct > max_size:
        misses.append(f"size {size_pct:.1f}% > {max_size:g}%")
    if loss_pct > max_loss:
        misses.append(f"ppl +{loss_pct:.2f}% > {max_loss:g}%")
    return "meets" if not misses else "short: " + ", ".join(misses)


def paired_stderr_pct(windows: list[float] | None, reference: list[float] | None) -> float | None:
    """Standard error of the ppl change from per-window NLL differences (same windows).

    Much smaller than either perplexity's own error: hard windows are hard for every row.
    """
    if not windows or not reference or len(windows) != len(reference) or len(windows) < 2:
        return None
    diffs = [a - b for a, b in zip(windows, reference, strict=True)]
    return 100.0 * statistics.stdev(diffs) / math.sqrt(len(diffs))


def make_rows(measured: list[tuple[Recipe, Measurement]]) -> list[Row]:
    """Rows relative to the FP32 recipe of the set (which must be there)."""
    reference = next(
        (m for r, m in measured if r.precision.weights == "fp32" and r.mixed_precision is None),
        None,
    )
    if reference is None:
        raise EdgectlError("report: the recipe set needs an fp32 recipe (the reference)")
    rows = []
    for recipe, m in measured:
        size_pct = 100.0 * m.model_bytes / reference.model_bytes
        loss_pct = 100.0 * (m.perplexity / reference.perplexity - 1.0)
        target = target_class(recipe)
        rows.append(
            Row(
                recipe=recipe.name,
                precision=precision_label(recipe),
                model_bytes=m.model_bytes,
                size_pct_of_fp32=round(size_pct, 2),
                reduction_x=round(reference.model_bytes / m.model_bytes, 2),
                perplexity=round(m.perplexity, 3),
                perplexity_stderr_pct=round(m.perplexity_stderr_pct, 2),
                quality_loss_pct=round(loss_pct, 2),
                quality_loss_stderr_pct=_round(
                    paired_stderr_pct(m.window_nll, reference.window_nll)
                ),
                tokens_per_s=round(m.tokens_per_s, 1),
                target=(
                    f"<= {TARGETS[target][0]:g}% bytes, <= {TARGETS[target][1]:g}% ppl"
                    if target
                    else "-"
                ),
                verdict=verdict(target, size_pct, loss_pct),
                trtllm_bytes=m.trtllm_bytes,
            )
        )
    return rows


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def markdown_table(rows: list[Row]) -> str:
    with_trtllm = any(row.trtllm_bytes for row in rows)
    head = [
        "precision",
        "recipe",
        "bytes on disk",
        "% of FP32",
        "memory reduction",
        "perplexity",
        "quality loss",
        "CPU tok/s (1 stream)",
        "target",
        "verdict",
    ]
    if with_trtllm:
        head.insert(3, "TRT-LLM ckpt bytes")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [
            row.precision,
            f"`{row.recipe}`",
            f"{row.model_bytes:,} ({_mib(row.model_bytes)})",
            f"{row.size_pct_of_fp32:.1f}%",
            f"{row.reduction_x:.2f}x",
            f"{row.perplexity:.3f} ± {row.perplexity_stderr_pct:.1f}%",
            f"{row.quality_loss_pct:+.2f}%"
            + (f" ± {row.quality_loss_stderr_pct:.2f}" if row.quality_loss_stderr_pct else ""),
            f"{row.tokens_per_s:.1f}",
            row.target,
            row.verdict,
        ]
        if with_trtllm:
            cells.insert(3, f"{row.trtllm_bytes:,}" if row.trtllm_bytes else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[Row], path: Path) -> None:
    fields = list(asdict(rows[0]))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)


def write_chart(rows: list[Row], path: Path, model: str) -> None:
    """Size (% of FP32) and quality loss (%) per precision, with the target lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [row.precision for row in rows]
    figure, (size_ax, loss_ax) = plt.subplots(1, 2, figsize=(13, 5.5), constrained_layout=True)
    size_ax.barh(labels, [row.size_pct_of_fp32 for row in rows], color="#4C72B0")
    loss_ax.barh(labels, [row.quality_loss_pct for row in rows], color="#DD8452")
    for axis, index, title in ((size_ax, 0, "bytes on disk, % of FP32"), (loss_ax, 1, "ppl +%")):
        for name, limits in TARGETS.items():
            axis.axvline(limits[index], linestyle="--", color="gray", linewidth=1)
            axis.text(limits[index], len(rows) - 0.5, f" {name} target", fontsize=8)
        axis.set_title(title)
        axis.invert_yaxis()
    loss_ax.set_yticklabels([])
    figure.suptitle(f"{model} on the CPU engine (OpenVINO): size vs perplexity increase")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def machine_line() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores visible, {platform.system()} {platform.release()}"


def _versions() -> str:
    return ", ".join(f"{name} {version}" for name, version in tool_versions(REPORT_TOOLS).items())


def render_markdown(rows: list[Row], details: dict) -> str:
    short = [
        f"`{row.recipe}` ({row.verdict[7:]})" for row in rows if row.verdict.startswith("short")
    ]
    met = [f"`{row.recipe}`" for row in rows if row.verdict == "meets"]
    return "\n".join(
        [
            f"# Quantization report: {details['model']} on the CPU engine",
            "",
            f"- Generated: {details['date']} by `{details['command']}`",
            f"- Machine: {details['machine']}",
            f"- Tools: {details['tools']}",
            f"- Perplexity: {details['perplexity']}",
            f"- Speed: {details['speed']}",
            f"- Meets its target: {', '.join(met) or 'none'}",
            f"- Short of its target: {', '.join(short) or 'none'}",
            "",
            markdown_table(rows),
            "",
            "Bytes are the served IR (`openvino_model.xml` + `.bin`); the tokenizers (same for",
            "every row, ~6 MiB) are excluded. Perplexity ± is its standard error across windows;",
            "quality loss ± is the paired standard error of the change (every row scores the same",
            "windows, so the change is much more precise than either perplexity). tok/s were",
            "measured on a shared, noisy machine: compare rows of one run only.",
            "",
        ]
    )


MeasureFn = Callable[[Path, Progress], Measurement]
SpeedFn = Callable[[list[Path], Progress], list[float]]
BuildFn = Callable[[Recipe, Progress], Path]


def default_build(recipe: Recipe, progress: Progress) -> Path:
    from edgectl.build.builder import build

    return build(recipe, progress=progress).artifact


def model_bytes(artifact: Path) -> int:
    missing = [name for name in MODEL_FILES if not (artifact / name).is_file()]
    if missing:
        raise EdgectlError(f"{artifact}: not a CPU artifact (missing {', '.join(missing)})")
    return sum((artifact / name).stat().st_size for name in MODEL_FILES)


def trtllm_bytes(artifact: Path) -> int | None:
    """Artifact bytes of the sibling TensorRT-LLM build, when the builder made one."""
    sibling = artifact.with_name(artifact.name + ".trtllm")
    if not (sibling / MANIFEST).is_file():
        return None
    files = read_manifest(sibling).artifacts
    return sum(entry.bytes for name, entry in files.items() if name.endswith(".safetensors"))


def default_measure(artifact: Path, progress: Progress) -> Measurement:
    """Bytes and perplexity (speed is measured for all artifacts together, afterwards)."""
    from edgectl.build.quality.perplexity import artifact_perplexity

    progress(f"perplexity of {artifact.name} on build/data/heldout.txt")
    ppl = artifact_perplexity(artifact)
    return Measurement(
        model_bytes=model_bytes(artifact),
        perplexity=ppl.value,
        perplexity_stderr_pct=100.0 * ppl.relative_stderr,
        scored_tokens=ppl.tokens,
        tokens_per_s=float("nan"),
        trtllm_bytes=trtllm_bytes(artifact),
        window_nll=ppl.window_nll,
    )


def default_speeds(artifacts: list[Path], progress: Progress) -> list[float]:
    from edgectl.build.quality.perplexity import interleaved_speeds

    return interleaved_speeds(artifacts, rounds=SPEED_ROUNDS, progress=progress)


def report_recipes(folder: Path = REPORT_DIR) -> list[Path]:
    recipes = sorted(folder.glob("*.yaml"))
    if not recipes:
        raise EdgectlError(f"report: no recipes (*.yaml) in {folder}")
    return recipes


def generate_report(
    recipes: list[Path],
    out: Path,
    progress: Progress = lambda message: None,
    *,
    build_fn: BuildFn = default_build,
    measure_fn: MeasureFn = default_measure,
    speed_fn: SpeedFn = default_speeds,
) -> Path:
    """Build and measure every recipe; write report.md/.csv/.png into ``out``; return the .md."""
    loaded = [load_recipe(path) for path in recipes]
    measured, artifacts = [], []
    for number, recipe in enumerate(loaded, 1):
        progress(f"[{number}/{len(loaded)}] building {recipe.name}")
        artifacts.append(build_fn(recipe, progress))
        progress(f"[{number}/{len(loaded)}] measuring {recipe.name}")
        measured.append((recipe, measure_fn(artifacts[-1], progress)))
    for (_, measurement), speed in zip(measured, speed_fn(artifacts, progress), strict=True):
        measurement.tokens_per_s = speed
    rows = make_rows(measured)
    tokens = {m.scored_tokens for _, m in measured}
    details = {
        "model": model_label(loaded[0].source),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": COMMAND,
        "machine": machine_line(),
        "tools": _versions(),
        "perplexity": (
            f"{'/'.join(map(str, sorted(tokens)))} tokens of build/data/heldout.txt scored in "
            "fixed 512-token windows (each from an empty KV cache), OpenVINO CPU, f32 inference"
        ),
        "speed": (
            f"median of {SPEED_ROUNDS} greedy runs of 128 new tokens, 1 stream, the engine's "
            "ContinuousBatchingPipeline; every model once per round, round-robin, so load from "
            "other jobs hits all rows alike"
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "report.csv")
    write_chart(rows, out / "report.png", details["model"])
    markdown = out / "report.md"
    markdown.write_text(render_markdown(rows, details), encoding="utf-8")
    return markdown
