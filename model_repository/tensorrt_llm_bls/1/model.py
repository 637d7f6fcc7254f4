"""NVIDIA's BLS alternative to the ensemble: preprocessing -> engine -> postprocessing in Python.

Same inputs and outputs as the ensemble (its step maps are read from the rendered
ensemble config, edgectl.runtime.bls).  Decoupled deployments stream one response
per engine response and end with an empty final response, as NVIDIA's BLS model
does; unary deployments answer each request with one response.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from edgectl.runtime import bls
from edgectl.runtime.cancel_board import CancelBoard
from edgectl.runtime.contract import InvalidRequest
from edgectl.runtime.triton_io import model_parameters, parse_bool
from edgectl.runtime.unary import merge_sequences

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
log = logging.getLogger("edgectl.tensorrt_llm_bls")


class StepError(Exception):
    """A composing model refused the request; its TritonError goes to the client as is."""

    def __init__(self, error):
        super().__init__(error.message())
        self.error = error


def _caller(request_id):
    """bls.Call for one client request; its id travels on so ``stop`` can name it."""

    def call(model, inputs, requested, decoupled):
        return _call(model, inputs, requested, decoupled, request_id)

    return call


def _call(model, inputs, requested, decoupled, request_id=""):
    request = pb_utils.InferenceRequest(
        model_name=model,
        inputs=[pb_utils.Tensor(name, value) for name, value in inputs.items()],
        requested_output_names=requested,
        request_id=request_id,
    )
    responses = request.exec(decoupled=True) if decoupled else [request.exec()]
    for response in responses:
        if response.has_error():
            raise StepError(response.error())
        tensors = {t.name(): t.as_numpy() for t in response.output_tensors()}
        if tensors:
            yield tensors


def _error_response(err):
    if isinstance(err, StepError):
        return pb_utils.InferenceResponse(error=err.error)
    code = (
        pb_utils.TritonError.INVALID_ARG
        if isinstance(err, InvalidRequest)
        else pb_utils.TritonError.INTERNAL
    )
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err), code))


def _tensors(mapping):
    return [pb_utils.Tensor(name, value) for name, value in mapping.items()]


class TritonPythonModel:
    def initialize(self, args):
        import json

        params = model_parameters(args)
        config = json.loads(args["model_config"])
        self.decoupled = parse_bool(params["decoupled"])
        self.end_id = int(params["end_id"])
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]
        repository = Path(args["model_repository"]).parent
        self.plan = bls.EnsemblePlan.from_config(repository / params["ensemble"] / "config.pbtxt")
        self.pool = ThreadPoolExecutor(max_workers=int(params["max_concurrent"]))
        cancel_dir = params.get("cancel_dir")
        self.cancel_board = CancelBoard(Path(cancel_dir)) if cancel_dir else None

    def _client_inputs(self, request):
        client = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                client[name] = np.array(tensor.as_numpy())
        return client

    def _stream(self, client, requested, sender, request_id):
        try:
            call = _caller(request_id)
            for response in bls.run(self.plan, call, client, requested, decoupled=True):
                if sender.is_cancelled():
                    self._forward_cancellation(response.engine_key)
                    return
                sender.send(pb_utils.InferenceResponse(output_tensors=_tensors(response.tensors)))
            sender.send(flags=FINAL)
        except Exception as err:  # one request failed: tell its client, keep serving
            try:
                sender.send(_error_response(err), flags=FINAL)
            except Exception:  # noqa: BLE001 - the client is gone
                log.debug("could not deliver %s", err)

    def _forward_cancellation(self, key):
        """The client left: stop its engine sequence (a BLS call cannot cancel it)."""
        if key is not None and self.cancel_board is not None:
            self.cancel_board.post(key)

    def _unary(self, client, requested, request_id):
        try:
            run = bls.run(self.plan, _caller(request_id), client, requested, decoupled=False)
            responses = [response.tensors for response in run]
            merged = merge_sequences(responses, self.end_id)
            if "text_output" in merged:  # one flat text per sequence, as postprocessing gives
                texts = [r["text_output"].reshape(-1) for r in responses if "text_output" in r]
                merged["text_output"] = np.concatenate(texts)
            return pb_utils.InferenceResponse(output_tensors=_tensors(merged))
        except Exception as err:  # noqa: BLE001 - reported to this request's client
            return _error_response(err)

    def execute(self, requests):
        work = [
            (self._client_inputs(r), list(r.requested_output_names()) or self.outputs, r)
            for r in requests
        ]
        if self.decoupled:
            for client, requested, request in work:
                sender = request.get_response_sender()
                threading.Thread(
                    target=self._stream,
                    args=(client, requested, sender, request.request_id()),
                    daemon=True,
                ).start()
            return None
        futures = [
            self.pool.submit(self._unary, client, requested, request.request_id())
            for client, requested, request in work
        ]
        return [future.result() for future in futures]

    def finalize(self):
        self.pool.shutdown(wait=False, cancel_futures=True)
