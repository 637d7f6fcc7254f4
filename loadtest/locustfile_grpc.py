"""gRPC streaming user: Triton's bidirectional ModelStreamInfer, one call per request.

Run through `edgectl loadtest --target grpc://127.0.0.1:8001 ...`, which passes the
step spec (--edgectl-spec).  grpcio must be told about gevent before any channel
exists.  Each request is its own stream call on the user's channel (no client-side
response thread): iterate until Triton's final-response flag, then close the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

from tritonclient.grpc import InferResult, service_pb2_grpc  # noqa: E402
from tritonclient.grpc._utils import _get_inference_request  # noqa: E402

from edgectl.client import grpc_inputs  # noqa: E402
from edgectl.loadtest.locust_user import LlmUser  # noqa: E402


class GrpcStreamUser(LlmUser):
    request_type = "grpc-stream"

    def on_start(self) -> None:
        super().on_start()
        self._channel = grpc.insecure_channel(self.spec.url)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    def on_stop(self) -> None:
        self._channel.close()

    def stream(self, inputs: dict[str, Any]) -> Iterator[str]:
        request = _get_inference_request(
            model_name=self.spec.model, inputs=grpc_inputs(inputs), model_version="",
            request_id="", outputs=None, sequence_id=0, sequence_start=False,
            sequence_end=False, priority=0, timeout=None, parameters=None,
        )  # fmt: skip
        request.parameters["triton_enable_empty_final_response"].bool_param = True
        call = self._stub.ModelStreamInfer(iter([request]), timeout=self.spec.request_timeout_s)
        try:
            for response in call:
                if response.error_message:
                    raise RuntimeError(response.error_message)
                message = response.infer_response
                if message.outputs:
                    texts = InferResult(message).as_numpy("text_output").reshape(-1)
                    yield "".join(
                        t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts
                    )
                final = message.parameters.get("triton_final_response")
                if final is not None and final.bool_param:
                    return
            raise RuntimeError("the stream ended before the final response")
        finally:
            call.cancel()
