"""``gpuship image convert|ls`` through the real entry point: results, and one-line user errors (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.oci.docker_archive import write_docker_archive
from test_oci_support import busybox_image, busybox_tree, run_tool  # noqa: F401


def gpuship(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from gpuship.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "GPUSHIP_CACHE": str(cache), "COLUMNS": "200"},
    )


@pytest.fixture
def archive(busybox_tree: Path, cache: Cache, tmp_path: Path) -> Path:  # noqa: F811
    return write_docker_archive(busybox_image(busybox_tree, cache), tmp_path / "bb.tar", tags=["bb:1"])


def test_convert_and_ls(archive: Path, tmp_path: Path) -> None:
    digest = json.loads(run_tool("skopeo", "inspect", f"oci-archive:{archive}").stdout)["Digest"]
    proc = gpuship("image", "convert", str(archive), f"oci-archive:{tmp_path / 'out.tar'}:v1", cache=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    assert digest in proc.stdout
    assert (
        json.loads(run_tool("skopeo", "inspect", f"oci-archive:{tmp_path / 'out.tar'}:v1").stdout)["Digest"] == digest
    )
    proc = gpuship(
        "image",
        "convert",
        f"oci-archive:{tmp_path / 'out.tar'}",
        f"oci:{tmp_path / 'z'}:v1",
        "--compression",
        "zstd",
        cache=tmp_path / "c",
    )
    assert proc.returncode == 0, proc.stderr
    raw = json.loads(run_tool("skopeo", "inspect", "--raw", f"oci:{tmp_path / 'z'}:v1").stdout)
    assert raw["layers"][0]["mediaType"].endswith("+zstd")
    ls = gpuship("image", "ls", f"oci:{tmp_path / 'z'}", cache=tmp_path / "c")
    assert ls.returncode == 0, ls.stderr
    assert "linux/amd64" in ls.stdout and "zstd" in ls.stdout and "/bin/busybox echo hello from gpuship" in ls.stdout


def test_help_mentions_the_zstd_caveat(tmp_path: Path) -> None:
    proc = gpuship("image", "convert", "--help", cache=tmp_path / "c")
    assert proc.returncode == 0
    assert "Docker 20.10" in " ".join(proc.stdout.split()) and "zstd" in proc.stdout


def _one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_user_errors_are_one_line_exit_2(archive: Path, tmp_path: Path) -> None:
    c = tmp_path / "c"
    _one_line_error(gpuship("image", "ls", str(tmp_path / "missing.tar"), cache=c), "no such file")
    (tmp_path / "a-file").write_text("x")
    _one_line_error(
        gpuship("image", "convert", str(archive), f"oci-archive:{tmp_path / 'a-file' / 'out.tar'}", cache=c),
        "cannot write",
    )
    _one_line_error(
        gpuship(
            "image", "convert", str(archive), f"docker-archive:{tmp_path / 'no' / 'such' / 'dir' / 'x.tar'}", cache=c
        ),
        "cannot write",
    )
    data = bytearray(archive.read_bytes())
    (tmp_path / "cut.tar").write_bytes(bytes(data[: len(data) // 2]))
    _one_line_error(
        gpuship("image", "convert", str(tmp_path / "cut.tar"), f"oci:{tmp_path / 'o'}", cache=c), "truncated"
    )
    assert not (tmp_path / "o").exists()
    _one_line_error(gpuship("image", "convert", str(archive), f"s3:{tmp_path}/x", cache=c), "oci:DIR", "docker:NAME")
    _one_line_error(
        gpuship("image", "convert", str(archive), f"oci:{tmp_path / 'o'}", "--compression", "xz", cache=c),
        "gzip or zstd",
    )
