"""AIPerf against the OpenAI gateway: the published table, at concurrency 1, 4, 8, 16.

Deploys one local server with its gateway on free ports (or uses ``--url`` of a running
gateway) and runs NVIDIA AIPerf from its own venv (``make aiperf`` creates
``.venv-aiperf``: its pins conflict with this project's) once per concurrency:
synthetic prompts of 128 tokens, 128 output tokens (``ignore_eos`` and ``min_tokens``
make every request that long), streaming chat, the model's own tokenizer from the
local artifact.  Writes ``aiperf.md`` with one row per concurrency.

    .venv/bin/python benchmarks/aiperf_gateway.py [--aiperf .venv-aiperf/bin/aiperf]
        [--requests-per-user 8] [--url http://127.0.0.1:9000] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from edgectl.build.builder import build
from edgectl.build.recipe import load_recipe
from edgectl.config import EdgectlConfig
from edgectl.deploy.local import deploy_local, stop_local
from edgectl.loadtest.runner import free_port

ROOT = Path(__file__).resolve().parents[1]


def aiperf_command(args: argparse.Namespace, url: str, tokenizer: Path, concurrency: int,
                   out: Path) -> list[str]:  # fmt: skip
    tokens = str(args.tokens)
    return [
        str(args.aiperf), "profile", "--model", "ensemble", "--url", url,
        "--endpoint-type", "chat", "--streaming", "--tokenizer", str(tokenizer),
        "--synthetic-input-tokens-mean", tokens, "--synthetic-input-tokens-stddev", "0",
        "--output-tokens-mean", tokens, "--output-tokens-stddev", "0",
        "--extra-inputs", "ignore_eos:true", "--extra-inputs", f"min_tokens:{tokens}",
        "--concurrency", str(concurrency),
        "--request-count", str(max(args.requests_per_user * concurrency, 4)),
        "--warmup-request-count", str(concurrency), "--random-seed", "0",
        "--ui", "none", "--no-server-metrics", "--no-gpu-telemetry", "--artifact-dir", str(out),
    ]  # fmt: skip


def row(concurrency: int, export: dict) -> str:
    def p50(name: str) -> str:
        return f"{export[name]['p50']:.1f}"

    return (
        f"| {concurrency} | {export['output_token_throughput']['avg']:.1f} "
        f"| {export['request_throughput']['avg']:.2f} | {p50('time_to_first_token')} "
        f"| {p50('inter_token_latency')} | {p50('request_latency')} "
        f"| {export['output_sequence_length']['avg']:.1f} | {int(export['request_count']['avg'])} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aiperf", type=Path, default=ROOT / ".venv-aiperf" / "bin" / "aiperf")
    parser.add_argument("--url", help="a running gateway (default: deploy one on free ports)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--tokens", type=int, default=128, help="prompt and output length")
    parser.add_argument("--requests-per-user", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if not args.aiperf.is_file():
        raise SystemExit(f"{args.aiperf} not found: run `make aiperf` (creates .venv-aiperf)")

    artifact = build(load_recipe(ROOT / "build" / "smollm2-135m-int8.yaml")).artifact
    run_dir = (args.out / f"{time.strftime('%Y%m%d-%H%M%S')}-aiperf").resolve()
    run_dir.mkdir(parents=True)
    lines = [
        f"AIPerf {args.tokens} tokens in (synthetic), {args.tokens} out, streaming chat",
        "",
        "| concurrency | output tok/s | req/s | TTFT p50 (ms) | ITL p50 (ms) "
        "| latency p50 (ms) | output tokens | requests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with ExitStack() as stack:
        url = args.url
        if url is None:
            port = free_port()
            config = EdgectlConfig.model_validate(
                {
                    "server": {"workdir": tempfile.mkdtemp(prefix="edgectl-aiperf-"),
                               "http_port": free_port(), "grpc_port": free_port(),
                               "metrics_port": free_port()},
                    "engine": {"max_num_seqs": max(32, max(args.concurrency))},
                    "model": {"artifact": str(artifact)},
                    "openai": {"port": port},
                }
            )  # fmt: skip
            stack.callback(stop_local, config)
            deploy_local(config, progress=print)
            url = f"http://127.0.0.1:{port}"
        for concurrency in args.concurrency:
            out = run_dir / f"c{concurrency}"
            command = aiperf_command(args, url, artifact, concurrency, out)
            print(f"aiperf at concurrency {concurrency}")
            with (run_dir / f"c{concurrency}.log").open("wb") as log:
                subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)  # noqa: S603 - an argument list, never a shell
            export = json.loads((out / "profile_export_aiperf.json").read_text(encoding="utf-8"))
            lines.append(row(concurrency, export))
            print(lines[-1])
    text = "\n".join(lines) + "\n"
    (run_dir / "aiperf.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"run: {run_dir}")


if __name__ == "__main__":
    main()
