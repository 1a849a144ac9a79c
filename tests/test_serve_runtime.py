"""The function runtime, served for real by Uvicorn in a subprocess on loopback."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from gpuship.errors import ConfigError
from gpuship.oci import ImageConfig
from gpuship.serve import (
    RUNTIME_LABEL,
    RUNTIME_PATH,
    is_runtime_image,
    runtime_entries,
    runtime_entrypoint,
    runtime_requirements,
    with_runtime,
)
from gpuship.serve import runtime as runtime_module

ROOT = Path(__file__).resolve().parent.parent


def _load_bench():
    spec = importlib.util.spec_from_file_location("serve_load", ROOT / "bench" / "serve_load.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["serve_load"] = mod
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()

FUNCTIONS = """
import asyncio, time

def echo(payload):
    if isinstance(payload, dict):
        if payload.get("sleep"):
            time.sleep(payload["sleep"])
        if payload.get("raise"):
            raise ValueError("asked to raise")
        if payload.get("unjson"):
            return {1, 2}
    return {"echo": payload}

async def aecho(payload):
    await asyncio.sleep(payload.get("sleep", 0))
    return {"echo": payload}

def noargs():
    return {"called": True}

def slow_warm(payload):
    return {"ok": True}
def _warm():
    time.sleep(1.0)
slow_warm.warmup = _warm

def bad_warm(payload):
    if payload == {"warm": True}:
        raise RuntimeError("GPU not there")
    return {"ok": True}
