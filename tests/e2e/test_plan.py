"""`edgectl plan` as a user runs it: the real CLI in a subprocess, against shipped recipes.

Plans never need a checkpoint or a GPU: every shipped recipe plans in an empty cache.
The calibration against a real load-test run is slow and marked so; the comparison
logic is covered on a small summary.json in tests/unit/plan.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgectl.build.recipe import check_against_model, load_recipe
from edgectl.config import cache_dir
from edgectl.plan.shapes import catalog_shape
from tests.paths import REPO_ROOT

from .conftest import UNUSED_END_ID, LiveServer

pytestmark = pytest.mark.e2e

RECIPES = sorted((REPO_ROOT / "build").glob("*.yaml"))
LLAMA = "build/llama-3.1-8b-int4-awq.yaml"


def edgectl(command: str, cache: Path) -> subprocess.CompletedProcess:
    """``edgectl COMMAND`` from the checkout with ``cache`` as its edgectl cache."""
    return subprocess.run(
        [sys.executable, "-m", "edgectl.cli", *shlex.split(command)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "EDGECTL_CACHE": str(cache)},
        cwd=REPO_ROOT,
        timeout=300,
    )


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_plans_without_its_checkpoint(recipe: Path, tmp_path: Path) -> None:
    result = edgectl(f"plan --recipe {shlex.quote(str(recipe))} --device l40s --json", tmp_path)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["fits"] and plan["model"]["from"].startswith("shape catalog entry")
    assert plan["quantities"]["weights_gb"]["value"] > 0


def test_the_documented_commands(tmp_path: Path) -> None:
    table = edgectl(
        f"plan --recipe {LLAMA} --device h100-sxm --context 4096 --concurrency 32", tmp_path
    )
    assert table.returncode == 0, table.stderr
    for label in (
        "weight bytes", "KV bytes per token", "sequences of 4096 tokens that fit",
        "TTFT at concurrency 32", "cost per 1,000 queries", "energy per query",
    ):  # fmt: skip
        assert label in table.stdout
    priced = edgectl(
        f"plan --recipe {LLAMA} --device l4 --price-per-hour 0.8 "
        "--api-price-per-1k-tokens 0.0006 --json",
        tmp_path,
    )
    plan = json.loads(priced.stdout)
    assert plan["workload"]["price_per_hour"] == 0.8
    assert "break_even_queries_per_day" in plan["quantities"]
    explained = edgectl(f"plan --recipe {LLAMA} --device l4 --explain", tmp_path)
    assert "2 x layers 32 x kv_heads 8 x head_dim 128" in words(explained.stdout)


def test_matrix_writes_markdown_and_png(tmp_path: Path) -> None:
    out = tmp_path / "matrix"
    result = edgectl(f"plan --matrix --recipe {LLAMA} --context 4096 --out {out}", tmp_path)
    assert result.returncode == 0, result.stderr
    md = (out / "llama-3.1-8b-int4-awq-matrix.md").read_text()
    assert md.count("\n| ") == 1 + 8  # header + the eight catalog devices
    assert "* best for latency:" in md and "* best for cost:" in md and "* best for energy:" in md
    assert (out / "llama-3.1-8b-int4-awq-matrix.png").stat().st_size > 10_000


def test_write_recipe_round_trips_through_the_schema(tmp_path: Path) -> None:
    out = tmp_path / "sized.yaml"
    command = f"plan --recipe {LLAMA} --device l4 --context 4096 --concurrency 8"
    result = edgectl(f"{command} --write-recipe {out}", tmp_path)
    assert result.returncode == 0, result.stderr
    written = load_recipe(out)
    check_against_model(written, catalog_shape("llama-3.1-8b").as_config())
    assert written.trtllm.max_seq_len == 4096
    assert yaml.safe_load(out.read_text())["trtllm"]["serving"]["batch_scheduler_policy"] == (
        "max_utilization"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("--device h900", "--device h900: unknown device; known:"),
        ("--device l4 --context 999999",
         "--context 999999 is over llama-3.1-8b's maximum of 131072 tokens"),
        ("--device l4 --model gpt-5", "--model gpt-5: not in the shape catalog"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_naming_the_option(options, message, tmp_path: Path) -> None:
    result = edgectl(f"plan --recipe {LLAMA} {options}", tmp_path)
    assert result.returncode == 1
    assert message in words(result.stderr)


def test_a_recipe_without_config_or_catalog_match(tmp_path: Path) -> None:
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("name: my-model-int8\nsource: ./ckpt\ntargets: [trtllm]\n")
    result = edgectl(f"plan --recipe {recipe} --device l4", tmp_path)
    assert result.returncode == 1
    assert "no checkpoint config at" in words(result.stderr)
    assert "pass --model NAME" in words(result.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("through_server", [False, True], ids=["in-process", "through-server"])
def test_calibrate_against_a_real_load_test(
    live_server: LiveServer, tmp_path: Path, through_server: bool
) -> None:
    """Load-test the real server, calibrate this machine (the engine in-process, or short
    generations through the server), compare. Loose bounds: the machine is shared; the
    README's table holds the measured errors."""
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        yaml.safe_dump({
            "name": "plan-e2e", "input_tokens": 128, "output_tokens": 64,
            "end_id": UNUSED_END_ID, "concurrency": [1, 4], "duration_s": 8,
            "max_requests": 100, "warmup_requests": 2,
        })
    )  # fmt: skip
    state = live_server.state
    artifact = Path(live_server.config.model.artifact)
    run_dir = tmp_path / "run"
    loadtest = edgectl(
        f"loadtest --profile {profile} --out {run_dir} --tokenizer {artifact} "
        f"--target grpc://{state.host}:{state.grpc_port}",
        cache_dir(),
    )
    assert loadtest.returncode == 0, loadtest.stderr
    cache = tmp_path / "cache"  # the calibrated device goes here, not into the user's cache
    (cache / "models").mkdir(parents=True)
    (cache / "models" / "smollm2-135m-int8").symlink_to(artifact)
    ports = f"--set server.http_port={state.http_port} --set server.grpc_port={state.grpc_port}"
    mode = "--through-server" if through_server else ""
    result = edgectl(
        f"{ports} plan --recipe build/smollm2-135m-int8.yaml --device cpu --calibrate {mode} "
        f"--against {run_dir} --json",
        cache,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["concurrency"] for row in rows] == [1, 4]
    for row in rows:
        assert row["predicted tok/s"] > 0 and abs(row["tok/s error %"]) < 100
    assert "local:" in (cache / "plan" / "devices.yaml").read_text()
