"""gguf-native builds: a GGUF's blocks served as they are, checked bit for bit on the CPU.

A tiny Llama GGUF (written here with the ``gguf`` package: Q8_0, Q4_0, Q4_1, F16 and F32
tensors, tied embedding/head) is built through the real builder; every linear layer of the
artifact is then run by OpenVINO's CPU plugin on an identity matrix (dynamic activation
quantization off), which returns exactly the weights it multiplies by. They must equal
transformers' float de-quantization of the same file, bit for bit.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgectl.build.builder import build, source_checkpoint
from edgectl.build.gguf import GgufError, check_gguf, dequantized, read_tensors, unpack_blocks
from edgectl.build.gguf_native import block_sums
from edgectl.build.recipe import Recipe
from edgectl.errors import EdgectlError
from tests.unit.build.tiny_gguf import LAYERS, layer_kind, shapes, write_tiny_gguf

EXACT_MODES = ("exact", "add")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Iterator[Path]:
    """A private edgectl cache: these builds never touch the shared one."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGECTL_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.Q4_1.gguf")


def native_recipe(gguf: Path, q4_1: str = "exact", **extra) -> Recipe:
    data = {
        "name": f"tiny-gguf-native-{q4_1}",
        "source": f"gguf:{gguf}",
        "precision": {"weights": "gguf-native"},
        "cpu": {"gguf_q4_1": q4_1},
    }
    return Recipe.model_validate(data | extra)


@pytest.fixture(scope="module")
def artifacts(cache: Path, tiny_gguf: Path) -> dict[str, Path]:
    return {
        mode: build(native_recipe(tiny_gguf, mode)).artifact for mode in (*EXACT_MODES, "rounded")
    }


@pytest.fixture(scope="module")
def float_weights(cache: Path, tiny_gguf: Path, artifacts) -> dict[str, np.ndarray]:
    """transformers' float32 de-quantization of the tiny GGUF (the converted checkpoint)."""
    from safetensors.numpy import load_file

    checkpoint = source_checkpoint(native_recipe(tiny_gguf), lambda message: None)
    weights: dict[str, np.ndarray] = {}
    for path in checkpoint.glob("*.safetensors"):
        weights.update(load_file(path))
    return weights


def _weight_constant(output) -> str | None:
    """Name of the constant a weight input comes from (through its decompression ops)."""
    node = output.get_node()
    while node.get_type_name() != "Constant":
        if node.get_input_size() == 0:
            return None
        node = node.input_value(0).get_node()
    return node.get_friendly_name()


def served_linears(model_xml: Path, only: set[str] | None = None) -> dict[str, np.ndarray]:
    """Each linear layer of the IR (or those named in ``only``) as the CPU plugin runs it,
    applied to an identity: the [out, in] weights it multiplies by (minimum term included)."""
    import openvino as ov
    import openvino.opset13 as ops

    model = ov.Core().read_model(model_xml)
    probes = {}
    for matmul in model.get_ordered_ops():
        if matmul.get_type_name() != "MatMul":
            continue
        name = _weight_constant(matmul.input_value(1))
        if name is None or not name.startswith("self.") or name.endswith("/minimum"):
            continue
        if only is not None and matmul.get_friendly_name() not in only:
            continue
        cols = matmul.input_value(1).get_partial_shape()[1].get_length()
        x = ops.parameter([cols, cols], ov.Type.f32)
        y = ops.matmul(x, matmul.input_value(1), False, True)
        (consumer,) = [t.get_node() for t in matmul.output(0).get_target_inputs()]
        other = consumer.input_value(1).get_node() if consumer.get_type_name() == "Add" else None
        if other is not None and _weight_constant(other.input_value(1)).endswith("/minimum"):
            # Q4_1 exact: + block_sums(x) @ m^T
            y = ops.add(y, ops.matmul(block_sums(x, cols), other.input_value(1), False, True))
        probes[name[len("self.") :]] = (ov.Model([y], [x]), cols)
    served = {}
    core = ov.Core()
    for name, (probe, cols) in probes.items():
        compiled = core.compile_model(
            probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
        )
        served[name] = compiled(np.eye(cols, dtype=np.float32))[0].T.copy()
    return served


