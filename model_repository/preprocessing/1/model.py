"""Triton adapter for edgectl.runtime.tokenization.Preprocessor (one or B prompts per request)."""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from edgectl.runtime.contract import InvalidRequest
from edgectl.runtime.request_inputs import RowReader
from edgectl.runtime.tokenization import PreprocessLimits, Preprocessor, stack_rows
from edgectl.runtime.triton_io import model_parameters, strings

# NVIDIA's preprocessing inputs the CPU deployment cannot honour: refused when set.
REFUSED = {
    "DECODER_QUERY": "decoder_text_input: the served models are decoder-only",
    "IMAGE_BYTES": "image inputs: multimodal models are not served",
    "IMAGE_URL": "image inputs: multimodal models are not served",
    "IMAGES": "image inputs: multimodal models are not served",
    "VIDEO_BYTES": "video inputs: multimodal models are not served",
    "EMBEDDING_BIAS_WORDS": "embedding_bias_words: the engine has no per-token logit bias",
    "EMBEDDING_BIAS_WEIGHTS": "embedding_bias_weights: the engine has no per-token logit bias",
    "PROMPT_TABLE_EXTRA_ID": "prompt_table_extra_id: prompt tuning tables are not supported",
}


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _refuse_unsupported(request):
    for name, reason in REFUSED.items():
        value = _input(request, name)
        if value is not None and any(bool(item) for item in np.asarray(value).reshape(-1)):
            raise InvalidRequest(f"{reason.split(':')[0]} is not supported ({reason})")


def _row_strings(array, row):
    return [] if array is None else strings(np.asarray(array, dtype=object)[row])


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        limits = PreprocessLimits(int(params["max_input_len"]), int(params["max_output_len"]))
        self.pre = Preprocessor.from_dir(
            Path(params["tokenizer_dir"]), limits, int(params["end_id"]), int(params["pad_id"])
        )

    def _prepare(self, request):
        _refuse_unsupported(request)
        query = np.asarray(_input(request, "QUERY"), dtype=object)
        batch = query.shape[0] if query.ndim > 1 else 1
        query = query.reshape(batch, -1)
        if query.shape[1] != 1:
            raise InvalidRequest(f"text_input must hold one string per row, got {query.shape[1]}")
        reader = RowReader(lambda name: _input(request, name), batch)
        messages = _input(request, "MESSAGES")
        rows = [
            self.pre.prepare(
                query[row, 0],
                max_tokens=reader.value("REQUEST_OUTPUT_LEN", row, int, None),
                stop_words=_row_strings(_input(request, "STOP_WORDS_DICT"), row),
                bad_words=_row_strings(_input(request, "BAD_WORDS_DICT"), row),
                end_id=reader.value("END_ID", row, int, None),
                pad_id=reader.value("PAD_ID", row, int, None),
                apply_chat_template=reader.value("APPLY_CHAT_TEMPLATE", row, bool, False),
                messages=None if messages is None else reader.value("MESSAGES", row, str, None),
            )
            for row in range(batch)
        ]
        pad = rows[0]["OUT_PAD_ID"][0]
        tensors = stack_rows(rows, {"INPUT_ID": pad, "STOP_WORDS_IDS": -1, "BAD_WORDS_IDS": -1})
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, value) for name, value in tensors.items()]
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._prepare(request))
            except (InvalidRequest, ValueError, TypeError, IndexError) as err:
                message = str(err) if isinstance(err, InvalidRequest) else f"malformed input: {err}"
                error = pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses
