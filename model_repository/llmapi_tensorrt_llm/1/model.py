"""NVIDIA's LLM-API model contract over ``tensorrt_llm.LLM`` (GPU nodes; never run here).

``model.yaml`` beside this file holds the ``LLM`` arguments (checkpoint, backend,
parallelism) and ``triton_config`` (decoupled).  Streaming requests get one response
per new piece of text; the final response carries ``finish_reason``.
"""

import asyncio
import threading
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from edgectl.runtime.llmapi import LLM_ARGUMENTS, request_settings

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _response(text, finish_reason, cumulative_logprob):
    tensors = [pb_utils.Tensor("text_output", np.asarray([text.encode()], dtype=object))]
    if finish_reason is not None:
        reason = np.asarray([str(finish_reason).encode()], dtype=object)
        tensors.append(pb_utils.Tensor("finish_reason", reason))
    if cumulative_logprob is not None:
        value = np.asarray([cumulative_logprob], dtype=np.float32)
        tensors.append(pb_utils.Tensor("cumulative_logprob", value))
    return pb_utils.InferenceResponse(output_tensors=tensors)


class TritonPythonModel:
    def initialize(self, args):
        import yaml
        from tensorrt_llm import LLM

        settings = yaml.safe_load((Path(__file__).parent / "model.yaml").read_text())
        self.decoupled = bool(settings.get("triton_config", {}).get("decoupled", False))
        self.llm = LLM(**{k: v for k, v in settings.items() if k in LLM_ARGUMENTS})
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    async def _generate(self, request, sender):
        from tensorrt_llm import SamplingParams

        try:
            settings = request_settings(lambda name: _input(request, name), self.decoupled)
        except ValueError as err:
            error = pb_utils.TritonError(str(err), pb_utils.TritonError.INVALID_ARG)
            sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
            return
        sampling = SamplingParams(**settings.sampling)
        sent = ""
        output = None
        async for output in self.llm.generate_async(
            settings.prompt, sampling, streaming=settings.streaming
        ):
            text = output.outputs[0].text
            if settings.streaming and text[len(sent) :]:
                sender.send(_response(text[len(sent) :], None, None))
                sent = text
        final = output.outputs[0]
        reason = final.finish_reason if settings.return_finish_reason else None
        logprob = final.cumulative_logprob if settings.return_cumulative_logprob else None
        rest = final.text[len(sent) :] if settings.streaming else final.text
        sender.send(_response(rest, reason, logprob), flags=FINAL)

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            asyncio.run_coroutine_threadsafe(self._generate(request, sender), self.loop)
        return None

    def finalize(self):
        self.llm.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
