"""The device catalog: every required device with its source, clear errors, calibrated
devices in the user's cache (never in the package)."""

from __future__ import annotations

import pytest

from edgectl.errors import EdgectlError
from edgectl.plan import catalog

REQUIRED = (
    "h200",
    "h100-sxm",
    "a100-80gb",
    "l40s",
    "l4",
    "jetson-agx-orin-64gb",
    "jetson-orin-nano",
    "cpu",
)


def test_the_catalog_has_every_required_device_with_a_source() -> None:
    devices = catalog.shipped_devices()
    assert set(REQUIRED) <= set(devices)
    for device in devices.values():
        assert device.source.document and device.source.version and device.source.figures
        assert "fp16" in device.tflops or device.math_format


def test_dense_figures_are_half_the_sparse_datasheet_ones() -> None:
    # H100 SXM datasheet: FP16 1,979 / FP8 3,958 / INT8 3,958 with sparsity
    assert catalog.shipped_devices()["h100-sxm"].tflops == {"fp16": 989, "fp8": 1979, "int8": 1979}


def test_a_missing_format_falls_back_to_a_wider_one() -> None:
    a100 = catalog.shipped_devices()["a100-80gb"]
    assert a100.tflops_for("fp8") == ("fp16", 312)
    assert a100.tflops_for("int8") == ("int8", 624)
    cpu = catalog.shipped_devices()["cpu"]
    assert cpu.tflops_for("int8")[0] == "fp32"  # the CPU engine computes in f32


def test_an_unknown_device_names_the_known_ones(isolated_cache) -> None:
    with pytest.raises(EdgectlError, match=r"--device h900: unknown device; known: .*h100-sxm"):
        catalog.get_device("h900")


def test_calibrated_devices_go_to_the_cache_and_win(isolated_cache) -> None:
    mine = catalog.shipped_devices()["cpu"].model_copy(update={"bandwidth_gbs": 12.5})
    path = catalog.save_calibrated("cpu", mine)
    assert path.is_relative_to(isolated_cache)
    assert catalog.get_device("cpu").bandwidth_gbs == 12.5
    assert catalog.shipped_devices()["cpu"].bandwidth_gbs == 307


def test_a_bad_calibrated_file_names_the_field(isolated_cache) -> None:
    path = catalog.calibrated_devices_path()
    path.parent.mkdir(parents=True)
    path.write_text("local: {title: x, kind: tpu}\n")
    with pytest.raises(EdgectlError, match=r"local\.kind"):
        catalog.all_devices()
