"""GPU examples on a machine without a GPU: they build with the CUDA plan baked in, run on the CPU through the
built-in runner, and gpuship-check says exactly why the GPU path cannot run here."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from build_support import copy_example, gpuship


def _build(name: str, tmp_path: Path, cache: Path) -> tuple[Path, dict]:
    project = copy_example(name, tmp_path)
    archive = tmp_path / f"{name}.oci.tar"
    docker_archive = tmp_path / f"{name}.docker.tar"
    proc = gpuship("build", str(project), "-o", f"oci-archive:{archive},docker-archive:{docker_archive}",
                   "--report", str(tmp_path / "r.json"), cache=cache)
    assert proc.returncode == 0, proc.stderr
    return archive, json.loads((tmp_path / "r.json").read_text())


def _config(archive: Path) -> dict:
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))
        manifest = json.load(tar.extractfile("blobs/sha256/" + index["manifests"][0]["digest"][7:]))
        return json.load(tar.extractfile("blobs/sha256/" + manifest["config"]["digest"][7:]))


def _docker_run(docker, archive: Path) -> "subprocess.CompletedProcess[str]":
    ref = docker.load(archive)
    try:
        return docker.run("run", "--rm", ref, check=False)
    finally:
        docker.run("rmi", "-f", ref, check=False)


def test_cuda_ptx_matmul_image(tmp_path: Path, build_cache: Path, docker) -> None:
    archive, report = _build("cuda-ptx-matmul", tmp_path, build_cache)
    plat = report["platforms"][0]
    compressed = sum(l["size"] for l in plat["layers"])
    assert compressed < 60_000_000, compressed  # small enough to carry to an offline GPU host in one file

    cfg = _config(archive)["config"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert env["NVIDIA_REQUIRE_CUDA"].startswith("cuda>=")
    assert cfg["Labels"]["io.gpuship.cuda"] and "sm_90" in cfg["Labels"]["io.gpuship.targets"]
    assert cfg["User"] == "65532:65532"

    # On this GPU-less host the built-in runner runs the app on the CPU: it must say why it cannot compute.
    run = gpuship("run", "--runtime", "builtin", f"oci-archive:{archive}", cache=build_cache)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "no GPU visible" in run.stdout

    check = gpuship("check", "--runtime", "builtin", f"oci-archive:{archive}", cache=build_cache)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "no GPU visible" in check.stdout and "without GPU support" in check.stdout

    in_docker = _docker_run(docker, tmp_path / "cuda-ptx-matmul.docker.tar")
    assert in_docker.returncode == 1 and "no GPU visible" in in_docker.stdout

    check_json = gpuship("check", "--runtime", "builtin", f"oci-archive:{archive}", "--", "--json", cache=build_cache)
    data = json.loads(check_json.stdout)
    assert check_json.returncode == 1 and data


def test_numba_matmul_falls_back_to_the_cpu(tmp_path: Path, build_cache: Path, docker) -> None:
    archive, report = _build("numba-matmul", tmp_path, build_cache)
    plat = report["platforms"][0]
    names = {d[0] for d in plat["python_distributions"]}
    # numba-cuda got its CUDA extra: libNVVM ships with the image ("libNVVM cannot be found" is designed out)
    assert "numba-cuda" in names and any(n.startswith(("nvidia-nvvm", "nvidia-cuda-nvcc", "cuda-toolkit")) for n in names)
    pruned = plat["pruned"]["gpu_archs"]
    assert pruned is not None and pruned["targets"] == ["sm_80", "sm_89", "sm_90"]
    run = gpuship("run", "--runtime", "builtin", f"oci-archive:{archive}", cache=build_cache)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "on cpu: verified" in run.stdout
    in_docker = _docker_run(docker, tmp_path / "numba-matmul.docker.tar")
    assert in_docker.returncode == 0 and "on cpu: verified" in in_docker.stdout, in_docker.stderr
