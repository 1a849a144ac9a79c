"""``gpuship deploy compose``: the file passes the Compose tool's own validation, and a function image
deployed with it runs in the real Docker Engine, answers /status with ``cpu`` (this host has no GPU) and
turns healthy through the runtime's own probe.

No registry base image is reachable here, so the image is assembled from this host's Debian Python
(interpreter, standard library, the shared libraries ``ldd`` names) plus Starlette/Uvicorn from the test
environment and the runtime layer gpuship puts into function images.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from gpuship.cache import Cache
from gpuship.deploy import ComposeOptions, compose_file, compose_yaml, spec_from_image
from gpuship.oci import Entry, Image, ImageConfig, append_layers, build_layer, empty_image, with_config
from gpuship.serve import runtime_entries, with_runtime
from gpuship.transports import write_output

HOST_PYTHON = Path("/usr/bin/python3.11")
STDLIB = Path("/usr/lib/python3.11")
SKIP_STDLIB = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "config-3.11-x86_64-linux-gnu",
    "unittest",
    "distutils",
}
RUNTIME_DEPS = ("starlette", "uvicorn", "anyio", "h11", "click", "idna", "sniffio", "typing_extensions")

STATUS_FN = '''"""Seed 003's status function, without torch: the runtime's /status says which device."""
def handle(payload):
    return {"status": "ok", "echo": payload}
'''


def compose_cmd() -> list[str]:
    """`docker compose` (v2 plugin) where the CLI has it, else Debian's docker-compose v1."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("neither `docker compose` nor docker-compose is installed (apt-get install docker-compose)")
    return [exe]


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*compose_cmd(), "-f", str(path), "config", "-q"], capture_output=True, text=True, cwd=path.parent, timeout=120
    )


def function_spec(cache: Cache, ref: str = "gpuship-test/status:1", **kw: object):
    layer = build_layer([*runtime_entries()], cache)
    cfg = with_runtime(ImageConfig(working_dir="/app"), "status_fn:handle", python="/usr/bin/python3")
    img = with_config(append_layers(empty_image("linux/amd64"), [layer]), cfg)
    return spec_from_image(img, ref, **kw)  # type: ignore[arg-type]


def test_compose_file_passes_compose_validation(cache: Cache, tmp_path: Path) -> None:
    spec = function_spec(cache, shm_size="8Gi", gpus=2, env=["LOG_LEVEL=DEBUG"])
    doc = compose_file(spec)
    svc = doc["services"]["status"]
    assert svc["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 2, "capabilities": ["gpu"]}
    ]
    assert svc["shm_size"] == "8g"
    assert svc["ulimits"] == {"memlock": -1, "stack": 67108864}
    assert svc["ports"] == ["8080:8080"] and svc["environment"] == {"LOG_LEVEL": "DEBUG"}
    assert svc["healthcheck"]["test"] == [
        "CMD",
        "/usr/bin/python3",
        "/opt/gpuship/gpuship_runtime.py",
        "--probe",
        "/readyz",
    ]
    path = tmp_path / "compose.yaml"
    path.write_text(compose_yaml(spec))
    proc = compose_config(path)
    assert proc.returncode == 0, proc.stderr
    # all GPUs
    path.write_text(compose_yaml(spec, ComposeOptions(all_gpus=True)))
    assert compose_config(path).returncode == 0
    assert (
        yaml.safe_load(path.read_text())["services"]["status"]["deploy"]["resources"]["reservations"]["devices"][0][
            "count"
        ]
        == "all"
    )


def test_compose_validation_is_not_vacuous(cache: Cache, tmp_path: Path) -> None:
    doc = compose_file(function_spec(cache))
    bad = copy.deepcopy(doc)
    bad["services"]["status"]["deploy"]["resources"]["reservations"]["devices"][0]["gpus"] = 1
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert compose_config(path).returncode != 0


def test_cpu_only_has_no_device_reservation(cache: Cache) -> None:
    svc = compose_file(function_spec(cache, gpus=0))["services"]["status"]
    assert "deploy" not in svc and svc["shm_size"] == "1g"


# -- a real run in the Docker Engine -------------------------------------------------------------------------
def _ldd(paths: list[Path]) -> set[Path]:
    found: set[Path] = set()
    for p in paths:
        out = subprocess.run(["ldd", str(p)], capture_output=True, text=True).stdout
        for m in re.finditer(r"(?:=>\s*)?(/\S+)\s+\(0x", out):
            found.add(Path(m.group(1)))
    return found


