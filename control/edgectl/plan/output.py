"""Terminal output of a plan: a rich table, then one line per formula with ``--explain``."""

from __future__ import annotations

from edgectl.plan.sizing import Plan


def number(value: float) -> str:
    """Three significant digits for small values, thousands separators for large ones."""
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return f"{value:.3g}"


def render_plan(plan: Plan, explain: bool):
    """A rich renderable (imported lazily: rich is only needed when printing)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    shape = plan.shape
    work = plan.workload
    lines = [
        Text.from_markup(
            f"[bold]{plan.recipe}[/bold] on [bold]{plan.device}[/bold] ({plan.device_title}"
            f"{f', {plan.devices} devices' if plan.devices > 1 else ''}), {plan.engine} engine"
        ),
        Text(
            f"model {shape.name}: {shape.num_hidden_layers} layers, hidden {shape.hidden_size}, "
            f"intermediate {shape.intermediate_size}, heads {shape.num_attention_heads}/"
            f"{shape.num_key_value_heads} KV, head_dim {shape.head_dim}, vocab {shape.vocab_size}"
            f"{', tied embeddings' if shape.tie_word_embeddings else ''} (from {shape.origin})"
        ),
        Text(
            f"workload: context {work.context}, {work.input_tokens} tokens in, "
            f"{work.output_tokens} out, concurrency {work.concurrency}"
        ),
    ]
    table = Table(show_header=True, header_style="bold")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("unit")
    for q in plan.quantities:
        table.add_row(f"{q.label} *" if q.estimate else q.label, number(q.value), q.unit)
    parts = [*lines, table, Text("* estimate from TDP x utilisation: no power counters here")]
    if explain:
        parts.append(Text("formulas:", style="bold"))
        parts.extend(Text(f"  {q.label}: {q.formula}") for q in plan.quantities)
    if plan.trtllm:
        settings = ", ".join(f"{k}={v}" for k, v in plan.trtllm.items())
        parts.append(Text(f"TensorRT-LLM: {settings} (--write-recipe PATH writes them)"))
    parts.extend(Text.from_markup(f"[yellow]note:[/yellow] {note}") for note in plan.notes)
    return Group(*parts)
