"""Swap mode's front model (edgectl.timeslice.swap_core explains the protocol).

``execute`` only queues the request.  A dispatcher thread applies the schedule: while the
backing ensemble is in, queued requests are forwarded to it (decoupled BLS, one worker
thread each, the stream relayed as it comes); while it is out they wait, at most
``swap.wait_timeout_s``, then get UNAVAILABLE.  A second thread competes for the board's
scheduler lock; the front holding it also runs the swap scheduler for every model.
"""

import fcntl
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import triton_python_backend_utils as pb_utils

from edgectl.servermem import server_rss_bytes
from edgectl.serving.triton_io import model_parameters
from edgectl.supervisor import live_stubs
from edgectl.timeslice.swap_core import (
    IN,
    RESIDENT_PHASES,
    Board,
    FrontGate,
    SwapScheduler,
)

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
TICK_S = 0.05
ELECT_S = 1.0  # how often a front without the scheduler lock tries to take it
UNLOAD_TIMEOUT_S = 120.0
MAX_WORKERS = 128  # concurrent forwarded requests; more wait in the pool, still counted
log = logging.getLogger("edgectl.timeslice_front")


class _TritonOps:
    """The scheduler's operations through the Python backend's model-control API."""

    def is_ready(self, model):
        return pb_utils.is_model_ready(model.backing)

    def load(self, model):
        pb_utils.load_model(model.backing)  # its composing models load with it
        if not pb_utils.is_model_ready(model.backing):
            raise RuntimeError(f"{model.backing} is not ready after loading")

    def unload(self, model):
        """Unload the ensemble and each step (Triton keeps steps otherwise); wait for
        their stubs to exit, so the memory is really returned.  Returns their RSS."""
        server = psutil.Process(os.getppid())
        names = set(model.steps)
        stubs_rss = 0
        for pid, stub in live_stubs(server).items():
            if stub.model in names:
                try:
                    stubs_rss += psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    pass
        for name in model.steps:
            try:
                pb_utils.unload_model(name)
            except pb_utils.TritonModelException as err:
                log.warning("unload %s: %s", name, err)
        deadline = time.monotonic() + UNLOAD_TIMEOUT_S
        while True:
            alive = [s.model for s in live_stubs(server).values() if s.model in names]
            ready = [name for name in model.steps if pb_utils.is_model_ready(name)]
            if not alive and not ready:
                return stubs_rss
            if time.monotonic() > deadline:
                raise RuntimeError(f"still loaded after {UNLOAD_TIMEOUT_S:g}s: {alive or ready}")
            time.sleep(0.1)

    def rss(self):
        return server_rss_bytes(os.getppid())


class _Metrics:
    """Swap counters on Triton's /metrics endpoint, labelled by the served name."""

    COUNTERS = {
        "requests": "Requests the swap front accepted",
        "ins": "Times the model was swapped in (loaded)",
        "outs": "Times the model was swapped out (unloaded)",
        "load_seconds": "Sum of swap-in load times, seconds",
        "waited_requests": "Requests that waited for a swap-in",
        "wait_seconds": "Sum of those waits, seconds",
        "wait_timeouts": "Requests refused after waiting swap.wait_timeout_s",
    }
    GAUGES = {
        "resident": "1 while the model is swapped in",
        "queue_depth": "Requests waiting for the model to be swapped in",
        "in_flight": "Requests forwarded to the model and not finished",
        "last_load_seconds": "Load time of the latest swap-in, seconds",
    }

    def __init__(self, model_name):
        labels = {"model": model_name}
        self._metrics = {}
        for kind, table in (
            (pb_utils.MetricFamily.COUNTER, self.COUNTERS),
            (pb_utils.MetricFamily.GAUGE, self.GAUGES),
        ):
            for key, description in table.items():
                suffix = "_total" if kind == pb_utils.MetricFamily.COUNTER else ""
                family = pb_utils.MetricFamily(
                    name=f"edgectl_timeslice_swap_{key}{suffix}",
                    description=description,
                    kind=kind,
                )
                self._metrics[key] = (kind, family, family.Metric(labels=labels))
        self._last = {}

    def publish(self, values):
        for key, (kind, _family, metric) in self._metrics.items():
            value = float(values.get(key, 0.0))
            if kind == pb_utils.MetricFamily.COUNTER:
                delta = value - self._last.get(key, 0.0)
                if delta > 0:
                    metric.increment(delta)
                    self._last[key] = value
            else:
                metric.set(value)


