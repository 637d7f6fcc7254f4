"""The quantization report: every recipe of a set built, measured and tabulated.

One table (Markdown + CSV + PNG) of precision x serving settings -> {bytes on disk, memory
reduction vs FP32, peak serving memory, held-out perplexity, quality loss, CPU tok/s at 1
and 16 streams, KV-cache bytes per token and capacity}, checked against the targets (INT8
<= 30% of FP32 bytes and <= 1% ppl; INT4 <= 18% and <= 5%; a GGUF served as it is <= 18%
and <= 0.5%). Rows are the set's recipes with the engine's default serving settings, plus
the rows of ``serving.yaml`` beside them: a recipe of the set measured with other load-time
settings (dynamic activation quantization, KV-cache precision). Measuring is injected so
the table logic is tested without models.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from edgectl.build.quality.perplexity import EngineSettings
from edgectl.build.quality.serving_probe import KV_BLOCKS, ServingSpeed
from edgectl.build.recipe import GGUF_NATIVE, INT4_FORMATS, Recipe, load_recipe
from edgectl.build.sources import model_label
from edgectl.config import StrictModel, load_validated_yaml
from edgectl.errors import EdgectlError
from edgectl.progress import Progress
from edgectl.resources import recipes_dir
from edgectl.runtime.manifest import MANIFEST, read_manifest, tool_versions

REPORT_DIR = recipes_dir() / "report"
SERVING_FILE = "serving.yaml"  # extra rows: recipes of the set with other engine settings
MODEL_FILES = ("openvino_model.xml", "openvino_model.bin")
COMMAND = "edgectl build --report"
# Quality targets: (largest share of FP32 bytes, largest perplexity increase), in %.
TARGETS = {"int8": (30.0, 1.0), "int4": (18.0, 5.0), "gguf": (18.0, 0.5)}
SPEED_ROUNDS = 3
REPORT_TOOLS = ("openvino", "openvino-genai", "nncf", "optimum-intel", "transformers")
# KV-cache capacity: sequences of this many tokens that fit in this many bytes of cache.
KV_BUDGET_BYTES = 128 * 2**20
KV_SEQUENCE_TOKENS = 1024
KV_BLOCK_TOKENS = 32  # the CPU plugin's paged-cache block
# Bytes per cached element. The CPU plugin's u8 cache also stores f32 scales and zero
# points: keys per channel per block (8 extra rows of head_dim bytes), values per token.
KV_ELEMENT_BYTES = {"f32": 4, "f16": 2, "u8": 1}
KV_U8_EXTRA = 8


class ServingRow(StrictModel):
    """One ``serving.yaml`` row: a recipe of the set (by name) with other engine settings."""

    recipe: str
    dynamic_quantization_group_size: int = Field(32, ge=0, le=4096)
    kv_cache_precision: Literal["u8", "f16", "f32"] | None = None

    @property
    def settings(self) -> EngineSettings:
        return EngineSettings(self.dynamic_quantization_group_size, self.kv_cache_precision)


class ServingRows(StrictModel):
    rows: list[ServingRow] = []


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
    serving: str = ""  # the engine settings it ran with (activations, KV cache)
    tokens_per_s_16: float | None = None
    peak_rss_bytes: int | None = None
    kv_bytes_per_token: int | None = None


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
    serving: str = ""
    tokens_per_s_16: float | None = None
    peak_rss_bytes: int | None = None
    kv_bytes_per_token: int | None = None
    kv_sequences_in_budget: int | None = None


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
    if precision.weights == GGUF_NATIVE:
        label += f" (Q4_1 {recipe.cpu.gguf_q4_1})"
    return label


def serving_label(settings: EngineSettings, artifact_kv: str) -> str:
    """``act dyn g32, KV f16``: how activations are handled and what the KV cache holds."""
    group = settings.dynamic_quantization_group_size
    activations = f"act dyn g{group}" if group else "act float"
    return f"{activations}, KV {settings.kv_cache_precision or artifact_kv}"


def kv_block_bytes(model_config: dict, precision: str) -> int:
    """Bytes of one 32-token KV-cache block: K and V of every layer and KV head."""
    heads = int(model_config.get("num_key_value_heads") or model_config["num_attention_heads"])
    head_dim = int(
        model_config.get("head_dim")
        or int(model_config["hidden_size"]) // int(model_config["num_attention_heads"])
    )
    element = KV_ELEMENT_BYTES[precision]
    key = KV_BLOCK_TOKENS * head_dim * element
    value = KV_BLOCK_TOKENS * head_dim * element
    if precision == "u8":
        key += KV_U8_EXTRA * head_dim
        value += KV_BLOCK_TOKENS * KV_U8_EXTRA
    return int(model_config["num_hidden_layers"]) * heads * (key + value)


def kv_bytes_per_token(model_config: dict, precision: str) -> int:
    """KV-cache bytes one token occupies (a block's bytes / its 32 tokens)."""
    return kv_block_bytes(model_config, precision) // KV_BLOCK_TOKENS


def sequences_in_budget(bytes_per_token: int) -> int:
    """Sequences of KV_SEQUENCE_TOKENS that fit in KV_BUDGET_BYTES of 32-token blocks."""
    blocks = KV_BUDGET_BYTES // (bytes_per_token * KV_BLOCK_TOKENS)
    return blocks // -(-KV_SEQUENCE_TOKENS // KV_BLOCK_TOKENS)


def target_class(recipe: Recipe) -> str | None:
    """``gguf`` for a GGUF served as it is, ``int4`` if any layer is 4-bit, ``int8`` if the
    smallest format is 8-bit, else None."""
    formats = {recipe.precision.weights}
    if recipe.mixed_precision is not None:
        formats |= {item.weights for item in recipe.mixed_precision.layers}
    if GGUF_NATIVE in formats:
        return "gguf"
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
    )  # the first FP32 row: the set's recipes come before their serving variants
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
                serving=m.serving,
                tokens_per_s_16=_round(m.tokens_per_s_16, 1),
                peak_rss_bytes=m.peak_rss_bytes,
                kv_bytes_per_token=m.kv_bytes_per_token,
                kv_sequences_in_budget=(
                    sequences_in_budget(m.kv_bytes_per_token) if m.kv_bytes_per_token else None
                ),
            )
        )
    return rows


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _optional(value: float | int | None, text: str) -> str:
    return "-" if value is None else text