bad_warm.warmup = {"warm": True}
"""


@pytest.fixture(scope="module")
def fndir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fns")
    (d / "fns.py").write_text(FUNCTIONS)
    return d


@pytest.fixture(scope="module")
def echo_server(fndir: Path):
    with bench.start_runtime("fns:echo", cwd=fndir, env={"MAX_WORKERS": "8", "MAX_QUEUE": "64"}) as rt:
        yield rt


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} missing from:\n{text}"
    return float(m.group(1))


def test_invoke_answers_json_and_errors_are_json(echo_server) -> None:
    url = echo_server.url
    r = httpx.post(url + "/invoke", json={"a": [1, 2]})
    assert r.status_code == 200 and r.json() == {"echo": {"a": [1, 2]}}
    r = httpx.post(url + "/invoke", content=b"")
    assert r.status_code == 200 and r.json() == {"echo": None}

    r = httpx.post(url + "/invoke", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] == "body is not JSON"

    r = httpx.post(url + "/invoke", json={"raise": True})
    assert r.status_code == 500
    assert r.json() == {"error": "function raised", "detail": "ValueError: asked to raise"}

    r = httpx.post(url + "/invoke", json={"unjson": True})
    assert r.status_code == 500 and r.json()["error"] == "result is not JSON"

    assert httpx.get(url + "/invoke").status_code == 405
    # the server is still fine after all that
    assert httpx.post(url + "/invoke", json=1).json() == {"echo": 1}
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(url + "/readyz").json() == {"status": "ready"}
    assert "fns:echo raised ValueError" in echo_server.output() and "ValueError: asked to raise" in echo_server.output()


def test_status_reports_the_device(echo_server) -> None:
    s = httpx.get(echo_server.url + "/status", timeout=60).json()
    assert s["device"] in ("cuda", "cpu")
    assert s["function"] == "fns:echo" and s["ready"] is True
    for key in ("driver_version", "cuda_driver_version", "cuda_runtime_version", "gpus", "detected_by"):
        assert key in s
    if not Path("/dev/nvidiactl").exists():
        # this host has no GPU: the runtime says cpu, and why
        assert s["device"] == "cpu" and s["gpus"] == []
        assert "no NVIDIA driver" in s["reason"] or "sees no GPU" in s["reason"]


def test_metrics_prometheus_text(echo_server) -> None:
    url = echo_server.url
    before = httpx.get(url + "/metrics").text
    base = metric(before, 'gpuship_requests_total{status="200"}') if 'status="200"' in before else 0
    for i in range(3):
        assert httpx.post(url + "/invoke", json=i).status_code == 200
    httpx.post(url + "/invoke", content=b"nope")
    r = httpx.get(url + "/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert metric(text, 'gpuship_requests_total{status="200"}') == base + 3
    assert metric(text, 'gpuship_requests_total{status="400"}') >= 1
    assert "# TYPE gpuship_request_duration_seconds histogram" in text
    count = metric(text, "gpuship_request_duration_seconds_count")
    assert metric(text, 'gpuship_request_duration_seconds_bucket{le="+Inf"}') == count
    buckets = [float(v) for v in re.findall(r'_bucket\{le="[^"]+"\} (\S+)', text)]
    assert buckets == sorted(buckets)  # cumulative
    assert metric(text, "gpuship_in_flight") == 0
    assert metric(text, "gpuship_ready") == 1
    assert metric(text, "gpuship_max_workers") == 8


def test_2000_requests_at_64_concurrent_none_lost(fndir: Path) -> None:
    # the bench's own example function (echoes each request's id, so crossed answers are caught)
    env = {"MAX_WORKERS": "8", "MAX_QUEUE": "64"}
    with bench.start_runtime("serve_load:example", cwd=ROOT / "bench", env=env) as server:
        before = metric(httpx.get(server.url + "/metrics").text, "gpuship_request_duration_seconds_count")
        result = bench.run_load(server.url, requests=2000, concurrency=64)
        after = metric(httpx.get(server.url + "/metrics").text, "gpuship_request_duration_seconds_count")
    assert result["ok"] == 2000 and result["failed"] == 0
    assert result["statuses"] == {"200": 2000}
    assert result["transport_errors"] == {} and result["mismatched"] == 0 and result["ids_checked"] == 2000
    assert result["latency_ms"]["p50"] > 0 and result["latency_ms"]["p99"] >= result["latency_ms"]["p50"]
    assert result["throughput_rps"] > 0
    assert after - before == 2000  # the server counted every one of them


def test_bench_script_prints_json() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "serve_load.py"), "--requests", "300", "--concurrency", "16"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] == 300 and out["failed"] == 0 and set(out["latency_ms"]) == {"p50", "p90", "p99", "max"}


def _fire(url: str, payload: object, results: list, index: int) -> None:
    try:
        r = httpx.post(url + "/invoke", json=payload, timeout=60)
        results[index] = (r.status_code, r.headers.get("retry-after"), r.json())
    except httpx.HTTPError as exc:  # recorded, so a lost request fails the test instead of vanishing
        results[index] = ("transport", None, repr(exc))


def _burst(url: str, payloads: list[object]) -> tuple[list, list[threading.Thread]]:
    results: list = [None] * len(payloads)
    threads = [threading.Thread(target=_fire, args=(url, p, results, i)) for i, p in enumerate(payloads)]
    for t in threads:
        t.start()
    return results, threads


def _wait_metric(url: str, name: str, value: float, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(httpx.get(url + "/metrics").text, name) == value:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} never reached {value}")


def test_sigterm_lets_in_flight_requests_finish(fndir: Path) -> None:
    n = 6
    with bench.start_runtime("fns:echo", cwd=fndir, env={"MAX_WORKERS": "8"}) as rt:
        results, threads = _burst(rt.url, [{"sleep": 1.5, "i": i} for i in range(n)])
        _wait_metric(rt.url, "gpuship_running", n)
        rt.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert rt.proc.wait(30) == 0, rt.output()
    assert [r[0] for r in results] == [200] * n, results
    assert sorted(r[2]["echo"]["i"] for r in results) == list(range(n))
    assert "Shutting down" in rt.output()


def test_shutdown_delay_keeps_serving_with_readiness_off(fndir: Path) -> None:
    with bench.start_runtime("fns:echo", cwd=fndir, env={"SHUTDOWN_DELAY": "2"}) as rt:
        t0 = time.monotonic()
        rt.proc.send_signal(signal.SIGTERM)
        deadline = t0 + 1.5
        saw_unready = False
        while time.monotonic() < deadline:  # still serving, but telling the load balancer to go away
            r = httpx.get(rt.url + "/readyz")
            saw_unready = saw_unready or (r.status_code == 503 and r.json()["detail"] == "shutting down")
            assert httpx.post(rt.url + "/invoke", json=1).status_code == 200
            time.sleep(0.1)
        assert saw_unready
        assert rt.proc.wait(30) == 0
        assert time.monotonic() - t0 >= 2
    assert "draining for 2s" in rt.output()


def test_sigterm_exits_0_when_idle(fndir: Path) -> None:
    with bench.start_runtime("fns:echo", cwd=fndir) as rt:
        rt.proc.send_signal(signal.SIGTERM)
        assert rt.proc.wait(30) == 0


def test_max_workers_back_pressure_503_with_retry_after(fndir: Path) -> None:
    with bench.start_runtime("fns:echo", cwd=fndir, env={"MAX_WORKERS": "2", "MAX_QUEUE": "0"}) as rt:
        results, threads = _burst(rt.url, [{"sleep": 1.0, "i": i} for i in range(10)])
        for t in threads:
            t.join(60)
        codes = [r[0] for r in results]
        assert "transport" not in codes and None not in codes, results
        assert codes.count(200) + codes.count(503) == 10, results
        assert codes.count(200) >= 2 and codes.count(503) >= 1, results
        for code, retry_after, body in results:
            if code == 503:
                assert retry_after == "1" and body["error"] == "busy"
        text = httpx.get(rt.url + "/metrics").text
        assert metric(text, 'gpuship_requests_total{status="503"}') == codes.count(503)
        assert metric(text, 'gpuship_requests_total{status="200"}') == codes.count(200)


def test_max_queue_admits_waiting_requests(fndir: Path) -> None:
    with bench.start_runtime("fns:echo", cwd=fndir, env={"MAX_WORKERS": "2", "MAX_QUEUE": "8"}) as rt:
        results, threads = _burst(rt.url, [{"sleep": 0.3, "i": i} for i in range(10)])
        for t in threads:
            t.join(60)
    assert [r[0] for r in results] == [200] * 10, results


def test_async_function_and_function_without_arguments(fndir: Path) -> None:
    with bench.start_runtime("fns:aecho", cwd=fndir, env={"MAX_WORKERS": "4"}) as rt:
        results, threads = _burst(rt.url, [{"sleep": 0.5, "i": i} for i in range(4)])
        t0 = time.monotonic()
        for t in threads:
            t.join(60)
        assert [r[0] for r in results] == [200] * 4
        assert time.monotonic() - t0 < 1.9  # they ran at the same time
    with bench.start_runtime("fns:noargs", cwd=fndir) as rt:
        assert httpx.post(rt.url + "/invoke", json={"ignored": 1}).json() == {"called": True}


def test_ready_only_after_warm_up(fndir: Path) -> None:
    with bench.start_runtime("fns:slow_warm", cwd=fndir, wait_ready=False) as rt:
        assert httpx.get(rt.url + "/healthz").status_code == 200
        r = httpx.get(rt.url + "/readyz")
        assert r.status_code == 503 and r.json()["error"] == "not ready"
        r = httpx.post(rt.url + "/invoke", json={})
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        deadline = time.monotonic() + 20
        while httpx.get(rt.url + "/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert httpx.post(rt.url + "/invoke", json={}).json() == {"ok": True}
        assert "ready (warm-up hook)" in rt.output()


def test_failed_warm_up_keeps_it_unready_and_says_why(fndir: Path) -> None:
    with bench.start_runtime("fns:bad_warm", cwd=fndir, wait_ready=False) as rt:
        deadline = time.monotonic() + 20
        while "warm-up call failed" not in rt.output():
            assert time.monotonic() < deadline, rt.output()
            time.sleep(0.05)
        r = httpx.get(rt.url + "/readyz")
        assert r.status_code == 503 and "GPU not there" in r.json()["detail"]
        assert httpx.get(rt.url + "/healthz").status_code == 200
    # GPUSHIP_WARMUP overrides the attribute
    with bench.start_runtime("fns:bad_warm", cwd=fndir, env={"GPUSHIP_WARMUP": '{"other": 1}'}) as rt:
        assert httpx.get(rt.url + "/readyz").status_code == 200


def test_import_failure_exits_1_with_one_line(fndir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(bench.RUNTIME), "no_such_module:fn"],
        cwd=fndir,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PORT": str(bench.free_port()), "PATH": "/usr/bin"},
    )
    assert proc.returncode == 1
    assert "gpuship-runtime: error: cannot import no_such_module" in proc.stderr
    proc = subprocess.run(
        [sys.executable, str(bench.RUNTIME)], capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin"}
    )
    assert proc.returncode == 2 and "no function given" in proc.stderr
    proc = subprocess.run(
        [sys.executable, str(bench.RUNTIME), "fns:echo"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"MAX_WORKERS": "0", "PATH": "/usr/bin"},
    )
    assert proc.returncode == 2 and "MAX_WORKERS=0 is below 1" in proc.stderr


def test_probe_mode_for_container_health_checks(echo_server) -> None:
    port = echo_server.url.rsplit(":", 1)[1]
    ok = subprocess.run([sys.executable, str(bench.RUNTIME), "--probe", "/readyz", "--port", port], timeout=30)
    assert ok.returncode == 0
    bad = subprocess.run(
        [sys.executable, str(bench.RUNTIME), "--probe", "/readyz", "--port", str(bench.free_port())],
        capture_output=True,
        timeout=30,
    )
    assert bad.returncode == 1


def test_runtime_imports_only_stdlib_starlette_uvicorn() -> None:
    tree = ast.parse(Path(runtime_module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the file is copied alone"
            imported.add((node.module or "").split(".")[0])
    optional = {"torch", "cupy", "numba"}  # probed for, inside try blocks
    assert imported - set(sys.stdlib_module_names) - optional <= {"starlette", "uvicorn"}, imported


def test_runtime_entries_requirements_and_entrypoint() -> None:
    entries = runtime_entries()
    assert [e.path for e in entries] == ["opt", "opt/gpuship", RUNTIME_PATH.lstrip("/")]
    assert entries[-1].read() == Path(runtime_module.__file__).read_bytes()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert runtime_requirements() == pyproject["project"]["optional-dependencies"]["serve"]
    assert runtime_entrypoint("pkg.mod:fn", "/opt/venv/bin/python") == [
        "/opt/venv/bin/python",
        RUNTIME_PATH,
        "pkg.mod:fn",
    ]
    with pytest.raises(ConfigError):
        runtime_entrypoint("pkg.mod.fn")


def test_with_runtime_sets_up_the_image_config() -> None:
    base = ImageConfig(env=("PATH=/opt/venv/bin:/usr/bin", "MAX_WORKERS=1"), cmd=("python3",))
    cfg = with_runtime(base, "app.handler:predict", python="/opt/venv/bin/python")
    assert cfg.entrypoint == ("/opt/venv/bin/python", RUNTIME_PATH, "app.handler:predict") and cfg.cmd == ()
    env = cfg.env_dict()
    assert env["MAX_WORKERS"] == "1" and env["PORT"] == "8080" and env["PATH"].startswith("/opt/venv")
    assert cfg.exposed_ports == ("8080/tcp",) and cfg.stop_signal == "SIGTERM"
    assert cfg.labels[RUNTIME_LABEL] == "function" and is_runtime_image(cfg) and not is_runtime_image(base)
