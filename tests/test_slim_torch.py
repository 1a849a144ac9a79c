"""``gpuship slim`` on examples/torch-status (heavy: slow suite): the function runtime is traced while it answers
``GET /status``, the slimmed image answers it too (inside ``gpuship slim``), and the real Docker Engine runs the
slimmed image: ``/status`` says ``cpu`` and ``/invoke`` computes.

As tests/test_example_torch_status.py does: when this machine offers a CPU torch wheel (PIP_FIND_LINKS), the
example is built against it; elsewhere as written (the CUDA torch from PyPI: slower, same assertions).
"""

from __future__ import annotations

import glob
import json
import os
import socket
import time
from pathlib import Path

import httpx
import pytest

from build_support import copy_example, gpuship

pytestmark = pytest.mark.slow


def _cpu_torch_wheel() -> str | None:
    for d in os.environ.get("PIP_FIND_LINKS", "").split():
        hits = sorted(glob.glob(os.path.join(d, "torch-*+cpu-cp311-*x86_64.whl")))
        if hits:
            return hits[-1]
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_slim_torch_status(tmp_path: Path, docker) -> None:
    project = copy_example("torch-status", tmp_path)
    wheel = _cpu_torch_wheel()
    if wheel:
        version = Path(wheel).name.split("-")[1]
        text = (project / "pyproject.toml").read_text()
        text = text.replace('dependencies = ["torch>=2.6"]', f'dependencies = ["torch=={version}"]')
        text = text.replace("[tool.gpuship]\n", f'[tool.gpuship]\nfind-links = ["{Path(wheel).parent}"]\n')
        text = text.replace("[tool.gpuship.gpu]\n", "[tool.gpuship.gpu]\nenabled = false\n")
        (project / "pyproject.toml").write_text(text)
    cache = tmp_path / "cache"
    archive = tmp_path / "torch-status.tar"
    proc = gpuship("build", str(project), "-o", f"oci-archive:{archive}", cache=cache, timeout=3000)
    assert proc.returncode == 0, proc.stderr

    port = _free_port()
    slim = tmp_path / "slim.tar"
    tag = docker.tag()
    report_path = tmp_path / "slim.json"
    proc = gpuship("slim", f"oci-archive:{archive}", "--http", "/status", "-e", f"PORT={port}", "--port", str(port),
                   "-o", f"docker-archive:{slim}", "-t", tag, "--report", str(report_path), cache=cache, timeout=3000)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_path.read_text())
    assert report["traced_run"]["http_status"] == report["verified_run"]["http_status"] == 200
    assert json.loads(report["verified_run"]["http_body"])["device"] == "cpu"
    assert report["removed"]["bytes"] > 10_000_000
    assert report["slim"]["compressed"] < report["original"]["compressed"]
    assert "torch" in report["whole_distributions"]  # a GPU framework: kept whole
    assert report["trace"]["python_processes"] >= 1 and report["trace"]["paths"]["module"] > 500

    docker.load(slim)
    host_port = _free_port()
    cid = docker.run("run", "-d", "-p", f"127.0.0.1:{host_port}:8080", tag).stdout.strip()
    try:
        status = None
        with httpx.Client(trust_env=False, timeout=10) as client:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    r = client.get(f"http://127.0.0.1:{host_port}/status")
                    if r.status_code == 200:
                        status = r.json()
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(1)
            assert status is not None, docker.run("logs", cid, check=False).stderr[-2000:]
            assert status["device"] == "cpu"
            answer = client.post(f"http://127.0.0.1:{host_port}/invoke", json={"n": 16}).json()
        assert answer.get("device") == "cpu" and answer.get("result_ok") is True, answer
    finally:
        docker.run("rm", "-f", cid, check=False)
        docker.run("rmi", "-f", tag, check=False)
