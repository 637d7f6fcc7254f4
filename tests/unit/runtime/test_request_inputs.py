"""Engine-step tensors -> engine sequences: batches, samples, aliases, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from edgectl.runtime.contract import InvalidRequest
from edgectl.runtime.request_inputs import UNSUPPORTED_INPUTS, sequence_requests

MAX_OUTPUT_LEN = 64


def lookup_of(**tensors):
    arrays = {name: np.asarray(value) for name, value in tensors.items()}
    return arrays.get


def one_prompt(**extra):
    return lookup_of(
        input_ids=np.asarray([[5, 6, 7]], dtype=np.int32),
        input_lengths=np.asarray([3], dtype=np.int32),
        request_output_len=np.asarray([4], dtype=np.int32),
        **extra,
    )


def test_batch_rows_become_sequences_with_their_own_length_and_batch_index():
    lookup = lookup_of(
        input_ids=np.asarray([[5, 6, 7], [8, 9, 0]], dtype=np.int32),
        input_lengths=np.asarray([3, 2], dtype=np.int32),
        request_output_len=np.asarray([4, 6], dtype=np.int32),
    )
    sequences = sequence_requests(lookup, True, MAX_OUTPUT_LEN)
    assert [s.prompt_ids for s in sequences] == [[5, 6, 7], [8, 9]]
    assert [s.batch_index for s in sequences] == [0, 1]
    assert [s.params.max_new_tokens for s in sequences] == [4, 6]


def test_num_return_sequences_fans_out_samples_with_sequence_index():
    lookup = one_prompt(num_return_sequences=np.asarray([3], dtype=np.int32))
    sequences = sequence_requests(lookup, True, MAX_OUTPUT_LEN)
    assert [s.sequence_index for s in sequences] == [0, 1, 2]
    assert all(s.params.num_return_sequences is None for s in sequences)


def test_beam_search_is_one_sequence_returning_every_beam():
    lookup = one_prompt(beam_width=np.asarray([3], dtype=np.int32))
    [sequence] = sequence_requests(lookup, True, MAX_OUTPUT_LEN)
    assert sequence.params.beam_width == 3 and sequence.params.sequences == 3


@pytest.mark.parametrize(
    ("new", "old", "field"),
    [("seed", "random_seed", "seed"), ("min_tokens", "min_length", "min_length")],
)
def test_renamed_inputs_work_under_both_names(new, old, field):
    dtype = np.uint64 if "seed" in new else np.int32
    for name in (new, old):
        [sequence] = sequence_requests(
            one_prompt(**{name: np.asarray([2], dtype=dtype)}), True, MAX_OUTPUT_LEN
        )
        assert getattr(sequence.params, field) == 2
    both = one_prompt(**{new: np.asarray([2], dtype=dtype), old: np.asarray([3], dtype=dtype)})
    with pytest.raises(InvalidRequest, match=f"{new} and {old} disagree"):
        sequence_requests(both, True, MAX_OUTPUT_LEN)


def test_nvidia_default_client_settings_are_accepted():
    lookup = one_prompt(
        runtime_top_k=np.asarray([1], dtype=np.int32),
        runtime_top_p=np.asarray([0.0], dtype=np.float32),
    )
    [sequence] = sequence_requests(lookup, True, MAX_OUTPUT_LEN)
    assert sequence.params.greedy


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_INPUTS))
def test_unsupported_input_is_refused_by_name_with_the_reason(name):
    lookup = one_prompt(**{name: np.asarray([1])})
    with pytest.raises(InvalidRequest, match=f"{name} is not supported: "):
        sequence_requests(lookup, True, MAX_OUTPUT_LEN)


def test_unset_placeholders_from_preprocessing_are_not_refused():
    lookup = one_prompt(
        embedding_bias=np.zeros((1, 0), dtype=np.float32),
        prompt_table_extra_ids=np.zeros((1, 0), dtype=np.uint64),
        decoder_input_ids=np.asarray([[0]], dtype=np.int32),
        decoder_input_lengths=np.asarray([0], dtype=np.int32),
        return_context_logits=np.asarray([False]),
        retention_decode_priority=np.asarray([[5]], dtype=np.int32),
    )
    assert len(sequence_requests(lookup, True, MAX_OUTPUT_LEN)) == 1


def test_decoder_prompt_is_refused():
    lookup = one_prompt(
        decoder_input_ids=np.asarray([[3, 4]], dtype=np.int32),
        decoder_input_lengths=np.asarray([2], dtype=np.int32),
    )
    with pytest.raises(InvalidRequest, match="decoder_input_ids is not supported"):
        sequence_requests(lookup, True, MAX_OUTPUT_LEN)


def test_per_row_value_count_must_match_the_batch():
    lookup = one_prompt(temperature=np.asarray([0.5, 0.7], dtype=np.float32))
    with pytest.raises(InvalidRequest, match="temperature must hold one value per request row"):
        sequence_requests(lookup, True, MAX_OUTPUT_LEN)


def test_guide_type_is_read_as_text():
    lookup = one_prompt(
        guided_decoding_guide_type=np.asarray([[b"REGEX"]], dtype=object),
        guided_decoding_guide=np.asarray([[b"[a-z]+"]], dtype=object),
    )
    [sequence] = sequence_requests(lookup, True, MAX_OUTPUT_LEN)
    assert (sequence.params.guide_type, sequence.params.guide) == ("regex", "[a-z]+")