# -- reading blocks -------------------------------------------------------------------


def test_blocks_decode_as_llama_cpp_defines_them(tiny_gguf: Path) -> None:
    """Our unpacking (q, d, m) gives gguf-py's de-quantization bit for bit, every kind."""
    import gguf

    reader = gguf.GGUFReader(str(tiny_gguf))
    raw = {t.name: t for t in reader.tensors}
    tensors = read_tensors(tiny_gguf)
    kinds = {tensor.kind for tensor in tensors.values()}
    assert kinds == {"F32", "F16", "Q8_0", "Q4_0", "Q4_1"}
    for tensor in tensors.values():
        if "attn_q" in tensor.name or "attn_k" in tensor.name:
            continue  # rows reordered for HF; compared against transformers below
        expected = gguf.quants.dequantize(raw[tensor.name].data, raw[tensor.name].tensor_type)
        assert np.array_equal(dequantized(tensor).reshape(expected.shape), expected), tensor.name


def test_q4_0_values_are_signed_and_q4_1_keeps_its_minimum(tiny_gguf: Path) -> None:
    tensors = read_tensors(tiny_gguf)
    q4_0 = unpack_blocks(tensors["model.layers.0.self_attn.q_proj.weight"])
    assert q4_0.q.dtype == np.int8 and q4_0.q.min() >= -8 and q4_0.q.max() <= 7
    assert q4_0.m is None and q4_0.q.shape[-1] == 32 and q4_0.d.dtype == np.float16
    q4_1 = unpack_blocks(tensors["model.layers.0.self_attn.k_proj.weight"])
    assert q4_1.q.max() <= 15 and q4_1.m is not None and (q4_1.m < 0).any()


def test_transformers_reads_the_same_weights(tiny_gguf: Path, float_weights) -> None:
    """Q/K rows un-interleaved like transformers does; every weight bit-identical."""
    for name, tensor in read_tensors(tiny_gguf).items():
        if tensor.rows > 1:
            assert np.array_equal(dequantized(tensor), float_weights[name]), name


# -- the served IR --------------------------------------------------------------------


@pytest.mark.parametrize("mode", EXACT_MODES)
def test_served_weights_equal_the_gguf_bit_for_bit(mode: str, artifacts, float_weights) -> None:
    served = served_linears(artifacts[mode] / "openvino_model.xml")
    # 2 layers x 7 linears + the tied head (served from the embedding's blocks)
    assert len(served) == 15
    for name, weights in served.items():
        reference = float_weights.get(name, float_weights["model.embed_tokens.weight"])
        assert weights.dtype == np.float32 and weights.shape == reference.shape, name
        assert np.array_equal(weights, reference), f"{name}: served weights differ ({mode})"


def test_rounded_zero_point_moves_q4_1_weights_by_up_to_half_a_step(
    artifacts, float_weights, tiny_gguf: Path
) -> None:
    served = served_linears(artifacts["rounded"] / "openvino_model.xml")
    tensors = read_tensors(tiny_gguf)
    moved = []
    for name, weights in served.items():
        tensor = tensors.get(name)
        if tensor is None or tensor.kind != "Q4_1":
            assert np.array_equal(weights, float_weights.get(name, weights)), name
            continue
        step = unpack_blocks(tensor).d.astype(np.float32).repeat(32, axis=-1).reshape(weights.shape)
        error = np.abs(weights - float_weights[name])
        assert (error <= step / 2 * (1 + 1e-3) + 1e-7).all(), name
        moved.append(float(np.median(error / step)))
    assert moved and 0.1 < float(np.median(moved)) < 0.4  # the rounding is real


