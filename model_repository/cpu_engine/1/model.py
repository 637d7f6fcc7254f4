"""Triton adapter for the CPU engine step (edgectl.runtime.engine).

``execute`` only turns each request into an EngineRequest and queues it; the
engine's own thread streams responses back through the request's sender.
"""

import logging
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from edgectl.runtime.cancel_board import CancelBoard
from edgectl.runtime.coalesce import Coalescer
from edgectl.runtime.contract import InvalidRequest, SamplingParams, decode_word_lists
from edgectl.runtime.engine import (
    CANCELLED,
    INTERNAL,
    INVALID,
    UNAVAILABLE,
    EngineLimits,
    EngineRequest,
)
from edgectl.runtime.metrics import (
    COALESCE_COUNTERS,
    COALESCE_GAUGES,
    ENGINE_COUNTERS,
    ENGINE_GAUGES,
    ENGINE_PREFIX,
    SLOT_COUNTERS,
    SLOT_GAUGES,
    SLOT_PREFIX,
    SPECULATIVE_COUNTERS,
    SPECULATIVE_GAUGES,
    MetricTable,
)
from edgectl.runtime.openvino_engine import SchedulerSettings, build_engine
from edgectl.runtime.slots import SlotGate
from edgectl.runtime.speculative import SpeculativeSettings, refuse_unsupported
from edgectl.runtime.triton_io import model_parameters, parse_bool, scalar

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
# TritonError's codes by name; pb_utils.TritonError only exists once the stub runs the model.
_ERROR_CODE_NAMES = {
    INVALID: "INVALID_ARG",
    UNAVAILABLE: "UNAVAILABLE",
    CANCELLED: "CANCELLED",
    INTERNAL: "INTERNAL",
}
log = logging.getLogger("edgectl.cpu_engine")


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _rag_counts(request):
    """The RAG drop counts preprocessing computed, as this step's outputs (0 when absent)."""
    tensors = []
    for name in ("rag_passages_dropped", "rag_tokens_dropped"):
        value = _input(request, name)
        count = 0 if value is None else int(np.asarray(value).reshape(-1)[0])
        tensors.append(pb_utils.Tensor(name, np.asarray([[count]], dtype=np.int32)))
    return tensors


