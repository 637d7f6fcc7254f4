"""Triton adapter for edgectl.runtime.tokenization.Preprocessor."""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from edgectl.runtime.contract import InvalidRequest
from edgectl.runtime.tokenization import PreprocessLimits, Preprocessor
from edgectl.runtime.triton_io import model_parameters, scalar, strings


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        limits = PreprocessLimits(int(params["max_input_len"]), int(params["max_output_len"]))
        self.pre = Preprocessor.from_dir(
            Path(params["tokenizer_dir"]), limits, int(params["end_id"]), int(params["pad_id"])
        )

    def _prepare(self, request):
        query = strings(_input(request, "QUERY"))
        if len(query) != 1:
            raise InvalidRequest(f"text_input must hold exactly one string, got {len(query)}")
        tensors = self.pre.prepare(
            query[0],
            max_tokens=scalar(_input(request, "REQUEST_OUTPUT_LEN"), "max_tokens", int, None),
            stop_words=strings(_input(request, "STOP_WORDS_DICT")),
            bad_words=strings(_input(request, "BAD_WORDS_DICT")),
            end_id=scalar(_input(request, "END_ID"), "end_id", int, None),
            pad_id=scalar(_input(request, "PAD_ID"), "pad_id", int, None),
            apply_chat_template=scalar(
                _input(request, "APPLY_CHAT_TEMPLATE"), "apply_chat_template", bool, False
            ),
        )
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(name, np.expand_dims(value, 0)) for name, value in tensors.items()
            ]
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._prepare(request))
            except InvalidRequest as err:
                error = pb_utils.TritonError(str(err), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses
