"""The order of a GPU image's layers, and what it buys: the Debian layers that depend on find-libdeps' packages
sit above the Python environment (which an engine can then load before they are known), gpuship's own layers
below the app, and an edit of a package project changes the app layer alone — the one layer Docker is sent."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from build_support import copy_example, gpuship


def _build(project: Path, tag: str, cache: Path, report: Path) -> dict:
    proc = gpuship("build", str(project), "-o", f"docker:{tag}", "--report", str(report), cache=cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(report.read_text())


@pytest.mark.docker
def test_an_edit_of_a_package_project_sends_the_app_layer_alone(tmp_path: Path, build_cache: Path, docker) -> None:
    project = copy_example("cuda-ptx-matmul", tmp_path)
    first_tag, edit_tag = docker.tag(), docker.tag()
    try:
        first = _build(project, first_tag, build_cache, tmp_path / "first.json")
        rows = first["platforms"][0]["layers"]
        groups = [r["group"] for r in rows]
        env = [i for i, g in enumerate(groups) if g in ("venv", "cuda", "frameworks", "deps")]
        system = next(i for i, r in enumerate(rows) if r["what"].startswith("debian system files"))
        # the Debian core and Python layers, the environment, then the layers that list the system packages
        assert groups[:2] == ["base", "base"] and env[0] == 2 and max(env) < system
        assert groups[system + 1 :] == ["gpu-check", "app"], groups
        assert "project" not in groups  # the project's wheel is installed in the app layer

        main = project / "src" / "ptx_matmul" / "main.py"
        marker = f"edited by the test {time.time_ns()}"  # a fresh app layer, even in a cache kept from other runs
        main.write_text(main.read_text() + f"\nEDIT_MARKER = {marker!r}\n")
        edited = _build(project, edit_tag, build_cache, tmp_path / "edit.json")
        new = [r["group"] for r in edited["platforms"][0]["layers"] if not r["reused"]]
        assert new == ["app"]
        assert " (1 of " in edited["written"][0] and "layers sent" in edited["written"][0], edited["written"]
        # the installed package (what the entry point imports) is the edited one
        out = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "python", edit_tag, "-c",
             "import ptx_matmul.main as m; print(m.EDIT_MARKER)"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert out.stdout.strip() == marker, out.stderr
    finally:
        docker.run("rmi", "-f", first_tag, edit_tag, check=False)