def _error(message, code_name="UNAVAILABLE"):
    code = getattr(pb_utils.TritonError, code_name)
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        self.name = args["model_name"]
        self.backing = params["backing_name"]
        self.board = Board(Path(params["board_dir"]))
        self.plan = self.board.plan()
        self.outputs = [o["name"] for o in json.loads(args["model_config"])["output"]]
        self.gate = FrontGate(self.name, self.plan.wait_timeout_s)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="forward")
        self.metrics = _Metrics(self.name)
        self.lock_file = None
        self.threads = [
            threading.Thread(target=self._dispatch_loop, name="dispatch", daemon=True),
            threading.Thread(target=self._schedule_loop, name="schedule", daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    # -- requests ---------------------------------------------------------------
    def execute(self, requests):
        now = time.monotonic()
        for request in requests:
            # Copy the inputs now: the request itself is released when execute returns.
            inputs = [pb_utils.Tensor(t.name(), np.array(t.as_numpy())) for t in request.inputs()]
            item = (inputs, request.get_response_sender())
            with self.lock:
                self.gate.submit(item, now)
        return None

    def _forward(self, item):
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
        finally:
            with self.lock:
                self.gate.done()

    def _refuse(self, item, message):
        try:
            item[1].send(_error(message), flags=FINAL)
        except Exception:  # noqa: BLE001 - the client is gone
            pass

    def _timeout_message(self, schedule, waited):
        entry = schedule.get("models", {}).get(self.name) or {}
        resident = [
            name if other["phase"] == IN else f"{name} ({other['phase']})"
            for name, other in schedule.get("models", {}).items()
            if other.get("phase") in RESIDENT_PHASES
        ]
        holders = ", ".join(resident) or "no model"
        message = (
            f"model {self.name} is swapped out: waited {waited:.1f}s "
            f"(swap.wait_timeout_s={self.plan.wait_timeout_s:g}) for it to be swapped in; "
            f"{holders} holds the memory budget ({self.plan.memory_budget_gb:g} GB)"
        )
        if entry.get("last_error"):
            message += f"; its last swap-in failed: {entry['last_error']}"
        return message + "; retry later"

    # -- threads --------------------------------------------------------------------
    def _dispatch_loop(self):
        next_metrics = 0.0
        while not self.stop.wait(TICK_S):
            try:
                schedule = self.board.schedule()
                entry = schedule.get("models", {}).get(self.name)
                with self.lock:
                    forward, expired = self.gate.poll(entry, time.monotonic())
                    self.gate.demand.updated_at = time.time()
                    self.board.write_demand(self.name, self.gate.demand)
                    demand = self.gate.demand
                for item in forward:
                    self.pool.submit(self._forward, item)
                for item, waited in expired:
                    self._refuse(item, self._timeout_message(schedule, waited))
                if time.monotonic() >= next_metrics:
                    next_metrics = time.monotonic() + 0.5
                    self._publish(schedule, entry or {}, demand)
            except Exception:  # keep serving; the next tick retries
                log.exception("swap front %s: dispatch tick failed", self.name)

    def _publish(self, schedule, entry, demand):
        loads = [
            e for e in schedule.get("events", [])
            if e["model"] == self.name and e["kind"] == "in" and not e.get("error")
        ]  # fmt: skip
        self.metrics.publish(
            {
                "requests": demand.requests,
                "ins": entry.get("swap_ins", 0),
                "outs": entry.get("swap_outs", 0),
                "load_seconds": entry.get("load_s_total", 0.0),
                "waited_requests": demand.waited,
                "wait_seconds": demand.wait_s_total,
                "wait_timeouts": demand.timeouts,
                "resident": 1.0 if entry.get("phase") == IN else 0.0,
                "queue_depth": demand.queued,
                "in_flight": demand.in_flight,
                "last_load_seconds": loads[-1]["seconds"] if loads else 0.0,
            }
        )

    def _schedule_loop(self):
        """Take the scheduler lock when free and schedule until unloaded or told to stop.

        Once ``edgectl`` flags the board as stopping, nothing is loaded or unloaded any
        more (and nobody takes over), so turning swap mode off never races a swap.
        """
        scheduler = None
        while not self.stop.is_set():
            if self.board.stopping():
                if scheduler is not None:
                    scheduler.stop()
                return
            if scheduler is None:
                scheduler = self._try_elect()
                if scheduler is None:
                    self.stop.wait(ELECT_S)
                    continue
                continue  # look at the stopping flag again before the first tick
            try:
                scheduler.tick()
            except Exception:
                log.exception("swap scheduler tick failed")
            self.stop.wait(TICK_S)

    def _try_elect(self):
        handle = open(self.board.lock_path, "a+")  # noqa: SIM115 - held while scheduling
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return None
        self.lock_file = handle
        scheduler = SwapScheduler(
            self.plan, self.board, _TritonOps(), clock=time.monotonic, wall=time.time
        )
        scheduler.recover()
        log.info("swap front %s now runs the swap scheduler", self.name)
        return scheduler

    def finalize(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        with self.lock:
            queued = self.gate.drain_all()
        for item in queued:
            self._refuse(item, f"model {self.name}: swap mode was turned off; retry later")
        self.pool.shutdown(wait=True)
        if self.lock_file is not None:
            self.lock_file.close()  # releases the scheduler lock for another front
