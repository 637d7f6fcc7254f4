"""The memory arithmetic against values computed by hand from the public configs.

SmolLM2-135M: 30 layers, hidden 576, intermediate 1536, 9 heads / 3 KV heads of 64,
vocab 49152, tied. Per layer q 576x576, k and v 576x192, o 576x576, gate/up 576x1536,
down 1536x576 = 3,538,944 params; x30 = 106,168,320; embedding 28,311,552; norms
61 x 576 = 35,136 (total 134,515,008).
Llama-3.1-8B: 32 layers, hidden 4096, intermediate 14336, 32 heads / 8 KV heads of 128,
vocab 128256, untied. Per layer 218,103,808 params; x32 = 6,979,321,856; embedding and
head 525,336,576 each; norms 65 x 4096 = 266,240 (total 8,030,261,248).
"""

from __future__ import annotations

import pytest

from edgectl.plan import memory
from edgectl.plan.shapes import catalog_shape, catalog_shapes

from .conftest import recipe


def test_kv_bytes_per_token_by_hand(smollm2, llama8b) -> None:
    assert memory.kv_bytes_per_token(smollm2, "fp16") == 2 * 30 * 3 * 64 * 2 == 23_040
    assert memory.kv_bytes_per_token(llama8b, "fp16") == 2 * 32 * 8 * 128 * 2 == 131_072
    assert memory.kv_bytes_per_token(llama8b, "fp8") == 65_536
    assert memory.kv_bytes_per_token(llama8b, "int8") == 65_536


def test_kv_bytes_per_sequence_rounds_up_to_whole_blocks(llama8b) -> None:
    assert memory.kv_bytes_per_sequence(llama8b, "fp16", 4096) == 131_072 * 4096  # 512 MiB
    assert memory.kv_bytes_per_sequence(llama8b, "fp16", 4097) == 131_072 * (4096 + 64)


def test_parameter_counts_by_hand(smollm2, llama8b) -> None:
    assert memory.weight_bytes(smollm2, recipe(weights="fp16"), "trtllm").params == 134_515_008
    assert memory.weight_bytes(llama8b, recipe(weights="fp16"), "trtllm").params == 8_030_261_248


@pytest.mark.parametrize(
    ("weights", "engine", "expected"),
    [
        # 2 B x (layers + tied head) + fp16 norms
        ("fp16", "trtllm", 2 * (106_168_320 + 28_311_552) + 2 * 35_136),
        ("fp32", "cpu", 4 * (106_168_320 + 28_311_552) + 2 * 35_136),
        # INT8 layers + 2 B per output channel (5,184 columns a layer) + fp16 head
        ("int8_wo", "trtllm", 106_168_320 + 30 * 5_184 * 2 + 2 * 28_311_552 + 2 * 35_136),
        # the CPU export compresses the head to INT8 too (+ 2 B per vocab row)
        ("int8_wo", "cpu", 106_168_320 + 30 * 5_184 * 2 + 28_311_552 + 49_152 * 2 + 2 * 35_136),
        # INT4 g64: half a byte a weight + 2 B per 64 weights of a column; 1,880,064 a layer
        ("int4_awq", "trtllm", 30 * 1_880_064 + 2 * 28_311_552 + 2 * 35_136),
        # GGUF Q4_1 layers (20 B per 32 weights) and the tied Q8_0 head (34 B per 32)
        ("gguf-native", "cpu", 106_168_320 * 20 // 32 + 28_311_552 * 34 // 32 + 2 * 35_136),
    ],
)
def test_smollm2_weight_bytes_by_hand(smollm2, weights, engine, expected) -> None:
    group = {"group_size": 64} if weights.startswith("int4") else {}
    if weights == "gguf-native":
        group["calibration"] = {"mode": "none"}  # the GGUF's blocks are taken as they are
    made = recipe(weights=weights, targets=[engine], **group)
    assert memory.weight_bytes(smollm2, made, engine).total == expected


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ("fp16", 2 * (6_979_321_856 + 2 * 525_336_576) + 2 * 266_240),
        # 43,008 output columns a layer, 2 B scale each
        ("int8_wo", 6_979_321_856 + 32 * 43_008 * 2 + 2 * 2 * 525_336_576 + 2 * 266_240),
        # g128 scales: 3,407,872 B a layer
        ("int4_awq", 6_979_321_856 // 2 + 32 * 3_407_872 + 2 * 2 * 525_336_576 + 2 * 266_240),
    ],
)
def test_llama_8b_weight_bytes_by_hand(llama8b, weights, expected) -> None:
    assert memory.weight_bytes(llama8b, recipe(weights=weights), "trtllm").total == expected


def test_an_untied_embedding_is_stored_but_not_streamed(llama8b, smollm2) -> None:
    w = memory.weight_bytes(llama8b, recipe(weights="fp16"), "trtllm")
    assert w.embedding == w.head == 2 * 525_336_576
    assert w.streamed_per_step == w.total - w.embedding
    tied = memory.weight_bytes(smollm2, recipe(weights="fp16"), "trtllm")
    assert tied.embedding == 0 and tied.streamed_per_step == tied.total


def test_mixed_precision_counts_each_range_in_its_format(smollm2) -> None:
    mixed = recipe(
        weights="int8_wo",
        mixed_precision={
            "layers": [
                {"range": [0, 23], "weights": "int8_wo"},
                {"range": [24, 29], "weights": "fp16"},
            ],
            "lm_head": "fp16",
        },
    )
    w = memory.weight_bytes(smollm2, mixed, "cpu")
    per_layer = 3_538_944
    assert w.formats == {"int8_wo": 24 * per_layer, "fp16": 6 * per_layer + 28_311_552}
    assert w.layers == 24 * (per_layer + 5_184 * 2) + 6 * 2 * per_layer


@pytest.mark.parametrize("name", sorted(catalog_shapes()))
def test_fewer_bits_fewer_bytes_for_every_catalog_model(name: str) -> None:
    shape = catalog_shape(name)
    group = 64 if shape.hidden_size % 128 else 128
    sizes = [
        memory.weight_bytes(shape, recipe(weights=w, group_size=group), "trtllm").total
        for w in ("int4_awq", "int8_wo", "fp16")
    ]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3


def test_more_context_fits_fewer_sequences(llama8b) -> None:
    weights = memory.weight_bytes(llama8b, recipe(weights="int4_awq"), "trtllm").total
    fits = [
        memory.fit_sequences(
            80e9, weights, 2e9, 0.9, memory.kv_bytes_per_sequence(llama8b, "fp16", context)
        ).sequences
        for context in (512, 1024, 2048, 4096, 8192, 16384)
    ]
    assert fits == sorted(fits, reverse=True) and len(set(fits)) == len(fits)
    # 0.9 x (80 - 5.70 - 2) GB / 512 MiB at 4096 tokens, by hand: 121
    assert fits[3] == int(0.9 * (80e9 - weights - 2e9) // (131_072 * 4096)) == 121


def test_weights_over_capacity_fit_nothing(llama8b) -> None:
    fit = memory.fit_sequences(8e9, 16e9, 1e9, 0.9, 1)
    assert fit.sequences == 0 and fit.kv_pool == 0 and fit.free < 0