def host_python_entries() -> list[Entry]:
    """Debian's Python 3.11 from this host, enough to run the runtime, at the same paths."""
    entries: list[Entry] = [
        Entry.file("usr/bin/python3.11", HOST_PYTHON, mode=0o755),
        Entry.symlink("usr/bin/python3", "python3.11"),
    ]
    elves = [HOST_PYTHON]
    for dirpath, dirnames, filenames in os.walk(STDLIB):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_STDLIB)
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if full.is_symlink() or not full.is_file():
                continue
            entries.append(Entry.file(str(full).lstrip("/"), full, mode=0o755 if name.endswith(".so") else 0o644))
            if name.endswith(".so"):
                elves.append(full)
    for lib in sorted(_ldd(elves)):
        entries.append(Entry.file(str(lib).lstrip("/"), lib.resolve(), mode=0o755))
    site = Path(__import__("starlette").__file__).resolve().parent.parent
    for dep in RUNTIME_DEPS:
        src = site / dep if (site / dep).is_dir() else site / f"{dep}.py"
        if not src.exists():
            continue
        if src.is_file():
            entries.append(Entry.file(f"usr/lib/python3/dist-packages/{src.name}", src))
            continue
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                full = Path(dirpath) / name
                entries.append(Entry.file(f"usr/lib/python3/dist-packages/{full.relative_to(site)}", full))
    entries += [Entry.dir("tmp", mode=0o1777), Entry.dir("app"), Entry.file("app/status_fn.py", STATUS_FN)]
    return entries


@pytest.fixture(scope="module")
def status_image(docker, shared_cache: Cache) -> str:
    if not HOST_PYTHON.exists():
        pytest.fail(f"{HOST_PYTHON} is missing: this test builds its image from the host's Debian Python")
    base = build_layer(host_python_entries(), shared_cache, comment="host python")
    runtime = build_layer(runtime_entries(), shared_cache, comment="gpuship function runtime")
    cfg = with_runtime(
        ImageConfig(env=("PATH=/usr/bin:/bin",), working_dir="/app"), "status_fn:handle", python="/usr/bin/python3"
    )
    img: Image = with_config(append_layers(empty_image("linux/amd64"), [base, runtime]), cfg)
    tag = docker.tag()
    write_output(img, f"docker:{tag}")
    yield tag
    docker.run("rmi", "-f", tag, check=False)


def _wait_healthy(docker, container: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = docker.run("inspect", "-f", "{{.State.Health.Status}}", container, check=False).stdout.strip()
        if state == "healthy":
            return state
        time.sleep(1)
    logs = docker.run("logs", container, check=False)
    raise AssertionError(f"{container} is {state!r}, not healthy:\n{logs.stdout}\n{logs.stderr}")


def test_compose_up_runs_the_function_image_and_status_says_cpu(docker, status_image: str, tmp_path: Path) -> None:
    from gpuship.cli.deploy import default_name  # noqa: F401 - the CLI module imports (registers) cleanly

    project = f"gpuship-test-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    env = {"LOG_LEVEL": "INFO"}
    spec = function_spec(Cache(tmp_path / "c"), ref=status_image, gpus=0, env=[f"{k}={v}" for k, v in env.items()])
    text = compose_yaml(spec, ComposeOptions(host_port=port))
    (tmp_path / "compose.yaml").write_text(text)
    assert compose_config(tmp_path / "compose.yaml").returncode == 0
    memlock = _memlock_the_engine_allows(docker, status_image)
    if memlock != -1:
        # This engine may not raise RLIMIT_MEMLOCK (its dockerd lacks CAP_SYS_RESOURCE, as in sandboxed CI):
        # run the generated file with the highest value it allows instead; everything else is unchanged.
        doc = yaml.safe_load(text)
        doc["services"][spec.name]["ulimits"]["memlock"] = memlock
        (tmp_path / "compose.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    cmd = [*compose_cmd(), "-p", project, "-f", str(tmp_path / "compose.yaml")]
    try:
        up = subprocess.run([*cmd, "up", "-d"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        container = subprocess.run([*cmd, "ps", "-q"], capture_output=True, text=True, cwd=tmp_path).stdout.split()[0]
        assert _wait_healthy(docker, container) == "healthy"  # the image's own python ran the --probe check
        info = json.loads(docker.run("inspect", container).stdout)[0]
        assert info["HostConfig"]["ShmSize"] == 1 << 30
        assert {"Name": "memlock", "Soft": memlock, "Hard": memlock} in info["HostConfig"]["Ulimits"]
        assert {"Name": "stack", "Soft": 67108864, "Hard": 67108864} in info["HostConfig"]["Ulimits"]
        status = httpx.get(f"http://127.0.0.1:{port}/status", timeout=30).json()
        assert status["device"] == "cpu" and status["gpus"] == [] and status["ready"] is True
        assert "no NVIDIA driver" in status["reason"]
        r = httpx.post(f"http://127.0.0.1:{port}/invoke", json={"x": 1}, timeout=30)
        assert r.json() == {"status": "ok", "echo": {"x": 1}}
        # docker stop sends SIGTERM: the runtime shuts down cleanly, exit code 0
        subprocess.run([*cmd, "stop"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert docker.run("inspect", "-f", "{{.State.ExitCode}}", container).stdout.strip() == "0"
    finally:
        subprocess.run([*cmd, "down", "-v", "--remove-orphans"], capture_output=True, cwd=tmp_path, timeout=120)


def _memlock_the_engine_allows(docker, image: str) -> int:
    """-1 when the engine can run a container with memlock=-1, else the locked-memory hard limit it has."""
    probe = docker.run(
        "run", "--rm", "--ulimit", "memlock=-1", "--entrypoint", "/usr/bin/python3", image, "-c", "", check=False
    )
    if probe.returncode == 0:
        return -1
    assert "rlimit" in probe.stderr, probe.stderr
    import resource

    return resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
