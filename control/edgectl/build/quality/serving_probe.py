"""Speed and peak memory of one artifact as the engine serves it, in a process of its own.

The report runs this module once per row and round (``python -m
edgectl.build.quality.serving_probe``): the child loads the engine's pipeline with the row's
load-time settings and a fixed KV cache, measures tok/s at 1 and 16 concurrent streams, and
reports its own peak resident memory, so one row's buffers never count towards another's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from edgectl.build.quality.perplexity import EngineSettings, generation_rate
from edgectl.errors import EdgectlError

# Concurrent streams -> new tokens per stream (greedy, EOS ignored): 1 x 64 and 16 x 32.
NEW_TOKENS = {1: 64, 16: 32}
# A fixed KV cache for every row (32-token blocks): room for 16 streams of prompt + their
# tokens, the same number of blocks whatever their precision, so memory compares rows.
KV_BLOCKS = 96


@dataclass
class ServingSpeed:
    tokens_per_s_1: float
    tokens_per_s_16: float
    peak_rss_bytes: int


def measure(model_dir: Path, settings: EngineSettings) -> ServingSpeed:
    """In this process: one warm-up, then one greedy run per concurrency."""
    from edgectl.runtime.openvino_engine import create_pipeline

    scheduler = settings.scheduler(enable_prefix_caching=False, num_kv_blocks=KV_BLOCKS)
    pipeline = create_pipeline(model_dir, scheduler)
    generation_rate(pipeline, model_dir, 1, new_tokens=16)  # warm-up
    rates = [generation_rate(pipeline, model_dir, n, tokens) for n, tokens in NEW_TOKENS.items()]
    return ServingSpeed(*rates, peak_rss_bytes=peak_rss_bytes())


def peak_rss_bytes() -> int:
    """This process's peak resident memory since it started running Python.

    /proc's VmHWM belongs to the address space exec created; ``ru_maxrss`` would not do:
    Linux carries it over from the parent that forked this process.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_in_subprocess(model_dir: Path, settings: EngineSettings) -> ServingSpeed:
    """:func:`measure` in a fresh Python process (its peak RSS is this row's alone)."""
    command = [
        sys.executable,
        "-m",
        __name__,
        str(model_dir),
        "--dynamic-quantization-group-size",
        str(settings.dynamic_quantization_group_size),
    ]
    if settings.kv_cache_precision:
        command += ["--kv-cache-precision", settings.kv_cache_precision]
    done = subprocess.run(  # noqa: S603 - an argument list, never a shell
        command, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise EdgectlError(f"speed run of {model_dir} failed: {done.stderr.strip()[-2000:]}")
    return ServingSpeed(**json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--dynamic-quantization-group-size", type=int, default=32)
    parser.add_argument("--kv-cache-precision", choices=("u8", "f16", "f32"))
    args = parser.parse_args()
    settings = EngineSettings(args.dynamic_quantization_group_size, args.kv_cache_precision)
    print(json.dumps(asdict(measure(args.model_dir, settings))), flush=True)


if __name__ == "__main__":
    main()