def test_tied_embedding_stays_one_copy(artifacts) -> None:
    import openvino as ov

    model = ov.Core().read_model(artifacts["exact"] / "openvino_model.xml")
    embeddings = [
        op
        for op in model.get_ordered_ops()
        if op.get_type_name() == "Constant"
        and op.get_friendly_name() == "self.model.embed_tokens.weight"
    ]
    assert len(embeddings) == 1
    assert embeddings[0].get_output_element_type(0) == ov.Type.i8
    users = set()
    queue = [embeddings[0]]
    while queue:  # walk down the decompression ops to the ops that use the weight
        node = queue.pop()
        for target in node.output(0).get_target_inputs():
            user = target.get_node()
            if user.get_type_name() in ("Gather", "MatMul"):
                users.add(user.get_type_name())
            else:
                queue.append(user)
    assert users == {"Gather", "MatMul"}


def test_quantization_record_names_the_block_types(artifacts) -> None:
    record = json.loads((artifacts["exact"] / "quantization.json").read_text())
    assert record["weights"] == "gguf-native" and record["q4_1"] == "exact"
    expected = Counter(layer_kind(layer, role) for layer in range(LAYERS) for role in shapes())
    expected["Q8_0"] += 1  # the embedding (and tied head)
    assert record["tensor_types"] == dict(sorted(expected.items()))


def test_logits_match_the_float_export(artifacts, cache: Path) -> None:
    """End to end through the stateful IR: the GGUF-weighted model computes what the float
    export of the same file computes (summation order aside)."""
    import openvino as ov

    (float_ir,) = (cache / "openvino-float").iterdir()
    ids = np.array([[256, 72, 101, 108, 108, 111, 258, 33]], dtype=np.int64)
    inputs = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "position_ids": np.arange(ids.shape[1])[None, :],
        "beam_idx": np.zeros(1, np.int32),
    }
    config = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
    logits = []
    for folder in (float_ir, artifacts["exact"]):
        compiled = ov.Core().compile_model(folder / "openvino_model.xml", "CPU", config)
        logits.append(compiled.create_infer_request().infer(inputs)["logits"].copy())
    assert np.allclose(logits[0], logits[1], rtol=1e-4, atol=1e-4)
    assert math.isfinite(float(logits[1].sum()))


@pytest.mark.slow
def test_the_embedded_model_is_served_bit_for_bit() -> None:
    """SmolLM2's own Q4_1 GGUF (Q8_0 embedding tied to the head): sampled layers' served
    weights equal transformers' de-quantization of the file, bit for bit."""
    from safetensors.numpy import load_file

    from edgectl.build.recipe import load_recipe
    from tests.paths import REPO_ROOT

    recipe = load_recipe(REPO_ROOT / "build" / "smollm2-135m-gguf-native.yaml")
    artifact = build(recipe).artifact
    checkpoint = source_checkpoint(recipe, lambda message: None)
    weights: dict[str, np.ndarray] = {}
    for path in checkpoint.glob("*.safetensors"):
        weights.update(load_file(path))
    roles = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj", "mlp.down_proj")
    only = {
        f"__module.model.layers.{i}.{role}/aten::linear/MatMul" for i in (0, 29) for role in roles
    }
    only.add("__module.lm_head/aten::linear/MatMul")
    served = served_linears(artifact / "openvino_model.xml", only)
    assert len(served) == len(only)
    for name, values in served.items():
        assert np.array_equal(values, weights[name]), name
    record = json.loads((artifact / "quantization.json").read_text())
    assert record["tensor_types"] == {"Q4_1": 210, "Q8_0": 1}


# -- bad input ------------------------------------------------------------------------


def _assert_nothing_cached(cache: Path, name: str) -> None:
    models = cache / "models"
    leftovers = (
        [p.name for p in models.iterdir() if p.name.startswith(name)] if models.is_dir() else []
    )
    assert [p for p in leftovers if not p.endswith((".lock", ".build.log"))] == []


def _build_fails(cache: Path, gguf: Path, match: str, **extra) -> None:
    recipe = native_recipe(gguf, name=f"bad-{gguf.stem}", **extra)
    with pytest.raises(EdgectlError, match=match) as caught:
        build(recipe)
    assert str(gguf) in str(caught.value)
    _assert_nothing_cached(cache, recipe.name)