def markdown_table(rows: list[Row]) -> str:
    with_trtllm = any(row.trtllm_bytes for row in rows)
    head = [
        "precision",
        "serving",
        "recipe",
        "bytes on disk",
        "% of FP32",
        "memory reduction",
        "peak serving RSS",
        "perplexity",
        "quality loss",
        "CPU tok/s (1 stream)",
        "CPU tok/s (16 streams)",
        "KV bytes/token",
        f"{KV_SEQUENCE_TOKENS}-token seqs in {KV_BUDGET_BYTES // 2**20} MiB KV",
        "target",
        "verdict",
    ]
    if with_trtllm:
        head.insert(4, "TRT-LLM ckpt bytes")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [
            row.precision,
            row.serving or "-",
            f"`{row.recipe}`",
            f"{row.model_bytes:,} ({_mib(row.model_bytes)})",
            f"{row.size_pct_of_fp32:.1f}%",
            f"{row.reduction_x:.2f}x",
            _optional(row.peak_rss_bytes, _mib(row.peak_rss_bytes or 0)),
            f"{row.perplexity:.3f} ± {row.perplexity_stderr_pct:.1f}%",
            f"{row.quality_loss_pct:+.2f}%"
            + (f" ± {row.quality_loss_stderr_pct:.2f}" if row.quality_loss_stderr_pct else ""),
            f"{row.tokens_per_s:.1f}",
            _optional(row.tokens_per_s_16, f"{row.tokens_per_s_16 or 0:.1f}"),
            _optional(row.kv_bytes_per_token, f"{row.kv_bytes_per_token or 0:,}"),
            _optional(row.kv_sequences_in_budget, str(row.kv_sequences_in_budget)),
            row.target,
            row.verdict,
        ]
        if with_trtllm:
            cells.insert(4, f"{row.trtllm_bytes:,}" if row.trtllm_bytes else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[Row], path: Path) -> None:
    fields = list(asdict(rows[0]))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)


def row_label(row: Row) -> str:
    """A chart label: precision, then the serving settings on a second line."""
    return f"{row.precision}\n{row.serving}" if row.serving else row.precision


