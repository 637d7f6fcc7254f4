"""Build llama.cpp's ``llama-server`` and ``llama-quantize`` once, outside git.

The source comes from the ``llama-cpp-python`` sdist on PyPI (it vendors llama.cpp);
nothing of llama.cpp is kept in this repository.  Portable x86-64 flags, so the binary
runs on any AVX2 machine of the fleet; the result is cached in ``EDGECTL_PEER_CACHE``
(default ``~/.cache/edgectl/peer``) and reused.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
from pathlib import Path

SDIST = "llama-cpp-python==0.3.36"
FLAGS = (
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_BMI2=ON",
    "-DLLAMA_CURL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DCMAKE_BUILD_TYPE=Release",
)
TARGETS = ("llama-server", "llama-quantize")


def cache_dir() -> Path:
    return Path(os.environ.get("EDGECTL_PEER_CACHE", Path.home() / ".cache/edgectl/peer"))


def binary(name: str, root: Path | None = None) -> Path:
    return (root or cache_dir()) / "bin" / name


def _run(args: list[str], cwd: Path | None = None) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, cwd=cwd, check=True)  # noqa: S603 - an argument list, never a shell


def _source(root: Path) -> Path:
    """Download the sdist (no wheels, no deps) and unpack its vendored llama.cpp."""
    downloads = root / "sdist"
    downloads.mkdir(parents=True, exist_ok=True)
    archives = sorted(downloads.glob("llama_cpp_python-*.tar.gz"))
    if not archives:
        _run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            + ["--dest", str(downloads), SDIST]
        )
        archives = sorted(downloads.glob("llama_cpp_python-*.tar.gz"))
    unpacked = root / "src"
    if not unpacked.is_dir():
        with tarfile.open(archives[-1]) as archive:
            archive.extractall(unpacked, filter="data")
    return next(unpacked.glob("llama_cpp_python-*/vendor/llama.cpp"))


def build(root: Path, jobs: int) -> Path:
    """Configure and build the two targets; returns the folder holding the binaries."""
    if all(binary(name, root).is_file() for name in TARGETS):
        return root / "bin"
    source = _source(root)
    work = root / "build"
    _run(["cmake", "-S", str(source), "-B", str(work), "-G", "Ninja", *FLAGS])
    _run(["cmake", "--build", str(work), "--target", *TARGETS, "-j", str(jobs)])
    (root / "bin").mkdir(exist_ok=True)
    for name in TARGETS:
        built = work / "bin" / name
        target = binary(name, root)
        target.unlink(missing_ok=True)
        target.hardlink_to(built)
    return root / "bin"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    print(build(args.cache or cache_dir(), args.jobs))


if __name__ == "__main__":
    main()
