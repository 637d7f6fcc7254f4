"""The quantization report, as a benchmark: every precision side by side in one run.

Builds each recipe of build/report/*.yaml for the CPU target (reused when already built),
then measures, in this one process and one after another: bytes on disk, held-out
perplexity (vs the FP32 row) and single-stream CPU tok/s. Same as `edgectl build --report`.

    .venv/bin/python benchmarks/quantization_report.py [--out build/report/results]
        [--windows N] [RECIPE ...]

Serving-setting rows (build/report/serving.yaml) are measured for the recipes given.
--windows N scores only the first N held-out windows (a quicker, noisier quality number).
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from edgectl.build.quality.report import (
    REPORT_DIR,
    default_measure,
    generate_report,
    report_recipes,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=REPORT_DIR / "results")
    parser.add_argument("--windows", type=int, default=None, help="held-out windows to score")
    args = parser.parse_args()
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {message}", flush=True)

    measure = functools.partial(default_measure, max_windows=args.windows)
    path = generate_report(args.recipes or report_recipes(), args.out, progress, measure_fn=measure)
    print(path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
