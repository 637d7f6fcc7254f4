"""Bad-input storm: thousands of malformed or hostile requests, seeded, over HTTP and gRPC.

Sends requests with wrong dtypes and shapes, missing inputs, empty/huge/invalid-UTF-8
strings, control characters, prompts far over the input limit, absurd max_tokens,
NaN/inf/out-of-range sampling values, unknown models and versions, oversized and
unparsable bodies and odd stop-word lists, to the ensemble and to every composing
model.  Checks that every request gets an answer, that tritonserver and its stubs
survive (same pids, no supervisor restarts), and that a greedy request returns the
same text after the storm as before it.

    .venv/bin/python benchmarks/fuzz_requests.py [--requests 10000] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

MODELS = ["ensemble", "preprocessing", "tensorrt_llm", "postprocessing", "no-such-model"]
GREEDY = {"text_input": "What is the capital of France?", "max_tokens": 12,
          "apply_chat_template": True}  # fmt: skip
TIMEOUT_S = 60.0

STRINGS = [
    "",
    " ",
    "hello",
    "\x00\x01\x02\x1b[31m",
    "é日本🙂" * 3,
    "word " * 5000,  # far over max_input_len
    "x" * 300_000,  # huge
    "\ud800",  # lone surrogate
]
NUMBERS = [0, -1, 1, 3, 2**31 - 1, -(2**31), 2**40, 1e308, -0.5, 0.5, 1.5, 1e-9]
FLOATS = [float("nan"), float("inf"), float("-inf"), -1.0, 0.0, 0.3, 1.0, 2.0, 1e30]
RAW_BODIES = [b"", b"{", b"[]", b"null", b"\xff\xfe\xfd", b'{"text_input": ' + b"[" * 5000,
              b"{" + b'"a":1,' * 200_000 + b'"b":2}']  # fmt: skip


@dataclass
class Outcome:
    kind: str  # "ok", "refused" (an explicit error), "timeout", "transport"
    detail: str = ""


def _json_value(rng: random.Random):
    choice = rng.randrange(6)
    if choice == 0:
        return rng.choice(STRINGS)
    if choice == 1:
        return rng.choice(NUMBERS)
    if choice == 2:
        return rng.choice([v for v in FLOATS if np.isfinite(v)])
    if choice == 3:
        return [rng.choice(STRINGS) for _ in range(rng.randrange(0, 4))]
    if choice == 4:
        return rng.choice([None, True, False, {}, {"a": 1}])
    return rng.choice([1, 2, 3])  # valid small max_tokens-like value


def http_case(rng: random.Random, base: str) -> Callable[[], Outcome]:
    model = rng.choice(MODELS)
    path = rng.choice(["generate", "generate_stream", "infer"])
    version = rng.choice(["", "", "/versions/1", "/versions/99", "/versions/-1"])
    url = f"{base}/v2/models/{model}{version}/{path}"
    if rng.random() < 0.15:
        content = rng.choice(RAW_BODIES)
    else:
        fields = ["text_input", "max_tokens", "top_p", "top_k", "temperature", "stop_words",
                  "random_seed", "stream", "end_id", "input_ids", "request_output_len",
                  "unknown_field"]  # fmt: skip
        # Half the bodies are a valid request with one or two fields mutated, so the
        # storm reaches deep paths (engine, stop words), not only the front door.
        body = {"text_input": "Hello", "max_tokens": 3} if rng.random() < 0.5 else {}
        body.update({f: _json_value(rng) for f in rng.sample(fields, rng.randrange(0, 3))})
        if isinstance(body.get("max_tokens"), int) and rng.random() < 0.7:
            body["max_tokens"] = max(-5, min(body["max_tokens"], 4))  # keep valid runs short
        content = json.dumps(body, allow_nan=True, ensure_ascii=rng.random() < 0.5).encode(
            "utf-8", "surrogatepass"
        )

    def send() -> Outcome:
        try:
            response = httpx.post(url, content=content, timeout=TIMEOUT_S)
        except httpx.TimeoutException:
            return Outcome("timeout", url)
        except httpx.HTTPError as err:
            return Outcome("transport", f"{url}: {err}")
        return Outcome(
            "ok" if response.status_code == 200 else "refused", str(response.status_code)
        )

    return send


def _array(rng: random.Random):
    """A tensor of a random dtype and shape, sometimes holding hostile values."""
    shape = rng.choice([(1, 1), (1, 0), (1, 3), (2, 2), (1, 2, 2), (1, 40)])
    kind = rng.randrange(5)
    if kind == 0:
        pool = [s.encode("utf-8", "surrogatepass") for s in STRINGS] + [b"\xff\xfe"]
        values = [rng.choice(pool) for _ in range(int(np.prod(shape)))]
        return np.array(values, dtype=object).reshape(shape), "BYTES"
    if kind == 1:
        data = np.array([rng.choice([-5, 0, 1, 2, 49151, 49152, 10**6, 2**31 - 1])
                         for _ in range(int(np.prod(shape)))], dtype=np.int32)  # fmt: skip
        return data.reshape(shape), "INT32"
    if kind == 2:
        data = np.array([rng.choice(FLOATS) for _ in range(int(np.prod(shape)))], dtype=np.float32)
        return data.reshape(shape), "FP32"
    if kind == 3:
        return np.zeros(shape, dtype=bool), "BOOL"
    return np.full(shape, 2**63, dtype=np.uint64), "UINT64"


INPUT_NAMES = {
    "ensemble": ["text_input", "max_tokens", "top_p", "top_k", "temperature", "stop_words",
                 "bad_words", "random_seed", "stream", "end_id", "beam_width", "min_length"],
    "preprocessing": ["QUERY", "REQUEST_OUTPUT_LEN", "STOP_WORDS_DICT", "BAD_WORDS_DICT",
                      "END_ID", "PAD_ID", "APPLY_CHAT_TEMPLATE"],
    "tensorrt_llm": ["input_ids", "input_lengths", "request_output_len", "end_id",
                     "stop_words_list", "bad_words_list", "runtime_top_p", "temperature",
                     "streaming", "beam_width", "random_seed", "exclude_input_in_output"],
    "postprocessing": ["TOKENS_BATCH", "SEQUENCE_LENGTH", "REQUEST_KEY"],
    "no-such-model": ["x"],
}  # fmt: skip


VALID_GRPC = {
    "ensemble": {
        "text_input": (np.array([[b"Hello"]], dtype=object), "BYTES"),
        "max_tokens": (np.array([[3]], dtype=np.int32), "INT32"),
    },
    "tensorrt_llm": {
        "input_ids": (np.array([[1, 2, 3]], dtype=np.int32), "INT32"),
        "input_lengths": (np.array([[3]], dtype=np.int32), "INT32"),
        "request_output_len": (np.array([[3]], dtype=np.int32), "INT32"),
    },
}


def _tensor(name: str, data: np.ndarray, dtype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(data.shape), dtype)
    tensor.set_data_from_numpy(data)
    return tensor


def grpc_case(rng: random.Random, url: str) -> Callable[[], Outcome]:
    model = rng.choice(MODELS)
    names = rng.sample(INPUT_NAMES[model], rng.randrange(0, len(INPUT_NAMES[model]) + 1))
    if rng.random() < 0.1:
        names.append("unknown_input")
    valid = VALID_GRPC.get(model, {}) if rng.random() < 0.5 else {}
    inputs = []
    for name, (data, dtype) in valid.items():
        if name not in names:  # a valid base request; the mutated inputs replace its values
            inputs.append(_tensor(name, np.asarray(data), dtype))
    for name in names:
        data, dtype = _array(rng)
        if name in ("max_tokens", "request_output_len", "REQUEST_OUTPUT_LEN") and dtype == "INT32":
            data = np.clip(data, -5, 4).astype(np.int32)  # keep any valid run short
        inputs.append(_tensor(name, data, dtype))
    version = rng.choice(["", "", "99"])
    decoupled = model in ("ensemble", "tensorrt_llm")

    def send() -> Outcome:
        client = grpcclient.InferenceServerClient(url)
        try:
            if not decoupled:
                client.infer(model, inputs, model_version=version, client_timeout=TIMEOUT_S)
                return Outcome("ok")
            return _stream_once(client, model, inputs, version)
        except InferenceServerException as err:
            timed_out = "Deadline" in str(err.status())
            return Outcome("timeout" if timed_out else "refused", str(err.status()))
        finally:
            client.close()

    return send


def _stream_once(client, model: str, inputs, version: str) -> Outcome:
    import queue

    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        client.async_stream_infer(
            model, inputs, model_version=version, enable_empty_final_response=True
        )
        while True:
            try:
                result, error = results.get(timeout=TIMEOUT_S)
            except queue.Empty:
                return Outcome("timeout", model)
            if error is not None:
                return Outcome("refused", error.message()[:80])
            final = result.get_response().parameters.get("triton_final_response")
            if final is not None and final.bool_param:
                return Outcome("ok")
    finally:
        client.stop_stream(cancel_requests=True)


def storm(http_url: str, grpc_url: str, count: int, seed: int, workers: int = 8) -> Counter:
    rng = random.Random(seed)
    cases = [
        http_case(rng, http_url) if rng.random() < 0.5 else grpc_case(rng, grpc_url)
        for _ in range(count)
    ]
    with ThreadPoolExecutor(workers) as pool:
        outcomes = list(pool.map(lambda case: case(), cases))
    return Counter(o.kind for o in outcomes)


def greedy_text(http_url: str) -> str:
    response = httpx.post(f"{http_url}/v2/models/ensemble/generate", json=GREEDY, timeout=60)
    response.raise_for_status()
    return response.json()["text_output"]


def main() -> None:
    from edgectl.build.builder import build
    from edgectl.build.recipe import load_recipe
    from edgectl.config import EdgectlConfig
    from edgectl.deploy.local import deploy_local
    from edgectl.deploy.server import LocalTriton
    from edgectl.runtime.processes import live_stubs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    artifact = build(load_recipe(root / "build" / "smollm2-135m-int8.yaml")).artifact
    config = EdgectlConfig.model_validate(
        {
            "server": {"workdir": tempfile.mkdtemp(prefix="edgectl-fuzz-"), "http_port": 18200,
                       "grpc_port": 18201, "metrics_port": 18202},
            "engine": {"max_input_len": 256, "max_output_len": 256},
            "model": {"artifact": str(artifact)},
            "openai": {"enabled": False},  # Triton alone is measured here
        }
    )  # fmt: skip
    state = deploy_local(config, progress=print)
    server = LocalTriton(config.server)
    try:
        import psutil

        stubs_before = set(live_stubs(psutil.Process(state.pid)))
        before = greedy_text(state.http_url)
        started = time.monotonic()
        counts = storm(state.http_url, state.grpc_url, args.requests, args.seed)
        seconds = time.monotonic() - started
        after = greedy_text(state.http_url)
        stubs_after = set(live_stubs(psutil.Process(state.pid)))
        report = {
            "requests": args.requests,
            "seconds": round(seconds, 1),
            "outcomes": dict(counts),
            "server_alive": server.running() is not None,
            "stubs_unchanged": stubs_before == stubs_after,
            "stub_restarts": server.recovery_summary(),
            "greedy_text_unchanged": before == after,
        }
        print(json.dumps(report, indent=2))
        ok = (
            counts["timeout"] == 0 and counts["transport"] == 0 and report["server_alive"]
            and report["stubs_unchanged"] and report["greedy_text_unchanged"]
        )  # fmt: skip
        print("PASS" if ok else "FAIL")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
