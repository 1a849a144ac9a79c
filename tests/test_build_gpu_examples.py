"""GPU examples on a machine without a GPU: they build with the CUDA plan baked in, run on the CPU through the
built-in runner, and gpuship-check says exactly why the GPU path cannot run here."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

from build_support import copy_example, gpuship


def _build(name: str, tmp_path: Path, cache: Path) -> tuple[Path, dict]:
    project = copy_example(name, tmp_path)
    archive = tmp_path / f"{name}.oci.tar"
    docker_archive = tmp_path / f"{name}.docker.tar"
    proc = gpuship(
        "build",
        str(project),
        "-o",
        f"oci-archive:{archive},docker-archive:{docker_archive}",
        "--report",
        str(tmp_path / "r.json"),
        cache=cache,
    )
    assert proc.returncode == 0, proc.stderr
    return archive, json.loads((tmp_path / "r.json").read_text())


def _config(archive: Path) -> dict:
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))
        manifest = json.load(tar.extractfile("blobs/sha256/" + index["manifests"][0]["digest"][7:]))
        return json.load(tar.extractfile("blobs/sha256/" + manifest["config"]["digest"][7:]))


def _docker_run(docker, archive: Path) -> subprocess.CompletedProcess[str]:
    with docker.loaded(archive) as ref:
        return docker.run("run", "--rm", ref, check=False)


def test_cuda_ptx_matmul_image(tmp_path: Path, build_cache: Path, docker) -> None:
    archive, report = _build("cuda-ptx-matmul", tmp_path, build_cache)
    plat = report["platforms"][0]
    compressed = sum(layer["size"] for layer in plat["layers"])
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
    assert "numba-cuda" in names and any(
        n.startswith(("nvidia-nvvm", "nvidia-cuda-nvcc", "cuda-toolkit")) for n in names
    )
    pruned = plat["pruned"]["gpu_archs"]
    assert pruned is not None and pruned["targets"] == ["sm_80", "sm_89", "sm_90"]
    run = gpuship("run", "--runtime", "builtin", f"oci-archive:{archive}", cache=build_cache)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "on cpu: verified" in run.stdout
    in_docker = _docker_run(docker, tmp_path / "numba-matmul.docker.tar")
    assert in_docker.returncode == 0 and "on cpu: verified" in in_docker.stdout, in_docker.stderr


def test_cuda_kernel_lib_prunes_the_apps_own_kernel_library(tmp_path: Path, build_cache: Path) -> None:
    """The app ships an nvcc-built library with sm_80, sm_90, sm_100 + compute_100 PTX: built for H100 the image
    keeps sm_90 only, built for B200 it keeps sm_100 and its PTX; gpu.json says so for gpuship-check; layers with
    no GPU code to drop are not rewritten."""
    archive, report = _build("cuda-kernel-lib", tmp_path, build_cache)
    plat = report["platforms"][0]
    pruned = plat["pruned"]["gpu_archs"]
    assert pruned["targets"] == ["sm_90"] and pruned["kept_archs"] == ["sm_90"]
    [lib] = pruned["libraries"]
    assert lib["path"] == "/app/kernels/libvecadd.so" and lib["kept"] == ["sm_90"]
    assert lib["dropped"] == ["sm_80", "sm_100", "compute_100"] and lib["saved"] > 0
    comments = {layer["what"] for layer in plat["layers"]}
    assert any(c.startswith("app:") and c.endswith("(GPU code pruned)") for c in comments), comments
    assert not any(c.startswith("python cuda") and "pruned" in c for c in comments), comments

    inspect = gpuship("inspect", f"oci-archive:{archive}", "--json", cache=build_cache)
    assert inspect.returncode == 0, inspect.stderr
    [cuda] = json.loads(inspect.stdout)["cuda"]
    assert cuda["path"] == "/app/kernels/libvecadd.so" and cuda["sass"] == ["sm_90"] and cuda["ptx"] == []

    # gpuship-check reads what was kept from /etc/gpuship/gpu.json
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))
        manifest = json.load(tar.extractfile("blobs/sha256/" + index["manifests"][0]["digest"][7:]))
        gpu_json = None
        for layer in manifest["layers"]:
            with tarfile.open(fileobj=tar.extractfile("blobs/sha256/" + layer["digest"][7:]), mode="r:gz") as lt:
                if "etc/gpuship/gpu.json" in lt.getnames():
                    gpu_json = json.load(lt.extractfile("etc/gpuship/gpu.json"))
    assert gpu_json is not None and gpu_json["pruned"] == {"targets": ["sm_90"], "archs": ["sm_90"]}

    # no GPU here: the app says so, and the built-in runner runs it (exit 1, one line)
    run = gpuship("run", "--runtime", "builtin", f"oci-archive:{archive}", cache=build_cache)
    assert run.returncode == 1 and "no GPU visible" in run.stdout, run.stdout + run.stderr

    b200 = copy_example("cuda-kernel-lib", tmp_path / "b200")
    py = b200 / "pyproject.toml"
    py.write_text(py.read_text().replace('targets = ["H100"]', 'targets = ["B200"]'))
    proc = gpuship(
        "build",
        str(b200),
        "-o",
        f"oci-archive:{tmp_path / 'b200.oci.tar'}",
        "--report",
        str(tmp_path / "b200.json"),
        cache=build_cache,
    )
    assert proc.returncode == 0, proc.stderr
    pruned = json.loads((tmp_path / "b200.json").read_text())["platforms"][0]["pruned"]["gpu_archs"]
    assert pruned["targets"] == ["sm_100"] and pruned["kept_archs"] == ["sm_100", "compute_100"]


def test_two_projects_on_the_same_cuda_wheels_share_those_layers(tmp_path: Path, build_cache: Path) -> None:
    """numba-matmul and a different project on the same numba and CUDA wheels (another app, one more small CUDA
    package and one more dependency) get the same digests for the big CUDA and framework layers, which lie at the
    bottom of the environment, biggest first; only the small groups and the app differ."""
    _, first = _build("numba-matmul", tmp_path / "a", build_cache)
    other = copy_example("numba-matmul", tmp_path / "b")
    pyproject = other / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('"numba-cuda>=0.20"', '"numba-cuda>=0.20", "nvidia-ml-py", "six"')
    )
    main = other / "src" / "matmul" / "main.py"
    main.write_text(main.read_text() + "\n# another project's app\n")
    report = tmp_path / "b.json"
    proc = gpuship(
        "build", str(other), "-o", f"oci-archive:{tmp_path}/b.tar", "--report", str(report), cache=build_cache
    )
    assert proc.returncode == 0, proc.stderr
    second = json.loads(report.read_text())

    def env_layers(r: dict) -> list[dict]:
        return [x for x in r["platforms"][0]["layers"] if x["group"] in ("venv", "cuda", "frameworks", "deps")]

    a, b = env_layers(first), env_layers(second)
    own = [x for x in a[1:] if "," not in x["what"]]  # "python cuda: nvidia-nvvm==13.0.88": one distribution
    assert len(own) >= 3, a
    assert a[1 : 1 + len(own)] == own  # at the bottom of the environment, above the venv layer
    prefix = [x["digest"] for x in a[: 1 + len(own)]]
    assert prefix == [x["digest"] for x in b[: 1 + len(own)]]  # the same layers, in the same place
    assert a[-1]["digest"] != b[-1]["digest"]  # the deps layer differs (six)
