"""The ``trtllm-build`` step: run it where TensorRT-LLM exists, otherwise write an executable plan.

The plan is three files beside the checkpoint: ``build_engine.sh`` (the exact
command line, paths relative to the script so the folder can be copied to any GPU
host), ``engine-build-job.yaml`` (a Kubernetes Job running it in the TensorRT-LLM
container on a GPU node) and ``plan.json`` (the same, machine-readable).
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from edgectl.build.recipe import Recipe
from edgectl.errors import EdgectlError

CHECKPOINT_DIR = "checkpoint"
ENGINE_DIR = "engine"
SCRIPT = "build_engine.sh"
JOB_MANIFEST = "engine-build-job.yaml"
PLAN = "plan.json"
JOB_MOUNT = "/models"


@dataclass(frozen=True)
class EnginePlan:
    command: list[str]  # relative to the trtllm artifact folder
    gpus: int
    ran: bool  # True when trtllm-build ran here and the engine exists


def tensorrt_llm_available() -> bool:
    """trtllm-build can run here only with the tensorrt_llm package and its CLI."""
    return importlib.util.find_spec("tensorrt_llm") is not None and bool(
        shutil.which("trtllm-build")
    )


def _enable(value: bool) -> str:
    return "enable" if value else "disable"


def trtllm_build_command(recipe: Recipe, checkpoint: str, engine: str) -> list[str]:
    """The ``trtllm-build`` argv for a recipe (flags as documented for TensorRT-LLM 0.12+)."""
    target = recipe.trtllm
    command = [
        "trtllm-build",
        "--checkpoint_dir", checkpoint,
        "--output_dir", engine,
        "--max_batch_size", str(target.max_batch_size),
        "--max_input_len", str(target.max_input_len),
        "--max_seq_len", str(target.max_seq_len),
        "--max_num_tokens", str(target.max_num_tokens),
        "--max_beam_width", str(target.max_beam_width),
        "--kv_cache_type", "paged" if target.paged_kv_cache else "continuous",
        "--use_paged_context_fmha", _enable(target.use_paged_context_fmha),
        "--remove_input_padding", "enable",
        "--gpt_attention_plugin", "auto",
        "--gemm_plugin", "auto",
        "--workers", str(target.tp_size * target.pp_size),
    ]  # fmt: skip
    if recipe.precision.kv_cache == "fp8":
        command += ["--use_fp8_context_fmha", "enable"]  # attention reads the FP8 KV cache
    if target.speculative_decoding_mode:
        command += ["--speculative_decoding_mode", target.speculative_decoding_mode]
        if target.max_draft_len:
            command += ["--max_draft_len", str(target.max_draft_len)]
    return command


def _script(command: list[str]) -> str:
    return (
        "#!/usr/bin/env bash\n"
        "# Compile the TensorRT-LLM engine from the checkpoint beside this script.\n"
        "# Needs a GPU and TensorRT-LLM (e.g. the Triton TensorRT-LLM container).\n"
        "set -euo pipefail\n"
        'cd "$(dirname "$0")"\n'
        "command -v trtllm-build >/dev/null || "
        '{ echo "trtllm-build not found: run this in the TensorRT-LLM container" >&2; exit 2; }\n'
        f"{shlex.join(command)}\n"
        f'echo "engine written to $(pwd)/{ENGINE_DIR}"\n'
    )


def job_name(recipe_name: str) -> str:
    """A DNS-1123 name: recipe names may hold '_' and '.', Kubernetes names may not."""
    name = f"edgectl-engine-build-{recipe_name}".lower().replace("_", "-").replace(".", "-")
    return name[:63].rstrip("-")


def job_manifest(recipe: Recipe, gpus: int) -> dict:
    """A Job that runs the script on a GPU node; the artifact folder comes from a PVC."""
    folder = f"{JOB_MOUNT}/{recipe.name}.trtllm"
    security = {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"edgectl-engine-build-{recipe.name}".lower()
            .replace("_", "-")
            .replace(".", "-")[:63],
            "labels": {"app.kubernetes.io/part-of": "edgectl", "edgectl/recipe": recipe.name},
        },
        "spec": {
            "backoffLimit": 1,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
                    "containers": [
                        {
                            "name": "trtllm-build",
                            "image": recipe.trtllm.image,
                            "command": ["bash", f"{folder}/{SCRIPT}"],
                            "resources": {"limits": {"nvidia.com/gpu": gpus}},
                            "securityContext": security,
                            "volumeMounts": [{"name": "models", "mountPath": JOB_MOUNT}],
                        }
                    ],
                    "volumes": [
                        {"name": "models", "persistentVolumeClaim": {"claimName": "edgectl-models"}}
                    ],
                }
            },
        },
    }


def plan_engine_build(recipe: Recipe, folder: Path, log: Path | None = None) -> EnginePlan:
    """Write the plan into ``folder`` (which holds ``checkpoint/``); run it when possible."""
    command = trtllm_build_command(recipe, CHECKPOINT_DIR, ENGINE_DIR)
    gpus = recipe.trtllm.tp_size * recipe.trtllm.pp_size
    script = folder / SCRIPT
    script.write_text(_script(command), encoding="utf-8")
    script.chmod(0o755)
    (folder / JOB_MANIFEST).write_text(
        yaml.safe_dump(job_manifest(recipe, gpus), sort_keys=False), encoding="utf-8"
    )
    ran = False
    if tensorrt_llm_available():
        with (log or folder / "trtllm-build.log").open("w", encoding="utf-8") as handle:
            result = subprocess.run(  # noqa: S603 - an argument list, never a shell
                command, cwd=folder, stdout=handle, stderr=subprocess.STDOUT, check=False
            )
        if result.returncode != 0:
            raise EdgectlError(f"trtllm-build failed (exit {result.returncode}); see its log")
        ran = True
    plan = {
        "command": command,
        "script": SCRIPT,
        "job_manifest": JOB_MANIFEST,
        "gpus": gpus,
        "engine_built": ran,
        "status": "engine built" if ran else "pending: needs a GPU node with TensorRT-LLM",
    }
    (folder / PLAN).write_text(json.dumps(plan, indent=2), encoding="utf-8")
    return EnginePlan(command=command, gpus=gpus, ran=ran)
