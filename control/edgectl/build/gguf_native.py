"""The ``gguf-native`` CPU artifact: the float IR's graph with the GGUF's blocks as weights.

Each weight constant of the float IR is replaced by a decompression subgraph over the
GGUF's own data, in float32 arithmetic, so the served weights are the GGUF's de-quantized
weights bit for bit:

* Q8_0 -> i8 values x f16 scale per 32 (OpenVINO's symmetric INT8, group 32);
* Q4_0 -> i4 values (q - 8) x f16 scale per 32 (symmetric INT4, group 32);
* Q4_1 (w = d*q + m) has a float minimum that OpenVINO's integer zero point cannot hold.
  ``exact``: u4 values x d (zero point 0) in the matmul, plus the minimum as a second,
  32x smaller matmul over the input's per-block sums (sum_i m_b x_i = m_b * sum_i x_i);
  both run compressed. ``add``: convert(q)*d + m, exact too, but the CPU plugin does not
  recognise it as a compressed weight and folds it to f32 at load (4x the memory, f32
  speed). ``rounded``: an integer zero point round(-m/d), as OpenVINO GenAI's own GGUF
  reader does: fastest, but moves weights by up to half a step.

Tied weights stay tied: one decompression subgraph feeds the embedding and the head.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from edgectl.build.gguf import GgufError, GgufTensor, read_tensors, rounded_zero_point
from edgectl.build.gguf import unpack_blocks as unpack
from edgectl.progress import Progress

MODEL_XML = "openvino_model.xml"
MODEL_BIN = "openvino_model.bin"
_IR_PREFIX = "self."  # optimum-intel names weight constants "self.<HF name>"


def _f32(node: Any) -> Any:
    import openvino as ov
    import openvino.opset13 as ops

    return ops.convert(node, ov.Type.f32)


def _const(array: Any, name: str, element: Any = None) -> Any:
    import openvino.opset13 as ops

    node = ops.constant(array, dtype=element) if element is not None else ops.constant(array)
    node.set_friendly_name(name)
    return node


def _flatten(node: Any, tensor: GgufTensor) -> Any:
    import numpy as np
    import openvino.opset13 as ops

    return ops.reshape(node, ops.constant(np.array([tensor.rows, tensor.cols], np.int64)), False)


def scaled_values(tensor: GgufTensor, name: str) -> Any:
    """convert(q) * d [- zero point] as f32 [rows, cols]: the part that runs compressed.

    For Q4_1 this is d*q alone (the ``exact`` main term); callers add the minimum.
    """
    import openvino as ov
    import openvino.opset13 as ops

    blocks = unpack(tensor)
    element = {"Q8_0": ov.Type.i8, "Q4_0": ov.Type.i4, "Q4_1": ov.Type.u4}[tensor.kind]
    values = _f32(_const(blocks.q, name, element))
    scale = _f32(_const(blocks.d, f"{name}/scale"))
    return _flatten(ops.multiply(values, scale), tensor)


def decompressed(tensor: GgufTensor, name: str, q4_1: str) -> Any:
    """The whole weight as one f32 [rows, cols] output (every kind, every Q4_1 mode).

    Q4_1 ``exact`` is handled per matmul by the caller; here it falls back to ``add``,
    which is just as exact (used for a Q4_1 embedding, which is gathered, not multiplied).
    """
    import numpy as np
    import openvino.opset13 as ops

    if tensor.kind == "F32":
        return _const(np.asarray(tensor.data, np.float32).reshape(tensor.rows, -1), name)
    if tensor.kind == "F16":
        return _f32(_const(np.asarray(tensor.data, np.float16).reshape(tensor.rows, -1), name))
    if tensor.kind != "Q4_1":
        return scaled_values(tensor, name)
    import openvino as ov

    blocks = unpack(tensor)
    values = _f32(_const(blocks.q, name, ov.Type.u4))
    scale = _f32(_const(blocks.d, f"{name}/scale"))
    if q4_1 == "rounded":
        zero = _f32(_const(rounded_zero_point(blocks), f"{name}/zero_point", ov.Type.u4))
        return _flatten(ops.multiply(ops.subtract(values, zero), scale), tensor)
    minimum = _f32(_const(blocks.m, f"{name}/minimum"))
    return _flatten(ops.add(ops.multiply(values, scale), minimum), tensor)


def block_sums(activations: Any, cols: int) -> Any:
    """Sum of each consecutive 32 input features: [..., cols] -> [..., cols / 32]."""
    import numpy as np
    import openvino.opset13 as ops

    rank = activations.get_partial_shape().rank.get_length()
    shape = np.array([0] * (rank - 1) + [cols // 32, 32], np.int64)
    grouped = ops.reshape(activations, ops.constant(shape), True)
    return ops.reduce_sum(grouped, ops.constant(np.array([-1], np.int64)), False)


def minimum_term(sums: Any, tensor: GgufTensor, name: str) -> Any:
    """sums [..., blocks] x m^T: what each output gains from its blocks' minimums."""
    import openvino.opset13 as ops

    minimum = unpack(tensor).m[..., 0]  # [rows, blocks] f16
    return ops.matmul(sums, _f32(_const(minimum, f"{name}/minimum")), False, True)


