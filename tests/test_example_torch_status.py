"""examples/torch-status end to end: built by gpuship, deployed with `gpuship deploy compose`, run by the real
Docker Engine through docker-compose, answering /status with `cpu` here; its Kubernetes manifests pass the
official schemas.

CI has no GPU and no PyTorch CPU index, so when this machine offers a CPU torch wheel in a local wheel directory
(PIP_FIND_LINKS, as this workplace's machines do), the test builds the example against it — the user's move on a
CPU-only host. Elsewhere it builds the example as written (the CUDA torch from PyPI: slower, same assertions).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml

from build_support import gpuship, torch_status_for_this_machine


@pytest.fixture(scope="module")
def torch_status(tmp_path_factory: pytest.TempPathFactory, docker, build_cache: Path) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("torch-status")
    project = torch_status_for_this_machine(tmp)
    archive = tmp / "torch-status.tar"
    ref = f"gpuship-test/torch-status:{uuid.uuid4().hex[:8]}"
    proc = gpuship("build", str(project), "-t", ref, "-o", f"docker-archive:{archive}", cache=build_cache, timeout=3000)
    assert proc.returncode == 0, proc.stderr
    docker.load(archive)
    yield ref, archive
    docker.run("rmi", "-f", ref, check=False)


def _compose() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def test_compose_up_answers_status_cpu(
    torch_status: tuple[str, Path], tmp_path: Path, docker, build_cache: Path
) -> None:
    ref, archive = torch_status
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "deploy"
    proc = gpuship(
        "deploy",
        "compose",
        f"docker-archive:{archive}",
        "--ref",
        ref,
        "--gpus",
        "0",
        "--host-port",
        str(port),
        "-o",
        str(out),
        cache=build_cache,
    )
    assert proc.returncode == 0, proc.stderr
    compose_file = out / "compose.yaml"
    doc = yaml.safe_load(compose_file.read_text())
    service = next(iter(doc["services"].values()))
    assert service["shm_size"] and service["ulimits"]["memlock"] == -1
    probe = docker.run(
        "run", "--rm", "--ulimit", "memlock=-1", "--entrypoint", "/usr/bin/python3", ref, "-c", "", check=False
    )
    if probe.returncode != 0:  # this engine cannot raise RLIMIT_MEMLOCK (no CAP_SYS_RESOURCE): use its hard limit
        import resource

        service["ulimits"]["memlock"] = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
        compose_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    project = f"gpuship-ts-{uuid.uuid4().hex[:8]}"
    cmd = [*_compose(), "-p", project, "-f", str(compose_file)]
    try:
        up = subprocess.run([*cmd, "up", "-d"], capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        status = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/status", timeout=10)
                if r.status_code == 200 and r.json().get("ready"):
                    status = r.json()
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        assert status is not None, subprocess.run([*cmd, "logs"], capture_output=True, text=True).stdout
        assert status["device"] == "cpu" and status["framework"]["name"] == "torch"
        answer = httpx.post(f"http://127.0.0.1:{port}/invoke", json={"n": 16}, timeout=60).json()
        assert answer["device"] == "cpu" and answer["result_ok"] is True
    finally:
        subprocess.run([*cmd, "down", "-v"], capture_output=True, timeout=120)


def test_k8s_manifests_pass_the_official_schemas(
    torch_status: tuple[str, Path], tmp_path: Path, build_cache: Path
) -> None:
    ref, archive = torch_status
    out = tmp_path / "k8s"
    proc = gpuship("deploy", "k8s", f"docker-archive:{archive}", "--ref", ref, "-o", str(out), cache=build_cache)
    assert proc.returncode == 0, proc.stderr
    docs = [d for f in sorted(out.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service"} <= kinds
    for d in docs:
        if d["kind"] in ("Deployment", "Service", "Job", "DaemonSet"):
            kubernetes_validate.validate(d, "1.37.0", strict=True)
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert json.dumps(container).count(ref) >= 1
