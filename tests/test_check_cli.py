"""``gpuship doctor`` on this GPU-less host (Docker answers, no NVIDIA driver) and ``gpuship explain`` over the
example projects and ad-hoc requirements, through the real CLI in a subprocess."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from gpuship.cli.main import main; main()"]


def gpuship(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={"COLUMNS": "200", "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"},
    )


def _driver_here() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


@pytest.mark.skipif(_driver_here(), reason="this host has an NVIDIA driver")
@pytest.mark.docker
def test_doctor_without_a_gpu_says_so_and_what_run_will_use(docker) -> None:  # type: ignore[no-untyped-def]
    proc = gpuship("doctor")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "driver   none: no NVIDIA GPU or driver on this host (libcuda.so.1 is not loadable" in out
    assert "docker   " in out and "not answering" not in out.split("docker", 1)[1].splitlines()[0]
    assert "cdi      no specs in /etc/cdi or /var/run/cdi" in out or "cdi      /" in out
    assert "gpuship run will use: docker — no GPU on this host" in out
    doc = json.loads(gpuship("doctor", "--json").stdout)
    assert doc["driver"] is None and doc["gpus"] == [] and doc["no_gpu"].startswith("no NVIDIA GPU")
    docker_info = next(e for e in doc["engines"] if e["name"] == "docker")
    assert docker_info["answers"] is True and "runc" in docker_info["runtimes"]
    assert doc["run"]["runtime"] == "docker" and set(doc["tools"]) >= {"runc", "nvidia-ctk", "nvidia-smi"}


def test_explain_an_example_project() -> None:
    proc = gpuship("explain", str(ROOT / "examples" / "torch-status"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0].startswith("CUDA 13.0: the newest line that every input allows")
    assert "  T4 (sm_75): needs CUDA 11.8-13.2" in out
    assert "requirements:" in out and "  torch>=2.11,<2.15" in out
    assert "  NVIDIA_REQUIRE_CUDA=cuda>=13.0" in out and "  io.gpuship.targets=sm_90,sm_80,sm_75" in out


def test_explain_json_for_numba_and_a_cpu_project() -> None:
    doc = json.loads(gpuship("explain", str(ROOT / "examples" / "numba-matmul"), "--json").stdout)
    assert doc["is_gpu"] and doc["cuda"] == "13.0" and "numba-cuda[cu13]>=0.20" in doc["requirements"]
    assert doc["manifest"]["archs"]["numba-cuda"]["jit"] is True and "nvidia-nvvm==13.0.*" in doc["constraints"]
    cpu = json.loads(gpuship("explain", str(ROOT / "examples" / "numpy-hello"), "--json").stdout)
    assert (
        cpu
        == {"is_gpu": False, "platform": "linux/amd64", "requirements": ["numpy>=1.26"], "explain": [cpu["explain"][0]]}
        and "no GPU framework" in cpu["explain"][0]
    )


def test_explain_requirements_and_overrides_without_a_project(tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# a comment\ntorch>=2.6  # inline\ncupy\n")
    proc = gpuship(
        "explain", "-r", str(reqs), "-r", "numba-cuda", "--target", "V100", "--min-driver", "570", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "CUDA 12.6: the newest line" in proc.stdout
    for line in ("  torch>=2.7,<2.8", "  cupy-cuda12x[ctk]", "  numba-cuda[cu12]", "  cuda-toolkit==12.6.*"):
        assert line in proc.stdout.splitlines()


def test_explain_an_impossible_plan_is_one_error_line() -> None:
    proc = gpuship("explain", "-r", "torch", "--target", "K80")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: no CUDA line fits: torch has no wheel on PyPI with kernels for K80 (sm_37)")
    assert "set [tool.gpuship.gpu] torch-index" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    bad = gpuship("explain", "-r", "torch", "--cuda", "12.7")
    assert bad.returncode == 2 and "CUDA 12.7 is not a line gpuship can build" in bad.stderr


def test_help_is_complete() -> None:
    for cmd in ("explain", "doctor"):
        proc = gpuship(cmd, "--help")
        assert proc.returncode == 0 and f" {cmd} [OPTIONS]" in proc.stdout, proc.stdout
    assert "--min-driver" in gpuship("explain", "--help").stdout
