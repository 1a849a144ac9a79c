"""``gpuship dockerfile`` without the engine: the requirements export, the .dockerignore translation, the rendered
stages, the refusal to overwrite a user's files, and the CLI's error lines. Locks are real (uv, PyPI)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuship.cache import Cache
from gpuship.cli.main import app
from gpuship.dockerfile import (
    REQUIREMENTS_NAME,
    WORK_DIR,
    export_dockerfile,
    plan_dockerfile,
    render_dockerfile,
    requirement_lines,
)
from gpuship.dockerfile.spec import gitignore_to_dockerignore
from gpuship.errors import GpushipError
from gpuship.oci import Platform
from gpuship.sources.python import Lock, LockedPackage, LockedTarget

ROOT = Path(__file__).resolve().parent.parent
AMD, ARM = Platform.parse("linux/amd64"), Platform.parse("linux/arm64")


def _pkg(name: str, version: str, sha: str) -> LockedPackage:
    return LockedPackage(name, version, f"{name}-{version}-py3-none-any.whl", f"https://files.invalid/{name}", sha)


def test_requirements_one_line_per_version_with_every_platforms_hash() -> None:
    lock = Lock(
        Path("gpuship.lock"),
        "3.11",
        "2.36",
        "sha256:x",
        (
            LockedTarget(
                AMD,
                "x86_64-manylinux_2_36",
                (_pkg("numpy", "2.4.6", "a" * 64), _pkg("six", "1.17.0", "c" * 64), _pkg("only-amd", "1.0", "e" * 64)),
            ),
            LockedTarget(
                ARM, "aarch64-manylinux_2_36", (_pkg("numpy", "2.4.6", "b" * 64), _pkg("six", "1.16.0", "d" * 64))
            ),
        ),
    )
    lines = {(ln.name, ln.version): ln.render() for ln in requirement_lines(lock, [AMD, ARM])}
    assert lines[("numpy", "2.4.6")] == f"numpy==2.4.6 --hash=sha256:{'a' * 64} --hash=sha256:{'b' * 64}"
    assert lines[("six", "1.17.0")] == f"six==1.17.0 ; platform_machine == 'x86_64' --hash=sha256:{'c' * 64}"
    assert lines[("six", "1.16.0")] == f"six==1.16.0 ; platform_machine == 'aarch64' --hash=sha256:{'d' * 64}"
    assert "platform_machine == 'x86_64'" in lines[("only-amd", "1.0")]
    # one platform: no markers at all
    assert all(";" not in ln.render() for ln in requirement_lines(lock, [AMD]))


@pytest.mark.parametrize(
    ("gitignore", "docker"),
    [
        ("__pycache__/", "**/__pycache__"),
        ("*.pyc", "**/*.pyc"),
        ("/dist", "dist"),
        ("data/raw/", "data/raw"),
        ("!keep.txt", "!**/keep.txt"),
        ("**/logs", "**/logs"),
        ("# comment", None),
        ("", None),
    ],
)
def test_gitignore_lines_become_dockerignore_lines(gitignore: str, docker: str | None) -> None:
    assert gitignore_to_dockerignore(gitignore) == docker


@pytest.fixture
def numpy_hello(tmp_path: Path) -> Path:
    dest = tmp_path / "numpy-hello"
    shutil.copytree(ROOT / "examples" / "numpy-hello", dest, ignore=shutil.ignore_patterns("gpuship.lock"))
    return dest


def test_numpy_hello_renders_the_multi_stage_shape(numpy_hello: Path, shared_cache: Cache) -> None:
    spec = plan_dockerfile(numpy_hello, cache=shared_cache, libdeps=False)
    text = render_dockerfile(spec)
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, re.M)
    assert stages == [("${BASE}", "builder"), ("${BASE}", "")]
    assert "ARG BASE=debian:bookworm-slim" in text
    builder, runtime = text.split("\nFROM ${BASE}\n")
    # the venv is made with uv from hash-pinned files, in the builder only
    assert "--require-hashes --no-deps -r /tmp/build/requirements.lock.txt" in builder
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    # the CA and the TLS settings never reach the image's stage
    assert "build-ca" in builder and "build-ca" not in runtime
    assert "PIP_CERT" in builder and "PIP_CERT" not in runtime and "UV_NO_CACHE" not in runtime
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in runtime  # Debian's bundle, as gpuship's base sets
    # system packages: one RUN that installs and removes the lists
    apt = [ln for ln in runtime.splitlines() if "apt-get" in ln]
    assert len(apt) == 2 and "--no-install-recommends" in apt[1] and "python3.11-minimal" in apt[1]
    assert "rm -rf /var/lib/apt/lists/*" in runtime
    assert runtime.index("COPY --from=builder") < runtime.index("COPY main.py")
    assert 'ENTRYPOINT ["python", "main.py"]' in runtime
    assert "USER 65532:65532" in runtime and "WORKDIR /app" in runtime
    assert "PATH=/opt/venv/bin:" in runtime and "org.opencontainers.image.title=numpy-hello" in runtime


def test_byte_code_step_skips_modules_that_do_not_compile(
    numpy_hello: Path, shared_cache: Cache, tmp_path: Path
) -> None:
    """The Dockerfile compiles the venv as gpuship does: a module in newer syntax than the base's Python (torch ships
    a py312-only test module) gets no .pyc instead of failing `docker build`; the others are compiled."""
    import shlex
    import subprocess
    import sys

    spec = plan_dockerfile(numpy_hello, cache=shared_cache, libdeps=False)
    [line] = [ln for ln in render_dockerfile(spec).splitlines() if "compileall" in ln]
    venv = tmp_path / "opt" / "venv"
    pkg = venv / "lib" / "python3.11" / "site-packages" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "ok.py").write_text("x = 1\n")
    (pkg / "py312.py").write_text('def f[T](a: "new annotation"):\n    return a\n')
    command = shlex.split(line.removeprefix("RUN ").replace("/opt/venv", str(venv)))
    command[0] = sys.executable  # the base's Python here: 3.11, which cannot parse the py312 module
    assert sys.version_info < (3, 12)
    proc = subprocess.run(command, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [p.name.split(".")[0] for p in (pkg / "__pycache__").iterdir()] == ["ok"]


def test_export_writes_the_files_and_keeps_a_users_dockerignore(
    numpy_hello: Path, shared_cache: Cache, tmp_path: Path
) -> None:
    (numpy_hello / ".dockerignore").write_text("notes/\n*.csv\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n")
    result = export_dockerfile(numpy_hello, cache=shared_cache, libdeps=False, ca_bundle=ca)
    names = {p.relative_to(numpy_hello).as_posix() for p in result.written}
    assert {"Dockerfile", ".dockerignore", REQUIREMENTS_NAME, f"{WORK_DIR}/build-ca.crt"} <= names
    req = (numpy_hello / REQUIREMENTS_NAME).read_text()
    assert re.search(r"^numpy==[\d.]+ --hash=sha256:[0-9a-f]{64}$", req, re.M)
    ignore = (numpy_hello / ".dockerignore").read_text().splitlines()
    assert "notes/" in ignore and "*.csv" in ignore and "**/__pycache__" in ignore
    assert ignore[-2:] == [f"!{REQUIREMENTS_NAME}", f"!{WORK_DIR}"]
    assert (numpy_hello / WORK_DIR / ".gitignore").read_text() == "build-ca.crt\n"
    # a second export keeps the user's lines once, and drops the CA when none is asked for
    export_dockerfile(numpy_hello, cache=shared_cache, libdeps=False)
    assert (numpy_hello / ".dockerignore").read_text().splitlines().count("*.csv") == 1
    assert not (numpy_hello / WORK_DIR / "build-ca.crt").exists()


def test_export_refuses_a_dockerfile_it_did_not_write(numpy_hello: Path, shared_cache: Cache) -> None:
    (numpy_hello / "Dockerfile").write_text("FROM python:3.11\nCOPY . .\n")
    with pytest.raises(GpushipError, match="was not written by gpuship"):
        export_dockerfile(numpy_hello, cache=shared_cache, libdeps=False)
    assert (numpy_hello / "Dockerfile").read_text().startswith("FROM python")
    assert not (numpy_hello / REQUIREMENTS_NAME).exists()
    export_dockerfile(numpy_hello, cache=shared_cache, libdeps=False, dockerfile_name="Dockerfile.gpuship")
    assert (numpy_hello / "Dockerfile").read_text().startswith("FROM python")
    assert "Dockerfile.gpuship" in (numpy_hello / ".dockerignore").read_text().splitlines()
    export_dockerfile(numpy_hello, cache=shared_cache, libdeps=False, force=True)
    assert "gpuship dockerfile" in (numpy_hello / "Dockerfile").read_text()


def test_package_project_gets_a_project_stage_and_gpu_config(tmp_path: Path, shared_cache: Cache) -> None:
    dest = tmp_path / "torch-status"
    shutil.copytree(ROOT / "examples" / "torch-status", dest, ignore=shutil.ignore_patterns("gpuship.lock"))
    spec = plan_dockerfile(dest, cache=shared_cache, libdeps=False)
    text = render_dockerfile(spec)
    assert "FROM builder AS project" in text
    assert "COPY --from=project /layers/project/ /opt/venv/" in text
    assert "COPY .gpuship/docker/layers/runtime/ /" in text
    assert "NVIDIA_VISIBLE_DEVICES=all" in text and "EXPOSE 8080" in text
    assert 'ENTRYPOINT ["python3", "/opt/gpuship/gpuship_runtime.py", "torch_status.app:handle"]' in text
    runtime_files = [e.path for layer in spec.extra_layers for e in layer.entries if e.kind == "file"]
    assert "opt/gpuship/gpuship_runtime.py" in runtime_files
    # torch compiles at run time: its headers are kept by the prune step
    assert "-path '/opt/venv/lib/python3.11/site-packages/torch'" in text


def test_micromamba_variant(tmp_path: Path, shared_cache: Cache, numpy_hello: Path) -> None:
    dest = tmp_path / "conda-env"
    shutil.copytree(ROOT / "examples" / "conda-env", dest, ignore=shutil.ignore_patterns("gpuship.lock"))
    text = render_dockerfile(plan_dockerfile(dest, cache=shared_cache, variant="micromamba"))
    assert "FROM ${MICROMAMBA_IMAGE} AS micromamba" in text
    assert "micromamba create --yes --prefix /opt/venv --file /tmp/build/environment.yml" in text
    assert "python3.11-minimal" not in text  # conda brings its own interpreter
    with pytest.raises(GpushipError, match="needs an environment.yml"):
        plan_dockerfile(numpy_hello, cache=shared_cache, variant="micromamba")


def test_registry_base_keeps_its_packages_with_constraints(numpy_hello: Path, shared_cache: Cache) -> None:
    """A base with Python packages (seed 002): the venv sees them, pip's freeze of the base becomes constraints."""
    import dataclasses

    spec = dataclasses.replace(
        plan_dockerfile(numpy_hello, cache=shared_cache, libdeps=False),
        registry_base="registry.invalid/ml/pytorch@sha256:" + "0" * 64,
        registry_tag="registry.invalid/ml/pytorch:24.03",
        base_python="/usr/bin/python3.10",
        runtime_packages=(),
        create_user=False,
        base_constraints=("torch==2.3.0",),
    )
    text = render_dockerfile(spec)
    assert f"ARG BASE={spec.registry_base}" in text
    # the base may have no shell: its stages run programs in exec form only
    assert 'RUN ["/usr/bin/python3.10", "-m", "venv", "--without-pip", "--system-site-packages", "/opt/venv"]' in text
    assert "COPY --from=uv /opt/uv/bin/uv /opt/uv/bin/uv" in text
    assert '"-c", "/tmp/build/base-constraints.txt", "-r", "/tmp/build/requirements.lock.txt"]' in text
    builder = text.split("FROM ${BASE} AS builder\n")[1].split("\nFROM ")[0]
    assert not [ln for ln in builder.splitlines() if ln.startswith("RUN ") and not ln.startswith("RUN [")]
    runtime = text.split("\nFROM ${BASE}\n")[1]
    assert "RUN" not in runtime and "COPY --from=venv /opt/venv /opt/venv" in runtime


def test_cli_errors_are_one_line(numpy_hello: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["dockerfile", str(numpy_hello), "--variant", "conda"])
    assert res.exit_code == 2 and "--variant must be pip or micromamba" in res.output
    res = runner.invoke(app, ["dockerfile", str(numpy_hello), "--ca-bundle", str(numpy_hello / "missing.pem")])
    assert res.exit_code == 2 and "does not exist" in res.output
    assert "Traceback" not in res.output
