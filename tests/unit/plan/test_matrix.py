"""The selection matrix: one cell per device x precision, the best cell per constraint."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgectl.build.recipe import load_recipe
from edgectl.plan import catalog, matrix, sizing
from edgectl.plan.shapes import recipe_shape
from tests.paths import REPO_ROOT

LLAMA = REPO_ROOT / "build" / "llama-3.1-8b-int4-awq.yaml"


@pytest.fixture
def built(tmp_path: Path, isolated_cache) -> matrix.Matrix:
    recipe = load_recipe(LLAMA)
    work = sizing.Workload(context=4096, input_tokens=3840, output_tokens=256, concurrency=16)
    quality = tmp_path / "report.csv"
    quality.write_text(
        "recipe,precision,quality_loss_pct\nr1,fp16,0.5\nr2,int8_wo,0.4\nr3,int8_sq,9\n"
        'r4,int4_awq g128,3\nr5,"mixed int4_awq/int8_wo g64, head int8_wo",1\n'
    )
    devices = {k: v for k, v in catalog.shipped_devices().items() if k in ("h100-sxm", "l4")}
    return matrix.build_matrix(recipe, recipe_shape(recipe), work, devices, quality)


def test_one_cell_per_device_and_precision(built: matrix.Matrix) -> None:
    assert set(built.cells) == {(d, p) for d in ("h100-sxm", "l4") for p in matrix.PRECISIONS}


def test_each_constraint_has_exactly_one_best_cell(built: matrix.Matrix) -> None:
    cells = list(built.cells.values())
    for constraint in matrix.CONSTRAINTS:
        winners = [c for c in cells if constraint in c.best]
        assert len(winners) == 1
        winner = winners[0]
        if constraint == "cost":
            assert all(
                winner.plan.value("usd_per_1k_queries") <= c.plan.value("usd_per_1k_queries")
                for c in cells
                if c.plan.fits
            )
    quality = next(c for c in cells if "quality" in c.best)
    # int8_wo has the lowest loss in the report; of its cells the cheaper one wins
    assert quality.precision == "int8_wo"


def test_fp8_kv_only_where_the_device_has_fp8_and_never_with_int8(built) -> None:
    assert built.cells[("h100-sxm", "int4_awq")].kv_cache == "fp8"
    assert built.cells[("h100-sxm", "int8_wo")].kv_cache == "int8"
    a100 = catalog.shipped_devices()["a100-80gb"]
    assert matrix.variant(load_recipe(LLAMA), "int4_awq", a100).precision.kv_cache == "fp16"


def test_markdown_and_png(built: matrix.Matrix, tmp_path: Path) -> None:
    paths = matrix.write_matrix(built, tmp_path / "out")
    text = paths["md"].read_text()
    assert "| h100-sxm |" in text and "| l4 |" in text
    assert text.count("best: ") >= 1 and "* best for cost: " in text
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cell_text_has_a_fixed_number_of_lines(built: matrix.Matrix) -> None:
    # the PNG sizes its cells for six lines (+ the "best" line): more would overlap
    assert {len(matrix.cell_lines(c)) for c in built.cells.values()} <= {1, 6}


def test_the_shipped_report_gives_quality_per_precision() -> None:
    losses, source = matrix.quality_by_precision(REPO_ROOT / "build/report/results/report.csv")
    assert source and losses["fp16"] < losses["int8_wo"] < losses["int4_awq"]


def test_no_two_labels_in_the_png_overlap(built: matrix.Matrix) -> None:
    import matplotlib.pyplot as plt

    fig = matrix.matrix_figure(built)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in fig.axes[0].texts]
    assert len(boxes) == 1 + len(matrix.PRECISIONS) + 2 + 2 * len(matrix.PRECISIONS)
    for i, first in enumerate(boxes):
        for second in boxes[i + 1 :]:
            assert not first.overlaps(second), (first, second)
    plt.close(fig)
