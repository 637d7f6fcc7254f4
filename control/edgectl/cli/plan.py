"""``edgectl plan``: size a recipe for a device before buying it or writing the recipe."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgectl.cli.context import Context, pass_context, progress

MATRIX_OUT = Path("plan-results")


@click.command()
@click.option(
    "--recipe",
    "recipe_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A build/*.yaml recipe.",
)
@click.option(
    "--device",
    help="A device from the catalog (h100-sxm, l4, cpu, ...; "
    "--list-devices shows them) or 'local' once calibrated.",
)
@click.option(
    "--model",
    help="Shape catalog entry (e.g. llama-3.1-8b) when the recipe's "
    "checkpoint is not on this machine and its name does not match one.",
)
@click.option(
    "--context",
    type=int,
    help="Tokens one sequence holds, prompt + output (default: the recipe's trtllm.max_seq_len).",
)
@click.option(
    "--input-tokens", type=int, help="Prompt tokens per query (default: context - output)."
)
@click.option(
    "--output-tokens", type=int, help="Generated tokens per query (default: min(256, context / 4))."
)
@click.option(
    "--concurrency",
    type=int,
    help="Requests in flight (default: the recipe's trtllm.max_batch_size).",
)
@click.option("--price-per-hour", type=float, help="USD per device-hour (default: the catalog's).")
@click.option(
    "--api-price-per-1k-tokens",
    type=float,
    help="A hosted API's USD per 1,000 tokens, for the break-even.",
)
@click.option(
    "--kv-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    help="kv_cache_free_gpu_mem_fraction (default: the recipe's).",
)
@click.option("--explain", is_flag=True, help="Show the formula behind every figure.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option(
    "--write-recipe",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a copy of the recipe with the TensorRT-LLM limits this plan chose.",
)
@click.option(
    "--matrix",
    is_flag=True,
    help="Selection matrix: every catalog device x precision (markdown + PNG).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=MATRIX_OUT,
    show_default=True,
    help="Where --matrix writes <recipe>-matrix.md and .png.",
)
@click.option(
    "--calibrate",
    is_flag=True,
    help="Measure this machine (under a minute), save it "
    "as a device, predict the embedded model's tok/s and TTFT.",
)
@click.option(
    "--against",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="An `edgectl loadtest` run directory: predicted vs measured, with the error.",
)
@click.option(
    "--name",
    "device_name",
    default="local",
    show_default=True,
    help="Name --calibrate saves this machine under.",
)
@click.option(
    "--through-server",
    is_flag=True,
    help="--calibrate times short real generations through the running local server "
    "(the engine as served) instead of the engine in this process.",
)
@click.option("--list-devices", is_flag=True, help="List the device catalog and exit.")
@pass_context
def plan(
    ctx: Context,
    recipe_path: Path | None,
    device: str | None,
    model: str | None,
    context: int | None,
    input_tokens: int | None,
    output_tokens: int | None,
    concurrency: int | None,
    price_per_hour: float | None,
    api_price_per_1k_tokens: float | None,
    kv_fraction: float | None,
    explain: bool,
    as_json: bool,
    write_recipe: Path | None,
    matrix: bool,
    out: Path,
    calibrate: bool,
    against: Path | None,
    device_name: str,
    through_server: bool,
    list_devices: bool,
) -> None:
    """Memory, speed, cost and energy of a --recipe on a --device, from datasheet figures.

    Weight and KV-cache bytes, the sequences that fit at --context and the TensorRT-LLM
    limits that follow, decode tok/s per sequence and aggregate (bandwidth-bound below
    the knee, compute-bound past it), TTFT, cost per 1,000 queries and per million
    tokens, energy per query (an estimate from TDP), break-even against an API price.
    Every figure is an estimate from the catalog; --calibrate measures this machine.
    """
    from rich.console import Console

    from edgectl.build.recipe import load_recipe
    from edgectl.plan import catalog, shapes, sizing

    out_console = Console(soft_wrap=True)
    if list_devices:
        _print_devices(out_console, catalog.all_devices())
        return
    if recipe_path is None:
        raise click.UsageError("--recipe is required (a build/*.yaml recipe)")
    recipe = load_recipe(recipe_path)
    shape = shapes.recipe_shape(recipe, model)
    work = sizing.default_workload(
        recipe,
        context,
        input_tokens,
        output_tokens,
        concurrency,
        price_per_hour=price_per_hour,
        api_usd_per_1k_tokens=api_price_per_1k_tokens,
        kv_fraction=kv_fraction,
    )
    if matrix:
        from edgectl.plan.matrix import build_matrix, write_matrix

        table = build_matrix(recipe, shape, work)
        paths = write_matrix(table, out)
        if as_json:
            click.echo(json.dumps(table.as_json(), indent=2))
        else:
            click.echo(paths["md"].read_text(encoding="utf-8"))
            progress(f"matrix: {paths['md']} and {paths['png']}")
        return
    if calibrate:
        from edgectl.plan.calibrate import calibrate_here

        server = ctx.config.server
        grpc_url = f"{server.host}:{server.grpc_port}" if through_server else None
        device_name, device = calibrate_here(
            recipe, shape, device_name, progress, grpc_url, ctx.config.model.name
        )
    else:
        if not device:
            raise click.UsageError("--device is required (or --matrix, --calibrate)")
        device_name, device = device, catalog.get_device(device)
    if against or calibrate:
        from edgectl.plan.calibrate import compare_with_run, predictions

        rows = (
            compare_with_run(recipe, shape, device_name, device, against)
            if against
            else (predictions(recipe, shape, device_name, device))
        )
        _print_rows(out_console, rows, as_json)
        return
    result = sizing.make_plan(recipe, device_name, device, shape, work)
    if write_recipe:
        from edgectl.plan.writeback import write_recipe as write

        write(recipe_path, recipe, result, write_recipe)
        progress(f"wrote {write_recipe} (loads with the recipe schema, checked against the model)")
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
        return
    from edgectl.plan.output import render_plan

    out_console.print(render_plan(result, explain))


def _print_devices(console, devices: dict) -> None:
    """The catalog as a table, then where each device's figures come from."""
    from rich.table import Table

    table = Table("device", "memory GB", "GB/s", "dense TFLOPS", "TDP W", "$/h")
    for name, d in devices.items():
        tflops = ", ".join(f"{k} {v:g}" for k, v in d.tflops.items())
        row = (f"{d.memory_gb:g}", f"{d.bandwidth_gbs:g}", tflops, f"{d.tdp_w:g}")
        table.add_row(name, *row, f"{d.price_per_hour:g}")
    console.print(table)
    for name, d in devices.items():
        console.print(
            f"{name}: {d.title}; {d.source.document} ({d.source.version}; {d.source.figures})",
            highlight=False,
        )


def _print_rows(console, rows: list[dict], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(*rows[0].keys())
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)
