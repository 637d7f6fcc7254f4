from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from edgectl.build.quality.perplexity import EngineSettings
from edgectl.build.quality.report import (
    COMMAND,
    REPORT_DIR,
    SERVING_FILE,
    Measurement,
    chart_figure,
    generate_report,
    kv_block_bytes,
    kv_bytes_per_token,
    make_rows,
    markdown_table,
    paired_stderr_pct,
    precision_label,
    report_recipes,
    sequences_in_budget,
    serving_label,
    verdict,
)
from edgectl.build.quality.serving_probe import ServingSpeed
from edgectl.build.recipe import Recipe, check_against_model, load_recipe
from edgectl.errors import EdgectlError
from tests.model_shapes import SMOLLM2_CONFIG

SMOLLM2 = SMOLLM2_CONFIG
FP32_BYTES = 538_000_000


def recipe(name: str, weights: str, **extra) -> Recipe:
    data = {"name": name, "precision": {"weights": weights, "group_size": 64}} | extra
    if weights in ("int8_sq", "int4_awq", "int4_gptq"):
        data["calibration"] = {"mode": "static"}
    return Recipe.model_validate(data)


def measurement(size: int, ppl: float, serving: str = "") -> Measurement:
    return Measurement(size, ppl, 2.0, 15_000, 50.0, serving=serving)


