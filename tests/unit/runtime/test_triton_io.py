from __future__ import annotations

import json

import numpy as np
import pytest

from edgectl.runtime.contract import InvalidRequest
from edgectl.runtime.triton_io import model_parameters, parse_bool, scalar, strings


@pytest.mark.parametrize(
    ("array", "cast", "expected"),
    [
        (np.array([7], dtype=np.int32), int, 7),
        (np.array([[7]], dtype=np.int32), int, 7),
        (np.array([[0.5]], dtype=np.float32), float, 0.5),
        (np.array([True]), bool, True),
        (np.array([[2**63 + 5]], dtype=np.uint64), int, 2**63 + 5),
    ],
)
def test_scalar_reads_one_value_of_any_per_request_shape(array, cast, expected):
    value = scalar(array, "field", cast, default=None)
    assert value == expected
    assert type(value) is cast


def test_scalar_returns_default_when_absent():
    assert scalar(None, "top_k", int, 0) == 0
    assert scalar(None, "end_id", int, None) is None


@pytest.mark.parametrize("array", [np.array([1, 2]), np.array([[1, 2]]), np.array([])])
def test_scalar_rejects_anything_but_one_value(array):
    with pytest.raises(InvalidRequest, match="top_k must hold exactly one value"):
        scalar(array, "top_k", int, 0)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_scalar_rejects_non_finite_numbers(value):
    with pytest.raises(InvalidRequest, match="temperature must be a finite number"):
        scalar(np.array([[value]], dtype=np.float32), "temperature", float, None)


@pytest.mark.parametrize("text", ["1", "true", "True", " YES ", "on"])
def test_parse_bool_true(text):
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["0", "false", "no", "off", "", "maybe"])
def test_parse_bool_false(text):
    assert parse_bool(text) is False


def test_model_parameters_flattens_string_values():
    config = {
        "name": "preprocessing",
        "parameters": {
            "max_input_len": {"string_value": "1024"},
            "tokenizer_dir": {"string_value": "/models/tok"},
        },
    }
    assert model_parameters({"model_config": json.dumps(config)}) == {
        "max_input_len": "1024",
        "tokenizer_dir": "/models/tok",
    }


def test_model_parameters_without_parameters_is_empty():
    assert model_parameters({"model_config": json.dumps({"name": "m"})}) == {}


def test_strings_flattens_any_shape():
    assert strings(None) == []
    assert strings(np.array([[b"a", b"b"]], dtype=object)) == [b"a", b"b"]