class _SenderSink:
    """Delivers engine output as TensorRT-LLM-shaped responses: output_ids [1, beam, n]."""

    def __init__(self, sender, extras=()):
        self._sender = sender
        self._extras = list(extras)  # echoed per-request tensors (RAG drop counts)

    def send(self, ids, final, key):
        output = np.asarray(ids, dtype=np.int32).reshape(1, 1, -1)
        length = np.asarray([[len(ids)]], dtype=np.int32)
        response = pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("output_ids", output),
                pb_utils.Tensor("sequence_length", length),
                pb_utils.Tensor("request_key", np.asarray([[key]], dtype=np.uint64)),
                *self._extras,
            ]
        )
        self._sender.send(response, flags=FINAL if final else 0)

    def fail(self, message, kind=INVALID):
        code = getattr(pb_utils.TritonError, _ERROR_CODE_NAMES.get(kind, "INTERNAL"))
        error = pb_utils.TritonError(message, code)
        self._sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)

    def cancelled(self):
        return self._sender.is_cancelled()


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        self.model_name = args["model_name"]
        self.max_input_len = int(params["max_input_len"])
        self.exclude_input = parse_bool(params["exclude_input_in_output"])
        limits = EngineLimits(
            max_input_len=self.max_input_len,
            max_output_len=int(params["max_output_len"]),
            max_num_seqs=int(params["max_num_seqs"]),
            max_queue_size=int(params["max_queue_size"]),
            queue_timeout_s=float(params["queue_timeout_s"]),
            max_request_seconds=float(params["max_request_seconds"]),
        )
        settings = SchedulerSettings(
            max_num_seqs=int(params["max_num_seqs"]),
            max_num_batched_tokens=int(params["max_num_batched_tokens"]),
            kv_cache_gb=float(params["kv_cache_gb"]),
            enable_prefix_caching=parse_bool(params["enable_prefix_caching"]),
            dynamic_quantization=parse_bool(params.get("dynamic_quantization", "true")),
            inference_precision=params.get("inference_precision", "f32") or "f32",
        )
        self.speculative = SpeculativeSettings.from_parameters(params)
        labels = {"model": self.model_name}
        self.metrics = MetricTable(pb_utils, ENGINE_PREFIX, ENGINE_COUNTERS, ENGINE_GAUGES, labels)
        self.slot_metrics = MetricTable(pb_utils, SLOT_PREFIX, SLOT_COUNTERS, SLOT_GAUGES, labels)
        self.spec_metrics = MetricTable(
            pb_utils, ENGINE_PREFIX, SPECULATIVE_COUNTERS, SPECULATIVE_GAUGES, labels
        )
        self.coalesce_metrics = MetricTable(
            pb_utils, ENGINE_PREFIX, COALESCE_COUNTERS, COALESCE_GAUGES, labels
        )
        # Co-resident time-slicing: idle (one stat per step) until a policy names us.
        self.gate = (
            SlotGate(Path(params["timeslice_dir"]), self.model_name)
            if params.get("timeslice_dir")
            else None
        )
        self.engine = build_engine(
            Path(params["model_dir"]),
            limits,
            default_end_id=int(params["end_id"]),
            settings=settings,
            stats_hook=self._publish,
            cancel_board=CancelBoard(Path(params["cancel_dir"])),
            device_gate=self.gate,
            speculative=self.speculative,
        )
        self.engine.start()
        self.submit = self.engine.submit
        self.coalescer = None
        if parse_bool(params.get("coalesce", "false")):
            self.coalescer = Coalescer(
                self.engine.submit,
                cache_size=int(params.get("response_cache_size", "0") or 0),
                cache_ttl_s=float(params.get("response_cache_ttl_s", "60") or 60),
            )
            self.submit = self.coalescer.submit

    def _publish(self, stats):
        self.metrics.publish(stats)
        if self.engine.speculation is not None:
            self.spec_metrics.publish(self.engine.speculation.stats)
        slots = self.gate.counters() if self.gate is not None else None
        if slots is not None:
            self.slot_metrics.publish(slots)

    def _params(self, request):
        beam_width = scalar(_input(request, "beam_width"), "beam_width", int, 1)
        n = scalar(_input(request, "num_return_sequences"), "num_return_sequences", int, 1)
        refuse_unsupported(self.speculative, beam_width, n)
        if beam_width != 1:
            raise InvalidRequest(f"beam_width must be 1 on the CPU engine, got {beam_width}")
        if decode_word_lists(_input(request, "bad_words_list")):
            raise InvalidRequest("bad_words is not supported by the CPU engine")
        return SamplingParams(
            max_new_tokens=scalar(_input(request, "request_output_len"), "max_tokens", int, 0),
            end_id=scalar(_input(request, "end_id"), "end_id", int, None),
            top_k=scalar(_input(request, "runtime_top_k"), "top_k", int, 0),
            top_p=scalar(_input(request, "runtime_top_p"), "top_p", float, 1.0),
            temperature=scalar(_input(request, "temperature"), "temperature", float, None),
            seed=scalar(_input(request, "random_seed"), "random_seed", int, None),
            repetition_penalty=scalar(
                _input(request, "repetition_penalty"), "repetition_penalty", float, 1.0
            ),
            presence_penalty=scalar(
                _input(request, "presence_penalty"), "presence_penalty", float, 0.0
            ),
            frequency_penalty=scalar(
                _input(request, "frequency_penalty"), "frequency_penalty", float, 0.0
            ),
            min_length=scalar(_input(request, "min_length"), "min_length", int, 0),
            stop_words=decode_word_lists(_input(request, "stop_words_list")),
            streaming=scalar(_input(request, "streaming"), "stream", bool, False),
            exclude_input_in_output=scalar(
                _input(request, "exclude_input_in_output"),
                "exclude_input_in_output",
                bool,
                self.exclude_input,
            ),
        )

    def _prompt(self, request):
        ids = np.asarray(_input(request, "input_ids")).reshape(-1)
        length = scalar(_input(request, "input_lengths"), "input_lengths", int, ids.size)
        if not 0 < length <= ids.size:
            raise InvalidRequest(f"input_lengths must be in [1, {ids.size}], got {length}")
        return [int(i) for i in ids[:length]]

    def execute(self, requests):
        for request in requests:
            sink = _SenderSink(request.get_response_sender(), _rag_counts(request))
            try:
                engine_request = EngineRequest(self._prompt(request), self._params(request), sink)
            except InvalidRequest as err:
                sink.fail(str(err))
                continue
            self.submit(engine_request)
        if self.coalescer is not None:  # its counters move here, in execute's thread
            self.coalesce_metrics.publish(self.coalescer.stats)
        return None

    def finalize(self):
        self.engine.shutdown()