def _exact_q4_1_matmul(matmul: Any, tensor: GgufTensor, name: str, sums_cache: dict) -> None:
    """Rewire ``x @ W^T`` as ``x @ (d*q)^T + block_sums(x) @ m^T`` (both compressed)."""
    import openvino.opset13 as ops

    if matmul.get_attributes().get("transpose_b") is not True:
        raise GgufError(f"{name}: expected a MatMul with transposed weights")
    activations = matmul.input_value(0)
    key = (activations.get_node().get_friendly_name(), activations.get_index(), tensor.cols)
    if key not in sums_cache:
        sums_cache[key] = block_sums(activations, tensor.cols)
    consumers = list(matmul.output(0).get_target_inputs())
    matmul.input(1).replace_source_output(scaled_values(tensor, name).output(0))
    total = ops.add(matmul.output(0), minimum_term(sums_cache[key], tensor, name))
    for consumer in consumers:
        consumer.replace_source_output(total.output(0))


def replace_weights(model: Any, tensors: dict[str, GgufTensor], q4_1: str) -> Counter:
    """Swap every weight constant of ``model`` for its GGUF tensor; returns kinds used.

    Every constant optimum-intel named after a HF weight must have its GGUF tensor and
    every GGUF tensor must land somewhere (a tied head reuses the embedding's).
    """
    import numpy as np

    constants = {
        op.get_friendly_name()[len(_IR_PREFIX) :]: op
        for op in model.get_ordered_ops()
        if op.get_type_name() == "Constant" and op.get_friendly_name().startswith(_IR_PREFIX)
    }
    vectors = {name for name, tensor in tensors.items() if tensor.rows == 1}
    check_vectors(model, [tensors[name] for name in sorted(vectors)])
    missing = sorted(set(constants) - set(tensors))
    unused = sorted(set(tensors) - set(constants) - vectors)
    if missing or unused:
        raise GgufError(
            "the GGUF's tensors do not match the model graph: "
            + (f"no GGUF tensor for {', '.join(missing[:5])}; " if missing else "")
            + (f"no graph weight for {', '.join(unused[:5])}" if unused else "")
        )
    used: Counter = Counter()
    sums_cache: dict = {}
    for hf, constant in constants.items():
        tensor = tensors[hf]
        shape = tuple(constant.get_output_shape(0))
        if int(np.prod(shape)) != tensor.rows * tensor.cols or shape[-1] != tensor.cols:
            raise GgufError(f"{tensor.name}: GGUF shape {tensor.rows}x{tensor.cols} != {shape}")
        name = _IR_PREFIX + hf
        targets = list(constant.output(0).get_target_inputs())
        whole = None
        for target in targets:
            node = target.get_node()
            if tensor.kind == "Q4_1" and q4_1 == "exact" and node.get_type_name() == "MatMul":
                _exact_q4_1_matmul(node, tensor, name, sums_cache)
                continue
            if whole is None:
                whole = decompressed(tensor, name, q4_1)
            target.replace_source_output(whole.output(0))
        used[tensor.kind] += 1
    return used


def check_vectors(model: Any, vectors: list[GgufTensor]) -> None:
    """The norm weights: the exporter folds them into anonymous constants, so instead of
    replacing them, check that each GGUF vector is in the graph with the same float bits.
    """
    import numpy as np

    found = {
        op.get_data().astype(np.float32).tobytes()
        for op in model.get_ordered_ops()
        if op.get_type_name() == "Constant"
        and op.get_output_element_type(0).is_real()
        and int(np.prod(op.get_output_shape(0))) in {v.cols for v in vectors}
    }
    differ = [
        v.name
        for v in vectors
        if np.asarray(v.data, np.float32).tobytes() not in found
        and not np.all(np.asarray(v.data) == 1)  # a multiply by ones is folded away
    ]
    if differ:
        raise GgufError(f"the float graph's values differ from the GGUF's for {', '.join(differ)}")


def export_gguf_native(
    gguf_path: Path, float_ir: Path, out: Path, q4_1: str, kv_cache: str, progress: Progress
) -> dict:
    """Write the GGUF-weighted IR (+ the float export's tokenizer files) into ``out``."""
    import openvino as ov

    progress(f"reading {gguf_path.name}: blocks copied as they are (Q4_1 as {q4_1})")
    tensors = read_tensors(gguf_path)
    shutil.copytree(float_ir, out, ignore=shutil.ignore_patterns("openvino_model.*"))
    model = ov.Core().read_model(float_ir / MODEL_XML)
    used = replace_weights(model, tensors, q4_1)
    model.set_rt_info(kv_cache, ["runtime_options", "KV_CACHE_PRECISION"])
    progress("saving the OpenVINO IR")
    staged = out / "staged_model.xml"
    ov.save_model(model, staged, compress_to_fp16=False)
    del model
    staged.rename(out / MODEL_XML)
    staged.with_suffix(".bin").rename(out / MODEL_BIN)
    applied = {
        "weights": "gguf-native",
        "gguf": gguf_path.name,
        "tensor_types": dict(sorted(used.items())),
        "q4_1": q4_1 if used.get("Q4_1") else None,
        "kv_cache": kv_cache,
    }
    (out / "quantization.json").write_text(json.dumps(applied, indent=2), encoding="utf-8")
    return applied
