"""Triton adapter for the CPU engine step (edgectl.serving.engine).

``execute`` only turns each request into an EngineRequest and queues it; the
engine's own thread streams responses back through the request's sender.
"""

import logging
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from edgectl.serving.cancel_board import CancelBoard
from edgectl.serving.contract import InvalidRequest, SamplingParams, decode_word_lists
from edgectl.serving.engine import (
    CANCELLED,
    INTERNAL,
    INVALID,
    UNAVAILABLE,
    EngineLimits,
    EngineRequest,
)
from edgectl.serving.openvino_backend import SchedulerSettings, build_engine
from edgectl.serving.triton_io import model_parameters, parse_bool, scalar
from edgectl.timeslice.slots import SlotGate

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


class _SenderSink:
    """Delivers engine output as TensorRT-LLM-shaped responses: output_ids [1, beam, n]."""

    def __init__(self, sender):
        self._sender = sender

    def send(self, ids, final, key):
        output = np.asarray(ids, dtype=np.int32).reshape(1, 1, -1)
        length = np.asarray([[len(ids)]], dtype=np.int32)
        response = pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("output_ids", output),
                pb_utils.Tensor("sequence_length", length),
                pb_utils.Tensor("request_key", np.asarray([[key]], dtype=np.uint64)),
            ]
        )
        self._sender.send(response, flags=FINAL if final else 0)

    def fail(self, message, kind=INVALID):
        code = getattr(pb_utils.TritonError, _ERROR_CODE_NAMES.get(kind, "INTERNAL"))
        error = pb_utils.TritonError(message, code)
        self._sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)

    def cancelled(self):
        return self._sender.is_cancelled()


class _Metrics:
    """Engine counters on Triton's /metrics endpoint, labelled by model name.

    A counter whose source restarts from zero (a re-applied time-slicing policy) counts
    on from there instead of going backwards.
    """

    COUNTERS = {
        "steps": "Engine steps (one scheduler iteration each)",
        "scheduled_sequences": "Sum over steps of the sequences scheduled in that step",
        "requests_added": "Requests admitted to the running batch",
        "requests_finished": "Requests that completed",
        "requests_cancelled": "Requests cancelled by their client",
        "requests_failed": "Requests refused or aborted with an error",
        "requests_rejected": "Requests refused for overload (queue full or queue timeout)",
    }
    GAUGES = {
        "peak_scheduled": "Most sequences scheduled in one step since load",
        "active": "Requests in the running batch now",
        "waiting": "Requests waiting for a slot in the running batch",
        "kv_cache_usage": "Fraction of the paged KV cache in use",
    }

    def __init__(self, model_name, prefix="edgectl_engine", counters=None, gauges=None):
        labels = {"model": model_name}
        self._metrics = {}
        for kind, table in (
            (pb_utils.MetricFamily.COUNTER, self.COUNTERS if counters is None else counters),
            (pb_utils.MetricFamily.GAUGE, self.GAUGES if gauges is None else gauges),
        ):
            for key, description in table.items():
                suffix = "_total" if kind == pb_utils.MetricFamily.COUNTER else ""
                family = pb_utils.MetricFamily(
                    name=f"{prefix}_{key}{suffix}", description=description, kind=kind
                )
                self._metrics[key] = (kind, family, family.Metric(labels=labels))
        self._last = {}

    def publish(self, stats):
        values = stats if isinstance(stats, dict) else stats.as_dict()
        for key, (kind, _family, metric) in self._metrics.items():
            value = values[key]
            if kind == pb_utils.MetricFamily.COUNTER:
                if value < self._last.get(key, 0):
                    self._last[key] = 0
                delta = value - self._last.get(key, 0)
                if delta:
                    metric.increment(delta)
                self._last[key] = value
            else:
                metric.set(value)


# Co-resident time-slicing (edgectl.timeslice.slots): achieved share per model is
# rate(edgectl_timeslice_device_seconds_total) over its sum across models.
SLOT_COUNTERS = {
    "device_seconds": "Seconds this engine held the device under the time-slicing policy",
    "slots": "Time slots this engine completed",
    "slot_waits": "Times this engine had work but waited for another model's slot",
    "slot_wait_seconds": "Seconds this engine had work but waited for another model's slot",
}
SLOT_GAUGES = {"configured_share": "This engine's configured share of the device (0..1)"}


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
        )
        self.metrics = _Metrics(self.model_name)
        self.slot_metrics = _Metrics(
            self.model_name, "edgectl_timeslice", SLOT_COUNTERS, SLOT_GAUGES
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
        )
        self.engine.start()

    def _publish(self, stats):
        self.metrics.publish(stats)
        slots = self.gate.counters() if self.gate is not None else None
        if slots is not None:
            self.slot_metrics.publish(slots)

    def _params(self, request):
        beam_width = scalar(_input(request, "beam_width"), "beam_width", int, 1)
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
            sink = _SenderSink(request.get_response_sender())
            try:
                engine_request = EngineRequest(self._prompt(request), self._params(request), sink)
            except InvalidRequest as err:
                sink.fail(str(err))
                continue
            self.engine.submit(engine_request)
        return None

    def finalize(self):
        self.engine.shutdown()
