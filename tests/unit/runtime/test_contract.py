from __future__ import annotations

import math

import numpy as np
import pytest

from edgectl.runtime.contract import (
    InvalidRequest,
    SamplingParams,
    decode_word_lists,
    encode_word_lists,
)

MAX_OUTPUT_LEN = 64


# -- stop/bad words layout -------------------------------------------------------------


@pytest.mark.parametrize(
    "words",
    [
        [[5]],
        [[1, 2, 3], [4], [7, 8]],
        [[10, 11], [10, 11, 12]],
    ],
)
def test_word_lists_round_trip(words):
    packed = encode_word_lists(words)
    assert packed.dtype == np.int32
    assert packed.shape == (2, sum(map(len, words)))
    assert decode_word_lists(packed) == words


def test_encode_layout_is_ids_then_end_offsets_padded_with_minus_one():
    packed = encode_word_lists([[1, 2, 3], [4], [7, 8]])
    assert packed.tolist() == [[1, 2, 3, 4, 7, 8], [3, 4, 6, -1, -1, -1]]


def test_empty_word_list_encodes_to_placeholder_and_decodes_to_nothing():
    packed = encode_word_lists([])
    assert packed.shape == (2, 1)
    assert packed.tolist() == [[-1], [-1]]
    assert decode_word_lists(packed) == []


def test_empty_words_are_skipped():
    assert decode_word_lists(encode_word_lists([[], [3, 4], []])) == [[3, 4]]


def test_decode_accepts_batched_layout_and_none():
    packed = encode_word_lists([[1, 2], [3]])
    assert decode_word_lists(packed[np.newaxis]) == [[1, 2], [3]]
    assert decode_word_lists(None) == []


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        (np.zeros((3, 4), dtype=np.int32), "[2, N]"),
        (np.zeros((4,), dtype=np.int32), "[2, N]"),
        (np.zeros((2, 2, 3), dtype=np.int32), "one [2, N] list per request"),
    ],
)
def test_decode_rejects_bad_shapes(array, fragment):
    with pytest.raises(InvalidRequest, match="stop_words_list") as err:
        decode_word_lists(array)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "offsets",
    [
        [2, 2, -1],  # not increasing
        [0, -1, -1],  # empty first word
        [1, 5, -1],  # past the ids
    ],
)
def test_decode_rejects_bad_offsets(offsets):
    packed = np.array([[1, 2, 3], offsets], dtype=np.int32)
    with pytest.raises(InvalidRequest, match="offsets"):
        decode_word_lists(packed)


# -- sampling parameters ---------------------------------------------------------------


def params(**overrides) -> SamplingParams:
    return SamplingParams(**{"max_new_tokens": 16, **overrides})


def test_default_params_are_valid():
    params().validate(MAX_OUTPUT_LEN)
    params(max_new_tokens=MAX_OUTPUT_LEN, min_length=MAX_OUTPUT_LEN).validate(MAX_OUTPUT_LEN)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_new_tokens": 0}, "max_tokens"),
        ({"max_new_tokens": MAX_OUTPUT_LEN + 1}, "max_tokens"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": math.nan}, "top_p"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"repetition_penalty": 10.5}, "repetition_penalty"),
        ({"repetition_penalty": math.inf}, "repetition_penalty"),
        ({"presence_penalty": -2.5}, "presence_penalty"),
        ({"presence_penalty": math.nan}, "presence_penalty"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"min_length": 17}, "min_length"),
        ({"min_length": -1}, "min_length"),
        ({"end_id": -1}, "end_id"),
        ({"beam_width": 0}, "beam_width"),
        ({"beam_width": 9}, "beam_width"),
        ({"beam_width": 2, "num_return_sequences": 3}, "num_return_sequences"),
        ({"num_return_sequences": 0}, "num_return_sequences"),
        ({"beam_width": 2, "repetition_penalty": 1.2}, "repetition_penalty"),
        ({"beam_width": 2, "presence_penalty": 0.5}, "presence_penalty"),
        ({"guide_type": "xml", "guide": "x"}, "guided_decoding_guide_type"),
        ({"guide_type": "regex"}, "guided_decoding_guide"),
        ({"guide_type": "json_schema", "guide": "{not json"}, "guided_decoding_guide"),
        ({"guide": "[0-9]+"}, "guided_decoding_guide_type"),
        ({"seed": -1}, "seed"),
    ],
)
def test_validate_names_the_out_of_range_field(overrides, field):
    with pytest.raises(InvalidRequest, match=field):
        params(**overrides).validate(MAX_OUTPUT_LEN)


def test_max_tokens_message_states_the_limit():
    with pytest.raises(InvalidRequest, match=f"between 1 and {MAX_OUTPUT_LEN}.*max_output_len"):
        params(max_new_tokens=MAX_OUTPUT_LEN + 1).validate(MAX_OUTPUT_LEN)


@pytest.mark.parametrize(
    ("overrides", "greedy"),
    [
        # TensorRT-LLM: top_k 0 and top_p unset (<= 0) is greedy, whatever the temperature
        ({}, True),
        ({"top_k": 0, "top_p": 0.0}, True),
        ({"top_k": 0, "top_p": -1.0}, True),
        ({"temperature": 0.7}, True),
        ({"top_k": 1}, True),
        ({"top_k": 1, "top_p": 0.0}, True),
        ({"top_k": 1, "top_p": 0.9, "temperature": 0.7}, True),
        ({"temperature": 0.0, "top_p": 0.9, "top_k": 40}, True),
        # sampling: top-k with p unset means p = 1; any p in (0, 1] is nucleus sampling
        ({"top_k": 40}, False),
        ({"top_k": 40, "top_p": 0.0}, False),
        ({"top_p": 0.9}, False),
        ({"top_k": 0, "top_p": 1.0}, False),
    ],
)
def test_greedy_follows_tensorrt_llm(overrides, greedy):
    assert params(**overrides).greedy is greedy


@pytest.mark.parametrize(("top_p", "effective"), [(0.0, 1.0), (-0.5, 1.0), (0.3, 0.3), (1.0, 1.0)])
def test_unset_top_p_samples_without_a_nucleus_cut(top_p, effective):
    assert params(top_k=40, top_p=top_p).effective_top_p == effective


def test_returned_sequences_default_to_the_beam_width():
    assert params().sequences == 1
    assert params(beam_width=3).sequences == 3
    assert params(beam_width=3, num_return_sequences=2).sequences == 2
    assert params(num_return_sequences=4).sequences == 4


def test_beam_search_with_neutral_penalties_and_a_guide_of_any_json_is_valid():
    params(beam_width=4, num_return_sequences=4, length_penalty=1.0).validate(MAX_OUTPUT_LEN)
    params(guide_type="json").validate(MAX_OUTPUT_LEN)
