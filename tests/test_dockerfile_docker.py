"""The exported Dockerfile in the real Docker Engine: ``docker build`` of examples/numpy-hello's export runs the same
smoke command as gpuship's image, with the same venv files and image config, and no build CA in the image; and
the build context that .dockerignore lets through is exactly gpuship's app-file selection.

The base is a debian:bookworm-slim equivalent made from the Debian mirror with debootstrap (no registry here); it
is made once and kept in the engine as ``gpuship-local/debian:bookworm-slim``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.dockerfile import DEFAULT_TAG, WORK_DIR, export_dockerfile, import_debian_base
from gpuship.sources.app import select_app_files

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
CA = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
WALK = 'import os\nfor r, d, f in os.walk("/opt/venv"):\n    for x in f: print(os.path.join(r, x))'


@pytest.fixture(scope="session")
def debian_base(docker) -> str:  # type: ignore[no-untyped-def]
    if (
        shutil.which("debootstrap") is None
        and subprocess.run(["docker", "image", "inspect", DEFAULT_TAG], capture_output=True).returncode != 0
    ):
        pytest.fail("debootstrap is missing: apt-get install debootstrap (scripts/bootstrap.sh installs it)")
    return import_debian_base(DEFAULT_TAG, "bookworm")


def _ca() -> Path | None:
    return Path(CA) if Path(CA).is_file() else None


def _pems(text: str) -> set[str]:
    return {
        "-----BEGIN CERTIFICATE-----" + b.split("-----END CERTIFICATE-----")[0]
        for b in text.split("-----BEGIN CERTIFICATE-----")[1:]
    }


def _config(docker, tag: str) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(docker.run("image", "inspect", tag).stdout)[0]["Config"]


def test_exported_numpy_hello_builds_and_runs_like_gpuships_image(
    docker, debian_base: str, shared_cache: Cache, tmp_path: Path
) -> None:
    ignore = shutil.ignore_patterns("gpuship.lock")
    src, gsrc = tmp_path / "numpy-hello", tmp_path / "gpuship" / "numpy-hello"
    shutil.copytree(ROOT / "examples" / "numpy-hello", src, ignore=ignore)
    shutil.copytree(ROOT / "examples" / "numpy-hello", gsrc, ignore=ignore)
    result = export_dockerfile(src, cache=shared_cache, ca_bundle=_ca())
    dtag, gtag = docker.tag(), docker.tag()
    try:
        docker.run("build", "--force-rm", *result.build_command(tag=dtag, base=debian_base)[2:], timeout=900)
        from gpuship.build import build
        from gpuship.plan import BuildOptions

        build(BuildOptions(project_dir=gsrc, output=f"docker:{gtag}"), cache=shared_cache)

        dout = docker.run("run", "--rm", dtag).stdout
        gout = docker.run("run", "--rm", gtag).stdout
        assert dout.startswith("hello from numpy") and dout == gout

        # the same venv, file for file (the same wheels, the same pruning and byte code)
        dfiles = docker.run("run", "--rm", "--entrypoint", "python", dtag, "-c", WALK).stdout.split()
        gfiles = docker.run("run", "--rm", "--entrypoint", "python", gtag, "-c", WALK).stdout.split()
        assert sorted(dfiles) == sorted(gfiles)
        assert any(f.endswith(".pyc") for f in dfiles)

        dcfg, gcfg = _config(docker, dtag), _config(docker, gtag)
        for key in ("Entrypoint", "Cmd", "User", "WorkingDir"):
            assert dcfg[key] == gcfg[key], key
        assert dict(e.split("=", 1) for e in dcfg["Env"]) == dict(e.split("=", 1) for e in gcfg["Env"])
        glabels = {k: v for k, v in gcfg["Labels"].items() if not k.endswith((".created", ".revision"))}
        assert glabels.items() <= dcfg["Labels"].items()

        # the build's CA and pip/uv settings stay in the builder stage: the image trusts Debian's bundle only
        assert not {"PIP_CERT", "UV_NO_CACHE"} & {e.split("=", 1)[0] for e in dcfg["Env"]}
        probe = "import os; print(os.path.exists('/tmp/build'), os.path.exists('/opt/uv'))"
        assert docker.run("run", "--rm", "--entrypoint", "python", dtag, "-c", probe).stdout.split() == [
            "False",
            "False",
        ]
        history = docker.run("history", "--no-trunc", "--format", "{{.CreatedBy}}", dtag).stdout
        assert "build-ca" not in history and "uv pip install" not in history
        if _ca() is not None:
            cat = "print(open('/etc/ssl/certs/ca-certificates.crt').read())"
            image_certs = _pems(docker.run("run", "--rm", "--entrypoint", "python", dtag, "-c", cat).stdout)
            gpuship_certs = _pems(docker.run("run", "--rm", "--entrypoint", "python", gtag, "-c", cat).stdout)
            build_only = _pems(_ca().read_text()) - gpuship_certs  # e.g. a TLS-intercepting proxy's CA
            assert image_certs and not build_only & image_certs
    finally:
        docker.run("rmi", "-f", dtag, gtag, check=False)


def test_build_context_is_gpuships_app_selection(docker, debian_base: str, shared_cache: Cache, tmp_path: Path) -> None:
    root = tmp_path / "proj"
    files = {
        "pyproject.toml": '[project]\nname = "ctx"\nversion = "1"\ndependencies = []\n'
        '[tool.gpuship]\nentrypoint = ["python", "main.py"]\n',
        "main.py": "print('hi')\n",
        "pkg/__init__.py": "",
        "pkg/__pycache__/x.cpython-311.pyc": "x",
        "pkg/deep/tests/test_a.py": "",
        ".env": "TOKEN=1",
        ".env.example": "TOKEN=",
        "conf/server.pem": "k",
        "conf/app.yml": "a: 1",
        "data/raw/big.csv": "1,2",
        "data/small.csv": "1",
        "notes.txt": "n",
        "build/junk.o": "o",
        ".git/config": "[core]",
        "venv/bin/python": "",
        ".gitignore": "data/raw/\nnotes.txt\n*.log\n",
        "run.log": "l",
        "docs/guide.md": "g",
    }
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    export_dockerfile(root, cache=shared_cache, libdeps=False)
    probe = tmp_path / "Dockerfile.probe"
    probe.write_text(f"FROM {debian_base}\nCOPY . /ctx\n")
    tag = docker.tag()
    try:
        docker.run("build", "-q", "--force-rm", "-t", tag, "-f", str(probe), str(root))
        listed = docker.run("run", "--rm", tag, "find", "/ctx", "-type", "f").stdout.split()
        context = {p.removeprefix("/ctx/") for p in listed}
    finally:
        docker.run("rmi", "-f", tag, check=False)
    app = set(select_app_files(root).files)
    assert {"main.py", "pkg/__init__.py", ".env.example", "conf/app.yml", "data/small.csv", "docs/guide.md"} <= app
    assert not app & {".env", "conf/server.pem", "data/raw/big.csv", "notes.txt", "run.log", "build/junk.o"}
    # the context is the app's files, plus the build's own inputs under .gpuship/docker (which gpuship never ships)
    inputs = {p for p in context if p.startswith(f"{WORK_DIR}/")}
    assert f"{WORK_DIR}/README.md" in inputs and "requirements.lock.txt" in context
    assert not {p for p in app if p.startswith(".gpuship/")}
    assert context - inputs - {"Dockerfile", ".dockerignore"} == app - {"Dockerfile", ".dockerignore"}


def remove_stage_images(docker, since: set[str]) -> None:  # type: ignore[no-untyped-def]
    """Remove the untagged stage images our builds left (their history holds the .gpuship/docker COPY)."""
    now = set(docker.run("images", "-q", "--no-trunc", "-f", "dangling=true").stdout.split())
    for image in sorted(now - since):
        hist = docker.run("history", "--no-trunc", "--format", "{{.CreatedBy}}", image, check=False).stdout
        if any(m in hist for m in (".gpuship/docker", "/tmp/build/", "/opt/uv")):
            docker.run("rmi", image, check=False)


@pytest.fixture(autouse=True)
def _clean_stages(docker):  # type: ignore[no-untyped-def]
    before = set(docker.run("images", "-q", "--no-trunc", "-f", "dangling=true").stdout.split())
    yield
    remove_stage_images(docker, before)
