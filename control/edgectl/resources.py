"""Files edgectl ships beside its code: model templates, the chart, recipes, profiles, policies.

They are package data under ``edgectl/_data`` (in a checkout, links to the top-level
folders; in a wheel, copies), found through ``importlib.resources`` so an installed
``edgectl`` works outside this repository.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_dir(name: str) -> Path:
    """The shipped folder ``name`` (``model_repository``, ``helm``, ``build``, ...)."""
    root = resources.files("edgectl") / "_data" / name
    path = Path(str(root))
    if not path.is_dir():
        raise FileNotFoundError(
            f"edgectl's package data {name!r} is missing at {path}; reinstall edgectl"
        )
    return path


def model_templates() -> Path:
    """``model_repository/``: one folder per Triton model, its ``config.pbtxt`` beside ``1/``."""
    return data_dir("model_repository")


def chart_dir() -> Path:
    """``helm/``: the Kubernetes chart."""
    return data_dir("helm")


def recipes_dir() -> Path:
    """``build/``: recipes, the report's recipe set and the calibration/held-out text."""
    return data_dir("build")


def loadtest_dir() -> Path:
    """``loadtest/``: locustfiles and load profiles."""
    return data_dir("loadtest")


def policies_dir() -> Path:
    """``timeslice/``: example time-slicing policies."""
    return data_dir("timeslice")
