"""Triton adapter: output_ids -> text with edgectl.runtime.detokenize.AnchoredDecoder."""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from edgectl.runtime.cancel_board import CancelBoard
from edgectl.runtime.openvino_engine import anchored_decoder
from edgectl.runtime.triton_io import model_parameters


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        self.decoder = anchored_decoder(Path(params["tokenizer_dir"]))
        self.cancel_board = (
            CancelBoard(Path(params["cancel_dir"])) if params["cancel_dir"] else None
        )

    def _forward_cancellation(self, request):
        """The client is gone: tell the engine step (which cannot see it) to stop."""
        key = pb_utils.get_input_tensor_by_name(request, "REQUEST_KEY")
        if key is not None and self.cancel_board is not None:
            self.cancel_board.post(int(key.as_numpy().reshape(-1)[0]))
        error = pb_utils.TritonError("request cancelled", pb_utils.TritonError.CANCELLED)
        return pb_utils.InferenceResponse(error=error)

    def _decode(self, request):
        tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH").as_numpy()
        lengths = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH").as_numpy()
        # tokens: [batch, beam, seq]; lengths: [batch, beam].  text_output is one flat
        # [batch x beam] array, as NVIDIA's postprocessing returns it, so that
        # ``as_numpy("text_output")[0]`` is the first sequence's bytes.
        texts = [
            self.decoder.decode(beam[: int(n)]).encode("utf-8")
            for row, row_lengths in zip(tokens, lengths, strict=True)
            for beam, n in zip(row, row_lengths, strict=True)
        ]
        output = np.array(texts, dtype=object)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT", output)])

    def _respond(self, request):
        if request.is_cancelled():
            return self._forward_cancellation(request)
        try:
            return self._decode(request)
        except Exception as err:  # e.g. ids outside the vocabulary from a direct caller
            error = pb_utils.TritonError(
                f"cannot detokenize TOKENS_BATCH: {err}", pb_utils.TritonError.INVALID_ARG
            )
            return pb_utils.InferenceResponse(error=error)

    def execute(self, requests):
        return [self._respond(request) for request in requests]
