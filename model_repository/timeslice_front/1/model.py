"""Swap mode's front model: Triton adapter for edgectl.runtime.swap_front.SwapFront.

``execute`` only copies each request's inputs and queues it.  SwapFront decides when a
request is forwarded to the backing ensemble (decoupled BLS, the stream relayed as it
comes) or refused, and runs the swap scheduler when this front holds the board's lock
(edgectl.runtime.swap explains the protocol).  Only the pb_utils calls live here.
"""

import json
import logging
import os
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from edgectl.runtime.metrics import SWAP_COUNTERS, SWAP_GAUGES, SWAP_PREFIX, MetricTable
from edgectl.runtime.swap import Board
from edgectl.runtime.swap_front import ModelControlOps, SwapFront
from edgectl.runtime.triton_io import model_parameters

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
log = logging.getLogger("edgectl.timeslice_front")


def _error(message, code_name="UNAVAILABLE"):
    code = getattr(pb_utils.TritonError, code_name)
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        self.name = args["model_name"]
        self.backing = params["backing_name"]
        board = Board(Path(params["board_dir"]))
        self.outputs = [o["name"] for o in json.loads(args["model_config"])["output"]]
        metrics = MetricTable(
            pb_utils, SWAP_PREFIX, SWAP_COUNTERS, SWAP_GAUGES, {"model": self.name}
        )
        ops = ModelControlOps(
            pb_utils.is_model_ready,
            pb_utils.load_model,
            pb_utils.unload_model,
            os.getppid(),
            unload_errors=(pb_utils.TritonModelException,),
        )
        self.front = SwapFront(
            self.name,
            board,
            board.plan(),
            forward=self._forward,
            refuse=self._refuse,
            publish=metrics.publish,
            ops=ops,
        )
        self.front.start()

    def execute(self, requests):
        now = self.front.clock()
        for request in requests:
            # Copy the inputs now: the request itself is released when execute returns.
            inputs = [pb_utils.Tensor(t.name(), np.array(t.as_numpy())) for t in request.inputs()]
            self.front.submit((inputs, request.get_response_sender()), now)
        return None

    def _forward(self, item):
        """Relay the backing ensemble's stream; SwapFront counts the request finished."""
        inputs, sender = item
        final_sent = False
        try:
            bls = pb_utils.InferenceRequest(
                model_name=self.backing, inputs=inputs, requested_output_names=self.outputs
            )
            for response in bls.exec(decoupled=True):
                if response.has_error():
                    sender.send(pb_utils.InferenceResponse(error=response.error()), flags=FINAL)
                    final_sent = True
                    break
                outputs = response.output_tensors()
                if outputs:
                    sender.send(pb_utils.InferenceResponse(output_tensors=outputs))
            if not final_sent:
                sender.send(flags=FINAL)
        except Exception as err:  # the backing model vanished, the client left, ...
            log.warning("forward to %s failed: %s", self.backing, err)
            if not final_sent:
                try:
                    sender.send(_error(f"{self.name}: {err}", "INTERNAL"), flags=FINAL)
                except Exception:  # noqa: BLE001 - the client is gone; nothing to tell
                    pass

    def _refuse(self, item, message):
        try:
            item[1].send(_error(message), flags=FINAL)
        except Exception:  # noqa: BLE001 - the client is gone
            pass

    def finalize(self):
        self.front.close()
