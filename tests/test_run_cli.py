"""``gpuship run`` / ``gpuship check`` as a user calls them: a real process, an OCI layout on disk, the built-in
runner; exit codes, streamed output, the no-GPU note and error, signal forwarding."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.oci import Entry
from gpuship.oci.layout import write_oci_layout
from test_run_helpers import busybox_image

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the built-in runner needs root (CI runs as root)")

CLI = [sys.executable, "-c", "from gpuship.cli.main import main; main()"]
CHECK_SCRIPT = '#!/bin/sh\necho "gpuship-check args:$*"\nexit 4\n'


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("run-cli")
    no_gpu = root / "no-gpu-dev"
    no_gpu.mkdir()
    e = dict(os.environ)
    # GPUSHIP_DRIVER_DEV_DIR: an empty device directory, so the host reads as GPU-less whatever it has.
    e.update(GPUSHIP_CACHE=str(root / "cache"), GPUSHIP_DRIVER_DEV_DIR=str(no_gpu), COLUMNS="200")
    return e


@pytest.fixture(scope="module")
def layout(env: dict[str, str]) -> str:
    """An OCI layout of the busybox image, with a stand-in gpuship-check and a CUDA requirement."""
    cache = Cache(env["GPUSHIP_CACHE"])
    img = busybox_image(
        cache,
        env={"NVIDIA_REQUIRE_CUDA": "cuda>=12.4"},
        extra=[Entry.file("usr/local/bin/gpuship-check", CHECK_SCRIPT, mode=0o755)],
    )
    path = Path(env["GPUSHIP_CACHE"]).parent / "layout"
    write_oci_layout(img, path)
    return f"oci:{path}"


@pytest.fixture(scope="module")
def plain_layout(env: dict[str, str]) -> str:
    path = Path(env["GPUSHIP_CACHE"]).parent / "plain-layout"
    write_oci_layout(busybox_image(Cache(env["GPUSHIP_CACHE"])), path)
    return f"oci:{path}"


def gpuship(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("flavor", ["runc", "chroot"])
def test_run_exit_code_output_and_cpu_note(env: dict[str, str], layout: str, flavor: str) -> None:
    proc = gpuship(
        env,
        "run",
        layout,
        "--runtime",
        flavor,
        "-e",
        "FOO=bar",
        "--",
        "sh",
        "-c",
        'echo "foo=$FOO user=$(id -u) dir=$(pwd)"; exit 3',
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.strip() == "foo=bar user=65532 dir=/work"
    assert "note: no NVIDIA GPU or driver on this host" in proc.stderr
    assert "running on the CPU" in proc.stderr and "the image asks for CUDA >= 12.4" in proc.stderr


def test_gpus_all_without_driver_is_a_clear_error(env: dict[str, str], layout: str) -> None:
    proc = gpuship(env, "run", layout, "--runtime", "chroot", "--gpus", "all", "--", "true")
    assert proc.returncode == 2
    line = " ".join(proc.stderr.split())
    assert "error: --gpus all asks for GPUs, but no NVIDIA GPU or driver on this host" in line
    assert "the image asks for CUDA >= 12.4" in line and "run without --gpus" in line


def test_gpus_none_on_an_image_that_asks_for_cuda_says_it_starts_without_a_gpu(
    env: dict[str, str], layout: str, plain_layout: str
) -> None:
    proc = gpuship(env, "run", layout, "--runtime", "chroot", "--gpus", "none", "--", "true")
    assert proc.returncode == 0, proc.stderr
    line = " ".join(proc.stderr.split())
    assert line.startswith("note: --gpus none: the container starts without a GPU, though the image asks "
                           "for CUDA >= 12.4"), line  # fmt: skip
    assert line.count("without a GPU") == 1 and "running on the CPU without GPU support" not in line
    proc = gpuship(env, "run", plain_layout, "--runtime", "chroot", "--gpus", "none", "--", "true")
    assert proc.returncode == 0 and "without a GPU" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("flavor", ["runc", "chroot"])
def test_check_runs_the_images_gpuship_check(env: dict[str, str], layout: str, plain_layout: str, flavor: str) -> None:
    proc = gpuship(env, "check", layout, "--runtime", flavor, "--", "--json")
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout.strip() == "gpuship-check args:--json"
    proc = gpuship(env, "check", plain_layout, "--runtime", flavor)
    assert proc.returncode == 2
    assert "this image has no /usr/local/bin/gpuship-check" in " ".join(proc.stderr.split())


def test_builtin_refuses_port_remapping(env: dict[str, str], layout: str) -> None:
    proc = gpuship(env, "run", layout, "--runtime", "chroot", "-p", "8080:8000", "--", "true")
    assert proc.returncode == 2 and "shares the host's network" in " ".join(proc.stderr.split())
    assert gpuship(env, "run", layout, "--runtime", "chroot", "-p", "8000:8000", "--", "true").returncode == 0


@pytest.mark.parametrize("flavor", ["runc", "chroot"])
def test_sigterm_reaches_the_command(env: dict[str, str], layout: str, flavor: str) -> None:
    script = 'trap "echo got-term; exit 42" TERM; echo ready; while :; do sleep 0.1; done'
    proc = subprocess.Popen(
        [*CLI, "run", layout, "--runtime", flavor, "--", "sh", "-c", script],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 42, err
    assert out.strip() == "got-term"
