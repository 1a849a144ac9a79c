"""Each user error is one line with the way out (exit 2), and leaves no output behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from build_support import gpuship, one_error_line


def _project(tmp_path: Path, pyproject: str, files: dict[str, str] | None = None) -> Path:
    p = tmp_path / "proj"
    p.mkdir()
    (p / "pyproject.toml").write_text(pyproject)
    for name, text in (files or {"main.py": "print('hi')\n"}).items():
        f = p / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return p


_CACHE: list[Path] = []


@pytest.fixture(autouse=True)
def _shared(build_cache: Path) -> None:
    _CACHE[:] = [build_cache]


BASIC = '[project]\nname = "p"\nversion = "1"\ndependencies = [{deps}]\n{tool}'


def _fails(tmp_path: Path, project: Path, *args: str) -> str:
    out = tmp_path / "out.tar"
    line = one_error_line(gpuship("build", str(project), "-o", f"oci-archive:{out}", *args, cache=_CACHE[0]))
    assert not out.exists()
    return line


def test_unparsable_pyproject(tmp_path: Path) -> None:
    project = _project(tmp_path, "[project\nname = ")
    assert "pyproject.toml" in _fails(tmp_path, project)


def test_unresolvable_requirement_shows_the_conflict(tmp_path: Path) -> None:
    project = _project(tmp_path, BASIC.format(deps='"numpy==1.26.4", "numpy>=2"', tool=""))
    line = _fails(tmp_path, project)
    assert "numpy" in line and ("unsatisfiable" in line or "conflict" in line or "no version" in line.lower())


def test_no_wheel_for_the_platform(tmp_path: Path) -> None:
    # mmh3 2.5.1 ships only C source: it builds on this x86 host, but an arm64 image needs an arm64 wheel.
    project = _project(tmp_path, BASIC.format(deps='"mmh3==2.5.1"', tool=""))
    line = _fails(tmp_path, project, "--platform", "linux/arm64")
    assert "mmh3 2.5.1 has no wheel for linux/arm64" in line and "choose a version" in line


def test_entrypoint_not_found(tmp_path: Path) -> None:
    project = _project(tmp_path, BASIC.format(deps="", tool='[tool.gpuship]\nentrypoint = ["python", "serve.py"]\n'))
    line = _fails(tmp_path, project)
    assert "serve.py" in line and "entrypoint" in line


def test_unknown_config_key_names_the_close_one(tmp_path: Path) -> None:
    project = _project(tmp_path, BASIC.format(deps="", tool='[tool.gpuship]\nentrypont = ["python", "main.py"]\n'))
    assert "did you mean 'entrypoint'" in _fails(tmp_path, project)


def test_missing_project_dir(tmp_path: Path) -> None:
    line = one_error_line(gpuship("build", str(tmp_path / "nope"), cache=tmp_path / "cache"))
    assert "nope" in line


def test_secrets_are_left_out_with_a_warning(tmp_path: Path, docker) -> None:
    project = _project(
        tmp_path,
        BASIC.format(deps="", tool=""),
        {
            "main.py": "import os; print(sorted(os.listdir('.')))\n",
            ".env": "TOKEN=s3cret\n",
            "deploy/id_rsa": "KEY\n",
            "certs/server.pem": "PEM\n",
            ".env.example": "TOKEN=\n",
            "config.yaml": "a: 1\n",
        },
    )
    archive = tmp_path / "img.tar"
    proc = gpuship("build", str(project), "-o", f"docker-archive:{archive}", cache=_CACHE[0])
    assert proc.returncode == 0, proc.stderr
    for secret in (".env", "deploy/id_rsa", "certs/server.pem"):
        assert f"left out {secret}" in proc.stderr
    with docker.loaded(archive) as ref:
        listing = docker.run("run", "--rm", ref).stdout
        found = docker.python(ref, "import os; print([os.path.join(d, f) for d, _, fs in os.walk('/app') for f in fs])")
    assert ".env.example" in listing and "config.yaml" in listing
    assert "/app/.env'" not in found and "id_rsa" not in found and "server.pem" not in found


def test_secret_named_in_include_ships(tmp_path: Path) -> None:
    from gpuship.sources.app import select_app_files

    project = _project(tmp_path, BASIC.format(deps="", tool=""), {"main.py": "", ".env": "A=1\n", "a.pem": "x"})
    assert ".env" not in select_app_files(project).files
    chosen = select_app_files(project, include=[".env"])
    assert ".env" in chosen.files and "a.pem" not in chosen.files and chosen.secrets_skipped == ("a.pem",)


def test_gitignore_and_dockerignore_are_honoured(tmp_path: Path) -> None:
    from gpuship.sources.app import select_app_files

    project = _project(
        tmp_path,
        BASIC.format(deps="", tool=""),
        {
            "main.py": "",
            ".gitignore": "data/\n*.log\n",
            ".dockerignore": "notes.txt\n",
            "data/big.bin": "x",
            "run.log": "x",
            "notes.txt": "x",
            "keep.txt": "x",
            ".git/config": "x",
            "__pycache__/m.cpython-311.pyc": "x",
        },
    )
    files = select_app_files(project).files
    assert "keep.txt" in files and "main.py" in files
    for gone in ("data/big.bin", "run.log", "notes.txt", ".git/config", "__pycache__/m.cpython-311.pyc"):
        assert gone not in files
