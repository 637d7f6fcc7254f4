"""How well `edgectl plan` predicts this machine: calibrate, load-test, compare.

1. deploy the embedded model on free loopback ports with the engine's prefix cache off
   (the load profile reuses its prompts across steps; the planner models full prefills);
2. one warm-up load test (a fresh server prefills slowly for its first requests);
3. `edgectl plan --calibrate --through-server --name local-N` (short real generations
   through the server: the engine as served);
4. the measured load test (`loadtest/profiles/plan-check.yaml`), a run the calibration
   never saw; 3-4 repeat ``--rounds`` times, so each comparison pairs measurements taken
   minutes apart;
5. stop the server (always);
6. `edgectl plan --device local-N --against RUN_DIR`: predicted vs measured, with the error.

The load average is printed at every phase: on a shared machine the numbers move with it.

    .venv/bin/python benchmarks/plan_accuracy.py [--out DIR] [--profile PATH] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgectl.loadtest.runner import free_port

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "build/smollm2-135m-int8.yaml"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def edgectl(settings: list[str], *args: str) -> None:
    command = [sys.executable, "-m", "edgectl.cli", *settings, *args]
    print(f"$ edgectl {' '.join(args)}   [{load()}]", flush=True)
    subprocess.run(command, check=True, cwd=ROOT)  # noqa: S603 - an argument list, never a shell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--profile", default="loadtest/profiles/plan-check.yaml")
    parser.add_argument("--rounds", type=int, default=1, help="calibrate + measure, repeated")
    args = parser.parse_args()
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port())
    http, grpc, metrics = sorted(ports)
    workdir = Path(tempfile.mkdtemp(prefix="edgectl-plan-"))
    settings = [
        "--set", f"server.http_port={http}", "--set", f"server.grpc_port={grpc}",
        "--set", f"server.metrics_port={metrics}", "--set", f"server.workdir={workdir}",
        "--set", "engine.enable_kv_cache_reuse=false",
    ]  # fmt: skip
    run_dir = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}-plan-accuracy"
    measured = [run_dir / f"measured-{n}" for n in range(1, args.rounds + 1)]
    edgectl(settings, "deploy", "--local")
    try:
        edgectl(settings, "loadtest", "--profile", args.profile, "--out", str(run_dir / "warm-up"))
        for n, out in enumerate(measured, 1):
            calibrate = [
                "--device",
                "cpu",
                "--calibrate",
                "--through-server",
                "--name",
                f"local-{n}",
            ]
            edgectl(settings, "plan", "--recipe", RECIPE, *calibrate)
            edgectl(settings, "loadtest", "--profile", args.profile, "--out", str(out))
    finally:
        edgectl(settings, "stop")
    for n, out in enumerate(measured, 1):
        edgectl([], "plan", "--recipe", RECIPE, "--device", f"local-{n}", "--against", str(out))
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
