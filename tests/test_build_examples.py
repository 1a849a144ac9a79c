"""Every example builds with `gpuship build` and runs in the real Docker Engine (CPU here)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from build_support import copy_example, gpuship


def _build_and_run(name: str, tmp_path: Path, cache: Path, docker, *extra: str, platform: str = "linux/amd64") -> str:
    project = copy_example(name, tmp_path)
    archive = tmp_path / f"{name}.tar"
    proc = gpuship(
        "build",
        str(project),
        "--platform",
        platform,
        "-o",
        f"docker-archive:{archive}",
        "--report",
        str(tmp_path / "report.json"),
        *extra,
        cache=cache,
    )
    assert proc.returncode == 0, proc.stderr
    with docker.loaded(archive) as ref:
        run = docker.run("run", "--rm", "--platform", platform, ref, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_numpy_hello_amd64(tmp_path: Path, build_cache: Path, docker) -> None:
    out = _build_and_run("numpy-hello", tmp_path, build_cache, docker)
    assert "hello from numpy" in out and "x86_64" in out and "checksum 1134" in out
    report = json.loads((tmp_path / "report.json").read_text())
    plat = report["platforms"][0]
    groups = [layer["group"] for layer in plat["layers"]]
    assert groups[0] == "base" and groups[-1] == "app" and "deps" in groups
    assert any(d[0] == "numpy" for d in plat["python_distributions"])
    sbom = json.loads((tmp_path / "report.spdx.json").read_text())
    assert sbom["spdxVersion"] == "SPDX-2.3"
    purls = {r["referenceLocator"] for p in sbom["packages"] for r in p.get("externalRefs", [])}
    assert any(p.startswith("pkg:pypi/numpy@") for p in purls)
    assert any(p.startswith("pkg:deb/debian/libc6@") for p in purls)


def test_numpy_hello_arm64_under_qemu(tmp_path: Path, build_cache: Path, docker) -> None:
    out = _build_and_run("numpy-hello", tmp_path, build_cache, docker, platform="linux/arm64")
    assert "hello from numpy" in out and "aarch64" in out


def test_multi_platform_index(tmp_path: Path, build_cache: Path) -> None:
    project = copy_example("numpy-hello", tmp_path)
    out = tmp_path / "multi.oci.tar"
    proc = gpuship(
        "build", str(project), "--platform", "linux/amd64,linux/arm64", "-o", f"oci-archive:{out}", cache=build_cache
    )
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(out) as tar:
        index = json.load(tar.extractfile("index.json"))
        top = index["manifests"][0]
        inner = json.load(tar.extractfile("blobs/sha256/" + top["digest"].split(":")[1]))
    arches = sorted(m["platform"]["architecture"] for m in inner["manifests"])
    assert arches == ["amd64", "arm64"]


def test_conda_environment_project(tmp_path: Path, build_cache: Path, docker) -> None:
    out = _build_and_run("conda-env", tmp_path, build_cache, docker)
    assert "conda env ok: numpy" in out


def test_image_defaults(tmp_path: Path, build_cache: Path, docker) -> None:
    """Non-root user, venv on PATH, the unbuffered/no-bytecode env, OCI labels from the project."""
    project = copy_example("numpy-hello", tmp_path)
    archive = tmp_path / "nh.tar"
    assert gpuship("build", str(project), "-o", f"docker-archive:{archive}", cache=build_cache).returncode == 0
    with docker.loaded(archive) as ref:
        info = json.loads(docker.run("image", "inspect", ref).stdout)[0]["Config"]
        who = docker.python(ref, "import os, sys; print(os.getuid(), os.getgid(), sys.prefix)").split()
    assert who == ["65532", "65532", "/opt/venv"]
    env = dict(e.split("=", 1) for e in info["Env"])
    assert env["PATH"].startswith("/opt/venv/bin:") and env["VIRTUAL_ENV"] == "/opt/venv"
    assert env["PYTHONUNBUFFERED"] == "1" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert info["Labels"]["org.opencontainers.image.title"] == "numpy-hello"
    assert info["Labels"]["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert info["WorkingDir"] == "/app" and info["Entrypoint"] == ["python", "main.py"]