def test_rows_are_relative_to_fp32_and_checked_against_the_targets():
    rows = make_rows(
        [
            (recipe("ref", "fp32"), measurement(FP32_BYTES, 20.0)),
            (recipe("i8", "int8_wo"), measurement(FP32_BYTES // 4, 20.1)),
            (recipe("i8bad", "int8_wo"), measurement(FP32_BYTES // 2, 20.4)),
            (recipe("i4", "int4_awq"), measurement(FP32_BYTES // 6, 20.9)),
            (recipe("i4bad", "int4_wo"), measurement(FP32_BYTES // 5, 22.0)),
        ]
    )
    by_name = {row.recipe: row for row in rows}
    assert by_name["ref"].verdict == "reference"
    assert by_name["i8"].size_pct_of_fp32 == 25.0
    assert by_name["i8"].reduction_x == 4.0
    assert by_name["i8"].quality_loss_pct == pytest.approx(0.5)
    assert by_name["i8"].verdict == "meets"
    assert by_name["i8bad"].verdict == "short: size 50.0% > 30%, ppl +2.00% > 1%"
    assert by_name["i4"].verdict == "meets"
    assert by_name["i4bad"].verdict == "short: size 20.0% > 18%, ppl +10.00% > 5%"


def test_a_set_without_fp32_is_refused():
    with pytest.raises(EdgectlError, match="needs an fp32 recipe"):
        make_rows([(recipe("i8", "int8_wo"), measurement(1, 1.0))])


def test_verdict_classes():
    assert verdict(None, 50.0, 0.0) == "-"
    assert verdict("int4", 18.0, 5.0) == "meets"  # the limits themselves are allowed


def test_mixed_label_names_every_format_and_the_head():
    mixed = recipe(
        "mix",
        "int4_awq",
        mixed_precision={
            "layers": [{"range": [0, 1], "weights": "int8_wo"}],
            "lm_head": "int8_wo",
        },
    )
    assert precision_label(mixed) == "mixed int4_awq/int8_wo g64, head int8_wo"


def test_shipped_report_set_covers_the_issue_and_fits_the_model():
    recipes = [load_recipe(path) for path in report_recipes()]
    formats = {r.precision.weights for r in recipes if r.mixed_precision is None}
    assert formats == {
        "fp32", "fp16", "int8_wo", "int8_sq", "int4_wo", "int4_awq", "int4_gptq", "gguf-native"
    }  # fmt: skip
    gguf_modes = {r.cpu.gguf_q4_1 for r in recipes if r.precision.weights == "gguf-native"}
    assert gguf_modes == {"exact", "rounded", "add"}
    assert sum(r.mixed_precision is not None for r in recipes) == 1
    assert len({r.name for r in recipes}) == len(recipes)
    for item in recipes:
        check_against_model(item, SMOLLM2)  # group sizes divide 576 and 1536, ranges fit


def test_generate_report_writes_markdown_csv_and_png(tmp_path):
    sizes = {"fp32": FP32_BYTES, "fp16": FP32_BYTES // 2}
    built: list[str] = []

    def fake_build(item: Recipe, progress) -> Path:
        built.append(item.name)
        return tmp_path / item.name

    def fake_measure(artifact: Path, settings: EngineSettings, progress) -> Measurement:
        weights = load_recipe(paths[built.index(artifact.name)]).precision.weights
        label = serving_label(settings, "f16")
        return measurement(sizes.get(weights, FP32_BYTES // 5), 20.0 + len(built) / 10, label)

    def fake_speeds(entries, progress) -> list[ServingSpeed]:
        return [ServingSpeed(float(len(a.name)), 100.0, 2**30) for a, _ in entries]

    paths = report_recipes(REPORT_DIR)
    assert SERVING_FILE not in {path.name for path in paths}
    messages: list[str] = []
    out = tmp_path / "results"
    markdown = generate_report(
        paths,
        out,
        messages.append,
        build_fn=fake_build,
        measure_fn=fake_measure,
        speed_fn=fake_speeds,
    )
    assert built == [load_recipe(path).name for path in paths]  # each recipe built once
    assert any("building" in message for message in messages)
    text = markdown.read_text(encoding="utf-8")
    assert COMMAND in text and "| precision | serving |" in text
    with (out / "report.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    extra = [row for row in rows[len(built) :]]
    assert [row["recipe"] for row in rows[: len(built)]] == built
    assert {row["serving"] for row in rows[: len(built)]} == {"act dyn g32, KV f16"}
    assert {row["serving"] for row in extra} == {
        "act float, KV f16", "act dyn g32, KV u8", "act dyn g32, KV f32"
    }  # fmt: skip
    assert rows[0]["verdict"] == "reference"
    assert [float(row["tokens_per_s"]) for row in rows[: len(built)]] == [
        float(len(name)) for name in built
    ]
    assert {row["peak_rss_bytes"] for row in rows} == {str(2**30)}
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_serving_rows_must_name_a_recipe_of_the_set(tmp_path: Path) -> None:
    for path in report_recipes(REPORT_DIR)[:1]:
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / SERVING_FILE).write_text("rows:\n  - {recipe: nowhere, kv_cache_precision: u8}\n")
    with pytest.raises(EdgectlError, match="no recipe named nowhere"):
        generate_report(report_recipes(tmp_path), tmp_path / "out")
    (tmp_path / SERVING_FILE).write_text("rows:\n  - {recipe: x, kv_cache_precision: fp8}\n")
    with pytest.raises(EdgectlError, match="rows.0.kv_cache_precision"):
        generate_report(report_recipes(tmp_path), tmp_path / "out")


def test_kv_cache_bytes_and_capacity_follow_the_element_type() -> None:
    # SmolLM2: 30 layers x 3 KV heads x 64 dims, K and V
    assert kv_bytes_per_token(SMOLLM2 | {"num_attention_heads": 9}, "f32") == 46_080
    f16 = kv_bytes_per_token(SMOLLM2, "f16")
    u8 = kv_bytes_per_token(SMOLLM2, "u8")
    # u8: keys (32 + 8) x 64 bytes per block and head, values 64 + 8 bytes per token and head
    assert (f16, u8) == (23_040, 30 * 3 * (40 * 64 + 32 * 72) // 32)
    # 128 MiB of 32-token blocks, 1024-token sequences (32 blocks each)
    assert sequences_in_budget(f16) == (128 * 2**20 // (f16 * 32)) // 32 == 5
    assert sequences_in_budget(u8) == 9


@pytest.fixture(scope="module")
def tiny_ir(tiny_llama: Path, tmp_path_factory) -> Path:
    """The tiny Llama's float IR, exported into a private cache."""
    from edgectl.build.cpu import float_export

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGECTL_CACHE", str(tmp_path_factory.mktemp("cache")))
        return float_export(tiny_llama, lambda message: None)


@pytest.mark.parametrize("precision", ["u8", "f16", "f32"])
def test_kv_block_bytes_match_the_cpu_plugins_cache(
    tiny_llama: Path, tiny_ir: Path, precision: str
) -> None:
    """The block size the report computes equals the cache tensors OpenVINO's CPU plugin asks
    for once the model is in paged-attention form (as OpenVINO GenAI serves it)."""
    import json

    import openvino as ov
    from openvino._offline_transformations import paged_attention_transformation

    model = ov.Core().read_model(tiny_ir / "openvino_model.xml")
    paged_attention_transformation(model, False, False)
    config = {"KV_CACHE_PRECISION": precision, "INFERENCE_PRECISION_HINT": "f32"}
    compiled = ov.Core().compile_model(model, "CPU", config)
    block = 0
    for port in compiled.inputs:
        if port.get_any_name().startswith(("key_cache.", "value_cache.")):
            shape = port.get_partial_shape()
            per_block = math.prod(shape[i].get_length() for i in range(1, shape.rank.get_length()))
            block += per_block * port.get_element_type().size
    shape = json.loads((tiny_llama / "config.json").read_text())
    assert kv_block_bytes(shape, precision) == block


def test_gguf_rows_have_their_own_target_and_label() -> None:
    gguf = Recipe.model_validate(
        {"name": "g", "precision": {"weights": "gguf-native"}, "cpu": {"gguf_q4_1": "rounded"}}
    )
    assert precision_label(gguf) == "gguf-native (Q4_1 rounded)"
    rows = make_rows(
        [
            (recipe("ref", "fp32"), measurement(FP32_BYTES, 20.0)),
            (gguf, measurement(int(FP32_BYTES * 0.179), 20.08)),
        ]
    )
    assert rows[1].target == "<= 18% bytes, <= 0.5% ppl" and rows[1].verdict == "meets"
    assert serving_label(EngineSettings(0, None), "f16") == "act float, KV f16"
    assert serving_label(EngineSettings(32, "u8"), "f16") == "act dyn g32, KV u8"


def test_chart_labels_do_not_overlap() -> None:
    rows = make_rows(
        [(recipe("ref", "fp32"), measurement(FP32_BYTES, 20.0, "act dyn g32, KV f16"))]
        + [
            (recipe(f"r{i}", "int4_awq"), measurement(FP32_BYTES // 6, 21.0, "act float, KV u8"))
            for i in range(15)
        ]
    )
    figure = chart_figure(rows, "model")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    texts = [t for ax in figure.axes for t in [*ax.get_yticklabels(), ax.title] if t.get_text()]
    boxes = [t.get_window_extent(renderer) for t in texts]
    overlapping = [
        (texts[i].get_text(), texts[j].get_text())
        for i in range(len(boxes))
        for j in range(i + 1, len(boxes))
        if boxes[i].overlaps(boxes[j])
    ]
    assert overlapping == []


def test_quality_loss_error_is_paired_over_the_same_windows():
    reference = [3.0, 4.0, 5.0, 3.5]
    shifted = [value + 0.01 for value in reference]  # every window 1% worse: no spread
    assert paired_stderr_pct(shifted, reference) == pytest.approx(0.0, abs=1e-9)
    noisy = [3.02, 4.0, 5.02, 3.5]
    assert paired_stderr_pct(noisy, reference) == pytest.approx(0.5774, rel=1e-3)
    assert paired_stderr_pct(noisy, reference[:3]) is None  # different windows: not paired
    rows = make_rows(
        [
            (recipe("ref", "fp32"), Measurement(FP32_BYTES, 20.0, 2.0, 1, 1.0, None, reference)),
            (recipe("i8", "int8_wo"), Measurement(FP32_BYTES // 4, 20.2, 2.0, 1, 1.0, None, noisy)),
        ]
    )
    assert rows[1].quality_loss_stderr_pct == pytest.approx(0.577, abs=1e-3)
    assert "+1.00% ± 0.58" in markdown_table(rows)
