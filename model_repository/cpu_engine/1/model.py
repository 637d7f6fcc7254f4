"""Triton adapter for the CPU engine step (edgectl.runtime.engine).

``execute`` only turns each request into EngineRequests (one per batch row and
returned sequence) and queues them; the engine's own thread streams responses
back through the request's sender.
"""

import logging
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from edgectl.runtime.cancel_board import CancelBoard
from edgectl.runtime.coalesce import Coalescer
from edgectl.runtime.contract import InvalidRequest
from edgectl.runtime.emission import Emission
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
from edgectl.runtime.request_inputs import RowReader, sequence_requests
from edgectl.runtime.response_tensors import FanIn, outputs_to_send
from edgectl.runtime.slots import SlotGate
from edgectl.runtime.speculative import SpeculativeSettings, refuse_unsupported_inputs
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


# RAG drop counts preprocessing computed, echoed on every response of their row.
RAG_COUNTS = ("rag_passages_dropped", "rag_tokens_dropped")


def _flag_set(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return tensor is not None and bool(tensor.as_numpy().any())


def _rag_counts(lookup, rows):
    """Each row's RAG drop counts as this step's outputs (0 when absent)."""
    reader = RowReader(lookup, rows)
    return {
        row: {
            name: np.asarray([[reader.value(name, row, int, 0)]], dtype=np.int32)
            for name in RAG_COUNTS
        }
        for row in range(rows)
    }


def _fan_in(request, count, extras=None):
    """One response sender shared by the request's engine sequences (rows, samples)."""
    sender = request.get_response_sender()

    def deliver(tensors, final):
        outputs = [pb_utils.Tensor(name, value) for name, value in tensors.items()]
        sender.send(pb_utils.InferenceResponse(output_tensors=outputs), flags=FINAL if final else 0)

    def deliver_error(message, kind):
        code = getattr(pb_utils.TritonError, _ERROR_CODE_NAMES.get(kind, "INTERNAL"))
        error = pb_utils.TritonError(message, code)
        sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)

    requested = outputs_to_send(
        request.requested_output_names(), lambda name: _flag_set(request, name)
    )
    return FanIn(count, deliver, deliver_error, sender.is_cancelled, requested, extras)


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        self.model_name = args["model_name"]
        self.max_input_len = int(params["max_input_len"])
        self.max_output_len = int(params["max_output_len"])
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
            dynamic_quantization_group_size=int(params.get("dynamic_quantization_group_size", 32)),
            kv_cache_precision=params.get("kv_cache_precision") or None,
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

    def _stop(self, request):
        """TensorRT-LLM's ``stop``: end the running request with the same id."""
        if self.coalescer is not None:
            self.coalescer.stopping(request.request_id())
        self.engine.stop_request(request.request_id())
        emission = Emission(
            ids=[[]],
            log_probs=[[]],
            cum_log_probs=[0.0],
            final=True,
            finish_reasons=["stop"],
            num_input_tokens=0,
            num_output_tokens=0,
        )
        _fan_in(request, 1).sink().send(emission)

    def _submit(self, request):
        def lookup(name):
            return _input(request, name)

        if scalar(lookup("stop"), "stop", bool, False):
            self._stop(request)
            return
        try:
            # speculation cannot verify several beams or samples against one draft
            refuse_unsupported_inputs(self.speculative, lookup)
            sequences = sequence_requests(lookup, self.exclude_input, self.max_output_len)
        except InvalidRequest as err:
            _fan_in(request, 1).sink().fail(str(err), INVALID)
            return
        except (ValueError, TypeError, IndexError) as err:  # tensors of a shape we cannot read
            _fan_in(request, 1).sink().fail(f"malformed request tensors: {err}", INVALID)
            return
        rows = 1 + max(sequence.batch_index for sequence in sequences)
        try:
            extras = _rag_counts(lookup, rows)
        except InvalidRequest as err:
            _fan_in(request, 1).sink().fail(str(err), INVALID)
            return
        fan_in = _fan_in(request, len(sequences), extras)
        # per-request timings cannot come from another request's sequence (coalescing)
        shareable = not _flag_set(request, "return_perf_metrics")
        for sequence in sequences:
            self.submit(
                EngineRequest(
                    sequence.prompt_ids,
                    sequence.params,
                    fan_in.sink(),
                    batch_index=sequence.batch_index,
                    sequence_index=sequence.sequence_index,
                    request_id=request.request_id(),
                    shareable=shareable,
                )
            )

    def execute(self, requests):
        for request in requests:
            self._submit(request)
        if self.coalescer is not None:  # its counters move here, in execute's thread
            self.coalesce_metrics.publish(self.coalescer.stats)
        return None

    def finalize(self):
        self.engine.shutdown()
