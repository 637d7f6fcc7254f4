"""Unary engine step: answers ModelInfer with the whole result of the decoupled engine.

Each request is forwarded (BLS) to the one decoupled CPU engine step, whose stream
is merged into a single response, sent from a worker thread through the request's
response sender.  ``execute`` returns at once, so a request that arrives while
others run is forwarded straight away and the engine batches it with them in flight.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

from edgectl.runtime.contract import InvalidRequest
from edgectl.runtime.triton_io import model_parameters
from edgectl.runtime.unary import answer_later, check_unary_request, merge_sequences


def _error(message, code):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


class TritonPythonModel:
    def initialize(self, args):
        import json

        params = model_parameters(args)
        self.engine = params["engine_model"]
        self.end_id = int(params["end_id"])
        config = json.loads(args["model_config"])
        self.outputs = [output["name"] for output in config["output"]]
        # Inputs Triton reshapes to scalars: forwarded with their declared [1] again.
        self.reshaped = {i["name"] for i in config["input"] if "reshape" in i}
        self.pool = ThreadPoolExecutor(max_workers=int(params["max_concurrent"]))

    def _forward(self, inputs, requested, request_id):
        # the client's id travels on, so a later ``stop`` request can name it
        bls = pb_utils.InferenceRequest(
            model_name=self.engine,
            inputs=inputs,
            requested_output_names=requested,
            request_id=request_id,
        )
        finals = []
        for response in bls.exec(decoupled=True):
            if response.has_error():
                return pb_utils.InferenceResponse(error=response.error())
            tensors = {t.name(): t.as_numpy() for t in response.output_tensors()}
            if tensors:
                finals.append(tensors)
        if not finals:
            return _error("the engine returned no result", pb_utils.TritonError.INTERNAL)
        merged = merge_sequences(finals, self.end_id)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, value) for name, value in merged.items()]
        )

    def _prepare(self, request):
        """``(work, None)`` to run the request, or ``(None, error)`` to refuse it."""

        def lookup(name):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return None if tensor is None else tensor.as_numpy()

        try:
            check_unary_request(lookup)
        except InvalidRequest as err:
            return None, _error(str(err), pb_utils.TritonError.INVALID_ARG)
        inputs = [
            pb_utils.Tensor(
                t.name(),
                np.array(t.as_numpy()).reshape(-1, 1)
                if t.name() in self.reshaped
                else np.array(t.as_numpy()),
            )
            for t in request.inputs()
        ]
        requested = list(request.requested_output_names()) or self.outputs
        request_id = request.request_id()
        return (lambda: self._forward(inputs, requested, request_id)), None

    def execute(self, requests):
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for request in requests:
            sender = request.get_response_sender()
            work, error = self._prepare(request)
            if error is not None:
                sender.send(error, flags=final)
                continue
            answer_later(
                self.pool,
                sender,
                work,
                final,
                lambda message: _error(message, pb_utils.TritonError.INTERNAL),
            )
        return None

    def finalize(self):
        self.pool.shutdown(wait=False, cancel_futures=True)