def write_chart(rows: list[Row], path: Path, model: str) -> None:
    import matplotlib.pyplot as plt

    figure = chart_figure(rows, model)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def chart_figure(rows: list[Row], model: str):
    """Size (% of FP32), quality loss (%) and tok/s per row, with the target lines.

    The figure grows with the rows and the target names sit in the titles, so labels
    never overlap bars or each other.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [row_label(row) for row in rows]
    positions = list(range(len(rows)))
    figure, (size_ax, loss_ax, speed_ax) = plt.subplots(
        1, 3, figsize=(17, 1.6 + 0.62 * len(rows)), sharey=True, constrained_layout=True
    )
    size_ax.barh(positions, [row.size_pct_of_fp32 for row in rows], color="#4C72B0")
    loss_ax.barh(positions, [row.quality_loss_pct for row in rows], color="#DD8452")
    speed_ax.barh(
        [p - 0.2 for p in positions], [row.tokens_per_s for row in rows], 0.4, label="1 stream"
    )
    speed_ax.barh(
        [p + 0.2 for p in positions],
        [row.tokens_per_s_16 or 0 for row in rows],
        0.4,
        label="16 streams",
    )
    speed_ax.legend(loc="lower right", fontsize=8)
    speed_ax.set_title("CPU tok/s")
    for axis, index, title in ((size_ax, 0, "bytes on disk, % of FP32"), (loss_ax, 1, "ppl +%")):
        limits = sorted({limits[index] for limits in TARGETS.values()})
        for limit in limits:
            axis.axvline(limit, linestyle="--", color="gray", linewidth=1)
        names = [
            "/".join(name for name, pair in TARGETS.items() if pair[index] == limit)
            for limit in limits
        ]
        axis.set_title(
            title
            + "\n(dashed: "
            + ", ".join(f"{name} {limit:g}%" for name, limit in zip(names, limits, strict=True))
            + " targets)",
            fontsize=10,
        )
    size_ax.set_yticks(positions, labels, fontsize=8)
    size_ax.invert_yaxis()
    figure.suptitle(f"{model} on the CPU engine (OpenVINO): size, perplexity increase, speed")
    return figure


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
    def named(row: Row) -> str:
        return f"`{row.recipe}`" + (f" [{row.serving}]" if row.serving else "")

    short = [f"{named(row)} ({row.verdict[7:]})" for row in rows if row.verdict.startswith("short")]
    met = [named(row) for row in rows if row.verdict == "meets"]
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
            "measured on a shared, noisy machine: compare rows of one run only. Peak serving RSS",
            "is the peak resident memory of a process running the engine's pipeline for that row",
            f"(Python and the OpenVINO libraries included; KV cache fixed at {KV_BLOCKS} blocks of",
            f"{KV_BLOCK_TOKENS} tokens). KV bytes/token are computed from the model's shape and",
            "the CPU plugin's cache layout (u8 adds f32 scales and zero points: keys per channel",
            "and block, values per token).",
            "",
        ]
    )


MeasureFn = Callable[[Path, EngineSettings, Progress], Measurement]
SpeedFn = Callable[[list[tuple[Path, EngineSettings]], Progress], list[ServingSpeed]]
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


def artifact_kv_cache(artifact: Path) -> str:
    """The KV-cache precision the artifact asks for (its recipe's), f16 when unrecorded."""
    record = artifact / "quantization.json"
    if record.is_file():
        return json.loads(record.read_text(encoding="utf-8")).get("kv_cache") or "f16"
    return "f16"


def default_measure(
    artifact: Path,
    settings: EngineSettings,
    progress: Progress,
    max_windows: int | None = None,
) -> Measurement:
    """Bytes, KV bytes and perplexity (speed is measured for all rows together, afterwards);
    ``max_windows`` scores only the first windows of the held-out text (quicker runs)."""
    from edgectl.build.quality.perplexity import artifact_perplexity

    kv = settings.kv_cache_precision or artifact_kv_cache(artifact)
    label = serving_label(settings, kv)
    progress(f"perplexity of {artifact.name} [{label}] on build/data/heldout.txt")
    ppl = artifact_perplexity(artifact, max_windows=max_windows, settings=settings)
    model_config = json.loads((artifact / "config.json").read_text(encoding="utf-8"))
    return Measurement(
        model_bytes=model_bytes(artifact),
        perplexity=ppl.value,
        perplexity_stderr_pct=100.0 * ppl.relative_stderr,
        scored_tokens=ppl.tokens,
        tokens_per_s=float("nan"),
        trtllm_bytes=trtllm_bytes(artifact),
        window_nll=ppl.window_nll,
        serving=label,
        kv_bytes_per_token=kv_bytes_per_token(model_config, kv),
    )


def default_speeds(
    entries: list[tuple[Path, EngineSettings]], progress: Progress
) -> list[ServingSpeed]:
    """Every row's speed run, round-robin, each in its own process: medians, peak RSS."""
    from edgectl.build.quality.perplexity import interleaved_runs
    from edgectl.build.quality.serving_probe import measure_in_subprocess

    runs = interleaved_runs(
        entries, SPEED_ROUNDS, lambda entry: measure_in_subprocess(*entry), progress
    )
    return [
        ServingSpeed(
            tokens_per_s_1=statistics.median(r.tokens_per_s_1 for r in row),
            tokens_per_s_16=statistics.median(r.tokens_per_s_16 for r in row),
            peak_rss_bytes=max(r.peak_rss_bytes for r in row),
        )
        for row in runs
    ]


def report_recipes(folder: Path = REPORT_DIR) -> list[Path]:
    recipes = sorted(path for path in folder.glob("*.yaml") if path.name != SERVING_FILE)
    if not recipes:
        raise EdgectlError(f"report: no recipes (*.yaml) in {folder}")
    return recipes


def serving_rows(recipes: list[Path], loaded: list[Recipe]) -> list[tuple[Recipe, ServingRow]]:
    """The ``serving.yaml`` rows (beside the first recipe) whose recipe is in this run."""
    path = recipes[0].parent / SERVING_FILE
    if not path.is_file():
        return []
    by_name = {recipe.name: recipe for recipe in loaded}
    rows = load_validated_yaml(path, ServingRows, "report serving rows").rows
    unknown = sorted({row.recipe for row in rows} - {r.name for r in loaded})
    known = [load_recipe(p).name for p in report_recipes(path.parent)]
    if set(unknown) - set(known):
        raise EdgectlError(f"{path}: no recipe named {', '.join(unknown)} in {path.parent}")
    return [(by_name[row.recipe], row) for row in rows if row.recipe in by_name]


def generate_report(
    recipes: list[Path],
    out: Path,
    progress: Progress = lambda message: None,
    *,
    build_fn: BuildFn = default_build,
    measure_fn: MeasureFn = default_measure,
    speed_fn: SpeedFn = default_speeds,
) -> Path:
    """Build and measure every recipe (and serving row); write report.md/.csv/.png into
    ``out``; return the .md."""
    loaded = [load_recipe(path) for path in recipes]
    entries = [(recipe, EngineSettings()) for recipe in loaded]
    entries += [(recipe, row.settings) for recipe, row in serving_rows(recipes, loaded)]
    built: dict[str, Path] = {}
    measured, speed_entries = [], []
    for number, (recipe, settings) in enumerate(entries, 1):
        if recipe.name not in built:
            progress(f"[{number}/{len(entries)}] building {recipe.name}")
            built[recipe.name] = build_fn(recipe, progress)
        progress(f"[{number}/{len(entries)}] measuring {recipe.name}")
        measured.append((recipe, measure_fn(built[recipe.name], settings, progress)))
        speed_entries.append((built[recipe.name], settings))
    for (_, measurement), speed in zip(measured, speed_fn(speed_entries, progress), strict=True):
        measurement.tokens_per_s = speed.tokens_per_s_1
        measurement.tokens_per_s_16 = speed.tokens_per_s_16
        measurement.peak_rss_bytes = speed.peak_rss_bytes
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
            "fixed 512-token windows (each from an empty KV cache, fed 64 tokens at a time so "
            "later tokens read the KV cache), OpenVINO CPU, f32 inference, the row's settings"
        ),
        "speed": (
            f"median of {SPEED_ROUNDS} greedy runs (1 stream x 64 new tokens, 16 concurrent "
            "streams x 32), the engine's ContinuousBatchingPipeline with the row's "
            "settings, one process per row and round; every row once per round, round-robin, "
            "so load from other jobs hits all rows alike"
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "report.csv")
    write_chart(rows, out / "report.png", details["model"])
    markdown = out / "report.md"
    markdown.write_text(render_markdown(rows, details), encoding="utf-8")
    return markdown
