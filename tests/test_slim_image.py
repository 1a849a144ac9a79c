"""``gpuship slim`` end to end on examples/numpy-hello: built here, traced in the built-in runner, slimmed, proven by
the slimmed image running again (built-in runner inside ``gpuship slim``, then the real Docker Engine and the
built-in runner once more from the written archive).
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest

from build_support import copy_example, gpuship, one_error_line
from gpuship.cache import Cache

SP = "/opt/venv/lib/python3.11/site-packages"
HELLO = "hello from numpy 2"
CHECK_SCRIPT = (  # only modules the workload imported are left: os, not json
    "import os; print(repr({"
    f"'f2py': os.path.exists('{SP}/numpy/f2py/__init__.py'), "
    f"'f2py_bin': os.path.exists('/opt/venv/bin/f2py'), "
    "'certs': os.path.isfile('/etc/ssl/certs/ca-certificates.crt'), "
    f"'dist_info': sorted(os.listdir([f'{SP}/' + d for d in os.listdir('{SP}') if d.endswith('.dist-info')][0])), "
    "'gconv': os.path.exists('/usr/lib/x86_64-linux-gnu/gconv/IBM1390.so'), "
    "'json': os.path.exists('/usr/lib/python3.11/json/__init__.py')}))"
)


@pytest.fixture(scope="module")
def numpy_hello(tmp_path_factory: pytest.TempPathFactory, shared_cache: Cache) -> Path:
    tmp = tmp_path_factory.mktemp("slim-numpy")
    project = copy_example("numpy-hello", tmp)
    archive = tmp / "numpy-hello.tar"
    proc = gpuship("build", str(project), "-o", f"oci-archive:{archive}", cache=shared_cache.root)
    assert proc.returncode == 0, proc.stderr
    return archive


def test_slim_numpy_hello_runs_smaller(numpy_hello: Path, tmp_path: Path, shared_cache: Cache, docker) -> None:
    slim = tmp_path / "slim.tar"
    report_path = tmp_path / "slim.json"
    tag = docker.tag()
    proc = gpuship(
        "slim",
        f"oci-archive:{numpy_hello}",
        "-o",
        f"docker-archive:{slim}",
        "-t",
        tag,
        "--report",
        str(report_path),
        "--check-output",
        cache=shared_cache.root,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count(HELLO) == 2  # the traced run and the proof on the slimmed image, same output
    report = json.loads(report_path.read_text())
    assert report["removed"]["bytes"] > 5_000_000 and report["removed"]["files"] > 500
    assert report["slim"]["compressed"] < report["original"]["compressed"] - 2_000_000
    assert report["traced_run"]["exit_code"] == report["verified_run"]["exit_code"] == 0
    assert proc.stdout.strip() == report["slim"]["digest"]
    assert {"trace", "safety", "elf"} <= set(report["kept_by_rule"])
    assert report["trace"]["python_processes"] >= 1 and report["trace"]["loader_logs"] >= 1
    assert report["touched_distributions"] == ["numpy"]
    numpy_row = next(p for p in report["packages"] if p["name"] == "numpy")
    assert numpy_row["bytes_removed"] > 1_000_000 and numpy_row["bytes_kept"] > 0
    assert len(report["layers"]) == 7 and all(
        layer["bytes_after"] <= layer["bytes_before"] for layer in report["layers"]
    )
    removed = {r["path"] for r in report["largest_removed"]}
    assert not any(p.startswith(f"{SP}/numpy/_core/_multiarray_umath") for p in removed)

    # the real Docker Engine runs the slimmed image (--check-output above: the same stdout as the original)
    docker.load(slim)
    try:
        out = docker.run("run", "--rm", tag).stdout
        assert HELLO in out and "checksum 1134" in out
        facts = ast.literal_eval(
            docker.run("run", "--rm", "--entrypoint", "/opt/venv/bin/python", tag, "-c", CHECK_SCRIPT).stdout
        )
    finally:
        docker.run("rmi", "-f", tag, check=False)
    assert facts["f2py"] is False and facts["f2py_bin"] is False  # untouched by the workload: gone
    assert facts["gconv"] is False and facts["json"] is False
    assert facts["certs"] is True  # the safety list
    assert {"METADATA", "RECORD", "WHEEL"} <= set(facts["dist_info"])

    # and the built-in runner, from the written archive
    run = gpuship("run", "--runtime", "builtin", f"docker-archive:{slim}", cache=shared_cache.root)
    assert run.returncode == 0, run.stderr
    assert HELLO in run.stdout


def test_a_failing_proof_writes_nothing_and_keep_fixes_it(
    numpy_hello: Path, tmp_path: Path, shared_cache: Cache
) -> None:
    # os.path.exists is a stat: no audit event, no open, no load — the trace cannot see it, so the proof fails
    gconv = "/usr/lib/x86_64-linux-gnu/gconv/IBM1390.so"
    probe = f"import os, sys; sys.exit(0 if os.path.exists('{gconv}') else 4)"
    out = tmp_path / "never.tar"
    slim = ["slim", f"oci-archive:{numpy_hello}", "-o", f"oci-archive:{out}", "--entrypoint", "/opt/venv/bin/python"]
    proc = gpuship(*slim, "--", "-c", probe, cache=shared_cache.root)
    line = one_error_line(proc)
    assert "does not run the workload as the original did" in line and "exited with 4, before 0" in line
    assert "--keep" in line
    assert not out.exists()

    proc = gpuship(*slim, "--keep", gconv, "--", "-c", probe, cache=shared_cache.root)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()


def test_a_workload_that_fails_under_the_trace_is_refused(numpy_hello: Path, shared_cache: Cache) -> None:
    proc = gpuship(
        "slim",
        f"oci-archive:{numpy_hello}",
        "--entrypoint",
        "/opt/venv/bin/python",
        "--",
        "-c",
        "raise SystemExit(3)",
        cache=shared_cache.root,
    )
    line = one_error_line(proc)
    assert "exited with 3 under the trace" in line and "--allow-failure" in line


def test_slim_help_is_complete() -> None:
    proc = subprocess.run(["gpuship", "slim", "--help"], capture_output=True, text=True)
    if proc.returncode != 0:  # not on PATH outside the venv: the module form
        import sys

        proc = subprocess.run([sys.executable, "-m", "gpuship", "slim", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for flag in (
        "--output",
        "--report",
        "--http",
        "--keep",
        "--check-output",
        "--entrypoint",
        "--timeout",
        "--allow-failure",
    ):
        assert flag in proc.stdout
