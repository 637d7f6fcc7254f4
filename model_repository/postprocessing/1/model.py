"""Triton adapter: output_ids -> text with edgectl.serving.detokenize.AnchoredDecoder."""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from edgectl.serving.openvino_backend import anchored_decoder
from edgectl.serving.triton_io import model_parameters


class TritonPythonModel:
    def initialize(self, args):
        self.decoder = anchored_decoder(Path(model_parameters(args)["tokenizer_dir"]))

    def _decode(self, request):
        tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH").as_numpy()
        lengths = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH").as_numpy()
        # tokens: [batch, beam, seq]; lengths: [batch, beam]
        texts = [
            [self.decoder.decode(beam[: int(n)]).encode("utf-8") for beam, n in zip(row, row_len)]
            for row, row_len in zip(tokens, lengths)
        ]
        # text_output is [batch, beam] ([-1] per request), as in NVIDIA's postprocessing.
        output = np.array(texts, dtype=object).reshape(len(texts), -1)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT", output)])

    def execute(self, requests):
        return [self._decode(request) for request in requests]
