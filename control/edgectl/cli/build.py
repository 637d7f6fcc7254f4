"""``edgectl build``: recipes -> quantized artifacts (and the quantization report)."""

from __future__ import annotations

from pathlib import Path

import click

from edgectl.cli.context import progress

# The report writes where the user runs it; its recipe set ships with edgectl.
REPORT_OUT = Path("build/report/results")


@click.command()
@click.argument("recipes", nargs=-1, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--target", "targets", multiple=True, type=click.Choice(["cpu", "trtllm"]),
    help="Build only this target of the recipe (repeatable; default: the recipe's targets).",
)  # fmt: skip
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Parent directory for the artifacts (default: the edgectl cache).",
)
@click.option("--force", is_flag=True, help="Rebuild even if the same recipe was built before.")
@click.option(
    "--report", is_flag=True,
    help="Build every recipe (default: build/report/*.yaml) and write the size/quality table.",
)  # fmt: skip
@click.option(
    "--report-out", type=click.Path(path_type=Path, file_okay=False),
    default=REPORT_OUT, show_default=True,
    help="Where --report writes report.md, report.csv and report.png.",
)  # fmt: skip
def build(
    recipes: tuple[Path, ...],
    targets: tuple[str, ...],
    out: Path | None,
    force: bool,
    report: bool,
    report_out: Path,
) -> None:
    """Build RECIPE (a build/*.yaml file) for each of its targets.

    cpu: the OpenVINO model the CPU engine step serves (NNCF quantization).
    trtllm: a TensorRT-LLM checkpoint quantized here with NVIDIA Model Optimizer,
    then `trtllm-build` -- run when TensorRT-LLM is installed, otherwise written as
    an executable plan (build_engine.sh and a Kubernetes Job) for a GPU node.
    Each target gets a manifest (tool versions, hashes) and a rendered Triton
    repository. A finished build of the same recipe is reused unless --force;
    an interrupted build leaves nothing a deploy would pick up.
    """
    if report:
        from edgectl.build.quality.report import REPORT_DIR, generate_report

        chosen = list(recipes) or sorted(REPORT_DIR.glob("*.yaml"))
        if not chosen:
            raise click.UsageError(f"--report: no recipes given and none in {REPORT_DIR}/")
        progress("building and measuring the report recipes")
        path = generate_report(chosen, report_out, progress)
        click.echo(f"report written to {path}")
        return
    if not recipes:
        raise click.UsageError("give a RECIPE (e.g. build/smollm2-135m-int8.yaml) or --report")
    from edgectl.build.builder import build_log_path, build_targets
    from edgectl.build.recipe import load_recipe

    for recipe_path in recipes:
        recipe = load_recipe(recipe_path)
        # Progress lines only: a spinner would write into the build log while it is open.
        results = build_targets(
            recipe, list(targets) or None, out=out, force=force, progress=progress
        )
        for target, result in results.items():
            size = result.manifest.total_bytes
            verb = "reused" if result.reused else "built"
            click.echo(f"{verb} {target}: {result.artifact} ({size / 1e6:.1f} MB)")
            if not result.reused:
                click.echo(f"  library output: {build_log_path(result.artifact)}")
            engine_build = result.manifest.engine_build
            if engine_build and not engine_build.built:
                click.echo(
                    "  TensorRT-LLM is not installed here: the engine compile is pending a GPU.\n"
                    f"  run {result.artifact}/build_engine.sh in the TensorRT-LLM container, or\n"
                    f"  kubectl apply -f {result.artifact}/engine-build-job.yaml"
                )
