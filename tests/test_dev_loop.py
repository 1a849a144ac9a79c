"""``gpuship dev``: the project mounted over /app, installed in editable mode; an edit shows without a rebuild.

Real CLI in a subprocess, real Debian base (shared cache), real Docker Engine for the package project and the
built-in runner (runc) for the script project.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from build_support import gpuship
from gpuship.cache import Cache
from gpuship.dev import dev_image
from gpuship.sources.editable import editable_entries, source_dir

DIGEST = re.compile(r"dev image (sha256:[0-9a-f]{64}) \((\d+) new layers\)")


def _package(root: Path) -> Path:
    (root / "src" / "hellopkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        "[project]\nname = 'hello-pkg'\nversion = '0.2.0'\nrequires-python = '>=3.11'\ndependencies = []\n\n"
        "[project.scripts]\nhello = 'hellopkg.cli:main'\n\n"
        "[build-system]\nrequires = ['hatchling']\nbuild-backend = 'hatchling.build'\n\n"
        "[tool.hatch.build.targets.wheel]\npackages = ['src/hellopkg']\n"
    )
    (root / "src" / "hellopkg" / "__init__.py").write_text("GREETING = 'hello, first version'\n")
    (root / "src" / "hellopkg" / "cli.py").write_text(
        "from hellopkg import GREETING\n\n\ndef main():\n    print(GREETING)\n    return 3\n"
    )
    return root


def _dev(project: Path, cache: Cache, *args: str, code: int = 0) -> tuple[str, str, int]:
    """gpuship dev: (stdout, dev image digest, new layers) from a run that exits with ``code``."""
    proc = gpuship("dev", str(project), *args, cache=cache.root, timeout=900)
    assert proc.returncode == code, proc.stdout + proc.stderr
    m = DIGEST.search(_oneline(proc.stderr))
    assert m, proc.stderr
    return proc.stdout, m.group(1), int(m.group(2))


def _oneline(text: str) -> str:
    return " ".join(text.split())


def test_editable_layer_contents() -> None:
    entries = {
        e.path: e
        for e in editable_entries(
            name="Hello.Pkg",
            version="0.2.0",
            scripts={"hello": "hellopkg.cli:main [extra]"},
            is_package=True,
            venv="/opt/venv",
            python_minor="3.11",
            workdir="/app",
            src="/app/src",
        )
    }
    site = "opt/venv/lib/python3.11/site-packages"
    assert entries[f"{site}/__editable__.hello_pkg-0.2.0.pth"].read() == b"/app/src\n"
    assert b'"editable": true' in entries[f"{site}/hello_pkg-0.2.0.dist-info/direct_url.json"].read()
    assert b"hello = hellopkg.cli:main [extra]" in entries[f"{site}/hello_pkg-0.2.0.dist-info/entry_points.txt"].read()
    launcher = entries["opt/venv/bin/hello"]
    assert launcher.mode == 0o755 and launcher.read().startswith(b"#!/opt/venv/bin/python\n")
    assert b"import_module('hellopkg.cli')" in launcher.read()
    # a script project gets only the mount point
    assert [
        e.path
        for e in editable_entries(
            name="x",
            version="1",
            scripts={},
            is_package=False,
            venv="/opt/venv",
            python_minor="3.11",
            workdir="/srv/app",
            src="/srv/app",
        )
    ] == ["srv/app"]


def test_source_dir(tmp_path: Path) -> None:
    assert source_dir(tmp_path, "/app") == "/app"
    (tmp_path / "src").mkdir()
    assert source_dir(tmp_path, "/app") == "/app/src"


@pytest.mark.docker
def test_dev_package_edit_shows_without_rebuild(tmp_path: Path, shared_cache: Cache, docker) -> None:  # type: ignore[no-untyped-def]
    project = _package(tmp_path / "proj")
    tag = built_tag = None
    try:
        out1, digest1, _ = _dev(project, shared_cache, code=3)  # the command's exit code is gpuship dev's
        assert out1.strip() == "hello, first version"
        (project / "src" / "hellopkg" / "__init__.py").write_text("GREETING = 'hello, edited'\n")
        out2, digest2, new = _dev(project, shared_cache, code=3)
        assert out2.strip() == "hello, edited"
        assert digest2 == digest1 and new == 0  # the same image; no layer was made

        # -- CMD replaces the command; the project is an editable install from the mount
        probe = (
            "import hellopkg, importlib.metadata as md, json; print(hellopkg.__file__, md.version('hello-pkg'), "
            "json.loads(md.distribution('hello-pkg').read_text('direct_url.json'))['dir_info'])"
        )
        proc = gpuship("dev", str(project), "-e", "X=1", "--", "python", "-c", probe, cache=shared_cache.root)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "/app/src/hellopkg/__init__.py 0.2.0 {'editable': True}"

        made = dev_image(project, cache=shared_cache)  # the library says the same: no new layer, same digest
        assert made.digest == digest1 and made.new_layers == 0 and made.workdir == "/app"
        groups = [r.group for r in made.built.platforms[0].rows]
        assert "app" not in groups and "project" not in groups and groups[-1] == "editable"
        tag = "gpuship-run:" + made.image.config_descriptor()["digest"][7:23]

        # --image: a prebuilt image (with the project's wheel installed); the mounted source wins through PYTHONPATH
        archive = tmp_path / "built.tar"
        assert (
            gpuship("build", str(project), "-o", f"docker-archive:{archive}", cache=shared_cache.root).returncode == 0
        )
        (project / "src" / "hellopkg" / "__init__.py").write_text("GREETING = 'hello, after the build'\n")
        proc = gpuship("dev", str(project), "--image", f"docker-archive:{archive}", cache=shared_cache.root)
        assert proc.returncode == 3 and proc.stdout.strip() == "hello, after the build", proc.stderr
        from gpuship.transports import read_image

        built_tag = "gpuship-run:" + read_image(f"docker-archive:{archive}").config_descriptor()["digest"][7:23]
    finally:
        for t in (tag, built_tag):
            if t:
                docker.run("rmi", "-f", t, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="the built-in runner needs root (CI runs as root)")
def test_dev_script_project_with_the_builtin_runner(tmp_path: Path, shared_cache: Cache) -> None:
    project = tmp_path / "script"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        "[project]\nname = 'script'\nversion = '1'\nrequires-python = '>=3.11'\ndependencies = []\n\n"
        "[tool.gpuship]\nentrypoint = ['python', 'main.py']\nworkdir = '/srv/app'\n"
    )
    (project / "main.py").write_text("import os\nprint('one', os.getcwd())\n")
    out1, digest1, _ = _dev(project, shared_cache, "--runtime", "runc")
    assert out1.strip() == "one /srv/app"
    (project / "main.py").write_text("import os\nprint('two', os.getcwd())\n")
    (project / "extra.py").write_text("print('a new file, also seen')\n")
    out2, digest2, new = _dev(project, shared_cache, "--runtime", "runc")
    assert out2.strip() == "two /srv/app" and digest2 == digest1 and new == 0
    out3, _, _ = _dev(project, shared_cache, "--runtime", "runc", "--", "python", "extra.py")
    assert out3.strip() == "a new file, also seen"
