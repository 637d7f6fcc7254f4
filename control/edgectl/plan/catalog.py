"""The device catalog: datasheet figures shipped as data, plus devices calibrated here.

Shipped devices live in ``plan/data/devices.yaml`` (read with importlib.resources, so
an installed edgectl has them); ``edgectl plan --calibrate`` writes measured devices to
``<cache>/plan/devices.yaml``, never into the package. A calibrated device wins over a
shipped one of the same name.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from edgectl.config import StrictModel, cache_dir, format_validation_error
from edgectl.errors import EdgectlError

MathFormat = Literal["fp32", "fp16", "fp8", "int8"]


class Source(StrictModel):
    """Where a device's figures come from, so a reader can check and edit them."""

    document: str
    version: str
    figures: str  # "taken from it", "derived from it", "measured"


class Efficiency(StrictModel):
    """Share of peak bandwidth and compute a serving engine reaches (assumptions)."""

    bandwidth: float = Field(0.8, gt=0, le=1)
    compute: float = Field(0.5, gt=0, le=1)


class Overheads(StrictModel):
    """Time an engine spends outside the roofline: measured by calibration, 0 for GPUs."""

    step_s: float = Field(0.0, ge=0)  # every decode step, whatever the batch
    per_sequence_s: float = Field(0.0, ge=0)  # every sequence in a step
    prefill_s: float = Field(0.0, ge=0)  # every prompt, on top of its compute


class Device(StrictModel):
    title: str
    kind: Literal["gpu", "cpu"]
    memory_gb: float = Field(gt=0)
    bandwidth_gbs: float = Field(gt=0)
    tflops: dict[MathFormat, float] = Field(min_length=1)
    tdp_w: float = Field(gt=0)
    price_per_hour: float = Field(ge=0)
    efficiency: Efficiency = Efficiency()
    overheads: Overheads = Overheads()
    math_format: MathFormat | None = None  # the engine computes in this format whatever the weights
    idle_power_fraction: float = Field(0.3, ge=0, le=1)
    runtime_gb: float = Field(1.0, ge=0)  # CUDA context, kernels' workspace, the engine's own code
    cache_mb: dict[str, float] = Field(default_factory=dict)
    source: Source

    def tflops_for(self, wanted: MathFormat) -> tuple[MathFormat, float]:
        """The format the math really runs in here and its dense throughput.

        A device without the wanted format falls back to the next wider one (INT8 → FP16 →
        FP32), as TensorRT-LLM's kernels do; a CPU engine computes in its ``math_format``.
        """
        order: list[MathFormat] = ["int8", "fp8", "fp16", "fp32"]
        start = order.index(self.math_format or wanted)
        for fmt in order[start:]:
            if fmt in self.tflops:
                return fmt, self.tflops[fmt]
        fmt = max(self.tflops, key=lambda f: self.tflops[f])  # only narrower formats exist
        return fmt, self.tflops[fmt]


def calibrated_devices_path() -> Path:
    """Where ``--calibrate`` writes devices measured on this machine."""
    return cache_dir() / "plan" / "devices.yaml"


_CATALOG = TypeAdapter(dict[str, Device])


def _parse(mapping: object, origin: str) -> dict[str, Device]:
    try:
        return _CATALOG.validate_python(mapping or {})
    except ValidationError as err:
        raise EdgectlError(format_validation_error(err, origin)) from None


def shipped_devices() -> dict[str, Device]:
    text = resources.files("edgectl.plan").joinpath("data/devices.yaml").read_text("utf-8")
    return _parse(yaml.safe_load(text), "edgectl's device catalog")


def calibrated_devices() -> dict[str, Device]:
    path = calibrated_devices_path()
    if not path.is_file():
        return {}
    return _parse(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, str(path))


def all_devices() -> dict[str, Device]:
    return {**shipped_devices(), **calibrated_devices()}


def get_device(name: str) -> Device:
    """The named device; an unknown name lists the known ones."""
    devices = all_devices()
    if name not in devices:
        raise EdgectlError(
            f"--device {name}: unknown device; known: {', '.join(sorted(devices))} "
            "(`edgectl plan --recipe R --device cpu --calibrate` adds this machine as 'local')"
        )
    return devices[name]


def save_calibrated(name: str, device: Device) -> Path:
    """Add or replace ``name`` in the user's calibrated devices."""
    path = calibrated_devices_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = {}
    if path.is_file():
        existing = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    existing[name] = device.model_dump(mode="json")
    path.write_text(yaml.safe_dump(existing, sort_keys=False), encoding="utf-8")
    return path