def test_bad_magic_is_named(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "not-a-model.gguf"
    path.write_bytes(b"PK\x03\x04 a zip, not a GGUF" + bytes(64))
    _build_fails(cache, path, "not a GGUF file")


def test_truncated_tensor_data_is_named(cache: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    data = tiny_gguf.read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[: len(data) - 1000])
    _build_fails(cache, path, "truncated or corrupted")


def test_non_llama_architecture_is_refused(cache: Path, tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "other.gguf", arch="gpt2")
    _build_fails(cache, path, "architecture 'gpt2' is not Llama-family")


def test_unsupported_block_type_is_named(cache: Path, tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "q5.gguf", kinds={"blk.1.ffn_up.weight": "Q5_0"})
    with pytest.raises(GgufError, match=r"block type Q5_0 \(e\.g\. blk\.1\.ffn_up\.weight\)"):
        read_tensors(path)
    _build_fails(cache, path, "Q5_0")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(GgufError, match="no such GGUF file"):
        check_gguf(tmp_path / "absent.gguf")


# -- recipes --------------------------------------------------------------------------


def test_gguf_native_is_refused_for_trtllm(tiny_gguf: Path) -> None:
    with pytest.raises(ValueError, match="TensorRT-LLM has no way to serve GGUF blocks"):
        native_recipe(tiny_gguf, targets=["cpu", "trtllm"])


def test_gguf_native_needs_a_gguf_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a GGUF source"):
        Recipe.model_validate(
            {"name": "x", "source": str(tmp_path), "precision": {"weights": "gguf-native"}}
        )


def test_gguf_source_resolves_beside_the_recipe(tmp_path: Path) -> None:
    from edgectl.build.recipe import load_recipe

    (tmp_path / "r.yaml").write_text(
        "name: r\nsource: gguf:models/m.gguf\nprecision: {weights: gguf-native}\n"
    )
    assert load_recipe(tmp_path / "r.yaml").source == f"gguf:{tmp_path / 'models' / 'm.gguf'}"


def test_a_recipe_key_added_later_does_not_rebuild_old_artifacts(tiny_gguf: Path) -> None:
    from edgectl.build.builder import _same_recipe

    recipe = native_recipe(tiny_gguf)
    recorded = recipe.model_dump()
    del recorded["cpu"]["gguf_q4_1"]  # an artifact built before the key existed
    assert _same_recipe(recorded, recipe)
    assert not _same_recipe(recorded, native_recipe(tiny_gguf, "rounded"))


# -- served by the engine's pipeline ----------------------------------------------------


@pytest.mark.parametrize(
    ("group", "kv"), [(None, None), (0, "f16"), (32, "u8"), (0, "f32")], ids=str
)
def test_the_engine_pipeline_serves_it_with_each_setting(artifacts, group, kv) -> None:
    """The CPU engine's ContinuousBatchingPipeline loads the artifact with each load-time
    setting and generates (greedy: the same tokens with f32 and f16 KV)."""
    import openvino as ov
    import openvino_genai as og

    from edgectl.runtime.openvino_engine import (
        SchedulerSettings,
        create_pipeline,
        plugin_properties,
    )

    settings = SchedulerSettings(
        dynamic_quantization_group_size=group, kv_cache_precision=kv, num_kv_blocks=16
    )
    properties = plugin_properties(settings)
    assert properties.get("DYNAMIC_QUANTIZATION_GROUP_SIZE") == group
    assert properties.get("KV_CACHE_PRECISION") == kv
    pipeline = create_pipeline(artifacts["exact"], settings)
    config = og.GenerationConfig()
    config.max_new_tokens = 8
    config.ignore_eos = True
    prompt = ov.Tensor(np.array([[256, 72, 101, 108, 108, 111]], dtype=np.int64))
    (result,) = pipeline.generate([prompt], [config])
    assert len(result.m_generation_ids[0]) == 8
