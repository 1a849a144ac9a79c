"""``gpuship slim`` on examples/torch-status (heavy: slow suite): the function runtime is traced while it answers
``GET /status``, the slimmed image answers it too (inside ``gpuship slim``), and the real Docker Engine runs the
slimmed image: ``/status`` says ``cpu`` and ``/invoke`` computes.

As tests/test_example_torch_status.py does: when this machine offers a CPU torch wheel (PIP_FIND_LINKS), the
example is built against it; elsewhere as written (the CUDA torch from PyPI: slower, same assertions).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from build_support import gpuship, torch_status_for_this_machine

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_slim_torch_status(tmp_path: Path, docker) -> None:
    project = torch_status_for_this_machine(tmp_path)
    cache = tmp_path / "cache"
    archive = tmp_path / "torch-status.tar"
    proc = gpuship("build", str(project), "-o", f"oci-archive:{archive}", cache=cache, timeout=3000)
    assert proc.returncode == 0, proc.stderr

    port = _free_port()
    slim = tmp_path / "slim.tar"
    tag = docker.tag()
    report_path = tmp_path / "slim.json"
    proc = gpuship(
        "slim",
        f"oci-archive:{archive}",
        "--http",
        "/status",
        "-e",
        f"PORT={port}",
        "--port",
        str(port),
        "-o",
        f"docker-archive:{slim}",
        "-t",
        tag,
        "--report",
        str(report_path),
        cache=cache,
        timeout=3000,
    )
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
