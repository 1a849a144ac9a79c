"""The exported Dockerfile on a registry base that has Python packages (seed 002), built by the real engine.

The base is test_registry_base_build's: gpuship's Debian base with numpy 1.26.4 and nv-tool (on no index) in
dist-packages, pushed to a real loopback registry. The export pins it by digest, makes the venv over its Python
with --system-site-packages and installs only what the base lacks (six), under the base's distributions as
constraints; ``docker build`` pulls the base from the registry and the image imports the base's numpy.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.dockerfile import DEFAULT_TAG, WORK_DIR, export_dockerfile, import_debian_base
from test_dockerfile_docker import _clean_stages  # noqa: F401  (fixture: removes our stage images)
from test_registry_base_build import NUMPY, _project, numpy_base, registry  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.registry, pytest.mark.docker, pytest.mark.slow]


def test_exported_dockerfile_keeps_the_bases_packages(
    numpy_base: str,
    shared_cache: Cache,
    tmp_path: Path,  # noqa: F811
    docker,
    monkeypatch,
) -> None:
    monkeypatch.setenv("GPUSHIP_INSECURE_REGISTRIES", numpy_base.split("/")[0])
    project = _project(tmp_path / "proj", ["numpy>=1.26,<2", "nv-tool>=2"], f"base = '{numpy_base}'\n")
    ca = Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
    result = export_dockerfile(project, cache=shared_cache, ca_bundle=ca if ca.is_file() else None)
    text = result.dockerfile.read_text()
    assert f"ARG BASE={numpy_base}@sha256:" in text and "--system-site-packages" in text
    constraints = (project / WORK_DIR / "base-constraints.txt").read_text().split()
    assert f"numpy=={NUMPY}" in constraints
    req = (project / "requirements.lock.txt").read_text()
    assert "\nsix==" in req and "numpy" not in req.split("platforms")[1] and "nv-tool" not in req

    uv_base = import_debian_base(DEFAULT_TAG, "bookworm")
    tag = docker.tag()
    try:
        docker.run("build", "--force-rm", "-t", tag, "--build-arg", f"UV_BASE={uv_base}", str(project), timeout=900)
        out = docker.run("run", "--rm", tag).stdout
        cfg = docker.run(
            "run",
            "--rm",
            "--entrypoint",
            "python",
            tag,
            "-c",
            "import glob; print(glob.glob('/opt/venv/lib/python3.11/site-packages/numpy*'))",
        ).stdout
    finally:
        pinned = text.split("ARG BASE=", 1)[1].split()[0]
        docker.run("rmi", "-f", tag, pinned, check=False)  # the image and the base it pulled
    assert f"numpy {NUMPY} /usr/lib/python3/dist-packages/numpy/__init__.py" in out
    assert "six /opt/venv/lib/python3.11/site-packages/six.py" in out
    assert "nv_tool /usr/lib/python3/dist-packages/nv_tool.py" in out
    assert cfg.strip() == "[]"  # no second numpy in the venv
