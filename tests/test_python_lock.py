"""gpuship.lock: resolved by uv for linux/amd64 and linux/arm64 from this x86 machine, reused while the inputs are
unchanged, refused when stale under ``locked``, and clear errors for a Python mismatch, an unsatisfiable set and
a package with no wheel for a platform."""

from __future__ import annotations

import re
import subprocess
import textwrap
import tomllib
from pathlib import Path

import pytest

from gpuship import tools
from gpuship.cache import Cache
from gpuship.errors import ConfigError, IntegrityError, ResolveError
from gpuship.oci import Platform
from gpuship.project import load_project
from gpuship.sources.python import NoWheelError, lock_project, read_lock

AMD64 = Platform.parse("linux/amd64")
ARM64 = Platform.parse("linux/arm64")


def project_dir(tmp_path: Path, deps: list[str], **extra: str) -> Path:
    root = tmp_path / "proj"
    root.mkdir(exist_ok=True)
    deps_toml = ", ".join(f'"{d}"' for d in deps)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [project]
        name = "lockme"
        version = "0.1.0"
        requires-python = ">=3.11"
        dependencies = [{deps_toml}]
        [tool.gpuship]
        entrypoint = {extra.get("entrypoint", '["python", "main.py"]')}
        """)
    )
    return root


def test_lock_for_amd64_and_arm64_from_x86(tmp_path: Path, cache: Cache) -> None:
    root = project_dir(tmp_path, ["numpy>=2", "six"])
    lock = lock_project(load_project(root), [ARM64, AMD64], "3.11", cache)
    assert not lock.reused
    assert lock.python == "3.11" and lock.glibc == "2.36"
    path = root / "gpuship.lock"
    assert lock.path == path and path.is_file()
    data = tomllib.loads(path.read_text())
    assert [t["platform"] for t in data["target"]] == ["linux/amd64", "linux/arm64/v8"]
    assert [t["python-platform"] for t in data["target"]] == ["x86_64-manylinux_2_36", "aarch64-manylinux_2_36"]
    by_plat = {t.platform: {p.name: p for p in t.packages} for t in lock.targets}
    np_amd, np_arm = by_plat[AMD64]["numpy"], by_plat[ARM64]["numpy"]
    assert np_amd.version == np_arm.version  # the second platform prefers the first one's versions
    assert "cp311" in np_amd.filename and "x86_64" in np_amd.filename and np_amd.filename.endswith(".whl")
    assert "cp311" in np_arm.filename and "aarch64" in np_arm.filename
    assert np_amd.sha256 != np_arm.sha256 and len(np_amd.sha256) == 64
    assert np_amd.url.endswith("/" + np_amd.filename) and np_amd.size and np_amd.size > 1_000_000
    six = by_plat[ARM64]["six"]
    assert six.filename.endswith("-py2.py3-none-any.whl") and six == by_plat[AMD64]["six"]
    # stable, human-readable text: reading it back and writing it again gives the same bytes
    assert read_lock(path).dumps() == path.read_text()
    assert read_lock(path).targets == lock.targets


def test_lock_is_reused_and_locked_refuses_a_stale_one(tmp_path: Path, cache: Cache) -> None:
    root = project_dir(tmp_path, ["six"])
    first = lock_project(load_project(root), [AMD64], "3.11", cache)
    text = (root / "gpuship.lock").read_text()

    again = lock_project(load_project(root), [AMD64], "3.11", cache, locked=True)
    assert again.reused and again.targets == first.targets

    # metadata that cannot change the resolution does not make the lock stale
    project_dir(tmp_path, ["six"], entrypoint='["python", "other.py"]')
    assert lock_project(load_project(root), [AMD64], "3.11", cache, locked=True).reused

    # a changed requirement does
    project_dir(tmp_path, ["six", "idna"])
    with pytest.raises(ConfigError, match="gpuship.lock is out of date: the project's requirements changed") as exc:
        lock_project(load_project(root), [AMD64], "3.11", cache, locked=True)
    assert "without --locked" in (exc.value.hint or "")
    assert (root / "gpuship.lock").read_text() == text  # untouched

    # and so does a platform the lock does not cover
    project_dir(tmp_path, ["six"])
    with pytest.raises(ConfigError, match=r"out of date: it has no packages for linux/arm64"):
        lock_project(load_project(root), [AMD64, ARM64], "3.11", cache, locked=True)

    # without --locked it is updated: idna is added, and the file keeps every platform it had
    project_dir(tmp_path, ["six", "idna"])
    updated = lock_project(load_project(root), [ARM64], "3.11", cache)
    assert not updated.reused and updated.platforms == (AMD64, ARM64)
    assert {p.name for p in updated.packages(AMD64)} == {"six", "idna"}


def test_locked_without_a_lock_file(tmp_path: Path, cache: Cache) -> None:
    root = project_dir(tmp_path, ["six"])
    with pytest.raises(ConfigError, match="--locked, but the project has no gpuship.lock"):
        lock_project(load_project(root), [AMD64], "3.11", cache, locked=True)
    assert not (root / "gpuship.lock").exists()


def test_a_base_with_another_python_relocks_and_locked_refuses(tmp_path: Path, cache: Cache) -> None:
    root = project_dir(tmp_path, ["six"])
    lock_project(load_project(root), [AMD64], "3.11.2", cache)
    with pytest.raises(ConfigError) as exc:
        lock_project(load_project(root), [AMD64], "3.13", cache, locked=True)
    assert exc.value.message == "--locked, but gpuship.lock was made for Python 3.11 and the base has Python 3.13"
    assert "build without --locked to lock again for Python 3.13" in (exc.value.hint or "")
    assert lock_project(load_project(root), [AMD64], "3.13", cache).python == "3.13"


def test_unresolvable_requirements_show_uvs_explanation(tmp_path: Path, cache: Cache) -> None:
    root = project_dir(tmp_path, ["numpy>2", "numpy<1.20"])
    with pytest.raises(ResolveError) as exc:
        lock_project(load_project(root), [AMD64], "3.11", cache)
    line = exc.value.line()
    assert "\n" not in line
    assert line.startswith(
        "cannot resolve the Python requirements for linux/amd64: Because you require numpy>2 and numpy<1.20"
    )
    assert "unsatisfiable" in line
    assert not (root / "gpuship.lock").exists()


def test_no_wheel_for_a_platform(tmp_path: Path, cache: Cache) -> None:
    # cuDNN 8.5 for CUDA 11 was published for x86_64 only, without a source distribution
    root = project_dir(tmp_path, ["nvidia-cudnn-cu11==8.5.0.96"])
    with pytest.raises(NoWheelError) as exc:
        lock_project(load_project(root), [ARM64], "3.11", cache)
    assert exc.value.message.startswith("nvidia-cudnn-cu11 has no wheel for linux/arm64/v8 (Python 3.11)")
    assert "manylinux1_x86_64" in exc.value.message  # uv's hint: where wheels do exist
    assert "drop linux/arm64/v8" in (exc.value.hint or "")


def test_hash_pins_are_enforced(tmp_path: Path, cache: Cache) -> None:
    root = tmp_path / "hashed"
    root.mkdir()
    good = "4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274"  # six-1.17.0-py2.py3-none-any.whl
    (root / "requirements.txt").write_text(f"six==1.17.0 --hash=sha256:{good}\n")
    lock = lock_project(load_project(root), [AMD64], "3.11", cache)
    assert lock.packages(AMD64)[0].sha256 == good
    (root / "gpuship.lock").unlink()
    (root / "requirements.txt").write_text(f"six==1.17.0 --hash=sha256:{'0' * 64}\n")
    with pytest.raises(IntegrityError, match="six-1.17.0-py2.py3-none-any.whl .* is not among the --hash values"):
        lock_project(load_project(root), [AMD64], "3.11", cache)


def test_uv_lock_versions_are_kept(tmp_path: Path, cache: Cache) -> None:
    """A uv.lock made a while ago pins six 1.16.0; newer ones exist. The gpuship lock keeps 1.16.0."""
    uv = tools.require("uv")
    root = project_dir(tmp_path, ["six>=1.15"])
    subprocess.run([uv, "lock", "-q", "--project", str(root)], check=True, capture_output=True)
    old = tmp_path / "old"
    old.mkdir()
    (old / "pyproject.toml").write_text('[project]\nname = "old"\nversion = "0"\ndependencies = ["six==1.16.0"]\n')
    subprocess.run([uv, "lock", "-q", "--project", str(old)], check=True, capture_output=True)

    def six_block(text: str) -> str:
        m = re.search(r'\[\[package\]\]\nname = "six"\n.*?(?=\n\[\[package\]\]|\Z)', text, re.S)
        assert m is not None
        return m.group(0)

    current = (root / "uv.lock").read_text()
    (root / "uv.lock").write_text(current.replace(six_block(current), six_block((old / "uv.lock").read_text())))
    lock = lock_project(load_project(root), [AMD64], "3.11", cache)
    assert [(p.name, p.version) for p in lock.packages(AMD64)] == [("six", "1.16.0")]
    (root / "gpuship.lock").unlink()
    assert [
        p.version for p in lock_project(load_project(root, use_uv_lock=False), [AMD64], "3.11", cache).packages(AMD64)
    ] != ["1.16.0"]


def _cext_sdist(tmp_path: Path) -> Path:
    """A source-only package with a C extension, in a --find-links folder."""
    src = tmp_path / "cext"
    (src / "src").mkdir(parents=True)
    (src / "pyproject.toml").write_text(
        textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "gpuship-cext-demo"
        version = "0.1.0"
        """)
    )
    (src / "setup.py").write_text(
        'from setuptools import setup, Extension\nsetup(ext_modules=[Extension("gpuship_cext_demo", ["src/demo.c"])])\n'
    )
    (src / "src" / "demo.c").write_text(
        textwrap.dedent("""\
        #include <Python.h>
        static struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "gpuship_cext_demo", NULL, -1, NULL};
        PyMODINIT_FUNC PyInit_gpuship_cext_demo(void) { return PyModule_Create(&m); }
        """)
    )
    dist = tmp_path / "dist"
    subprocess.run(
        [tools.require("uv"), "build", "--sdist", "-q", "--out-dir", str(dist), str(src)],
        check=True,
        capture_output=True,
    )
    return dist


def test_source_only_packages(tmp_path: Path, cache: Cache) -> None:
    dist = _cext_sdist(tmp_path)
    root = tmp_path / "app"
    root.mkdir()
    # docopt publishes only a source distribution; it builds a pure-Python wheel, usable on every platform
    (root / "requirements.txt").write_text(f"--find-links {dist}\ndocopt==0.6.2\ngpuship-cext-demo\n")
    project = load_project(root)
    lock = lock_project(project, [AMD64], "3.11", cache)  # the build machine's own platform: fine
    pkgs = {p.name: p for p in lock.packages(AMD64)}
    assert pkgs["docopt"].sdist and pkgs["docopt"].filename == "docopt-0.6.2.tar.gz"
    assert pkgs["gpuship-cext-demo"].sdist and pkgs["gpuship-cext-demo"].url.startswith("file://")
    assert 'sdist = "docopt-0.6.2.tar.gz"' in (root / "gpuship.lock").read_text()

    # for arm64, the compiled one cannot be built here: a clear error names it and the platform
    (root / "gpuship.lock").unlink()
    with pytest.raises(NoWheelError) as exc:
        lock_project(project, [ARM64], "3.11", cache)
    assert exc.value.message.startswith("gpuship-cext-demo 0.1.0 has no wheel for linux/arm64/v8: it only ships source")
    assert "x86_64" in exc.value.message

    # the pure one alone is fine for arm64
    (root / "requirements.txt").write_text("docopt==0.6.2\n")
    lock = lock_project(load_project(root), [ARM64], "3.11", cache)
    assert [p.filename for p in lock.packages(ARM64)] == ["docopt-0.6.2.tar.gz"]


def test_planner_index_extra_requirements_and_constraints(tmp_path: Path, cache: Cache, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from gpuship.project import IndexOptions

    root = project_dir(tmp_path, ["six"])
    project = load_project(root)
    steps: list[str] = []
    lock = lock_project(
        project,
        [AMD64],
        "3.11",
        cache,
        extra_requirements=["idna"],
        constraints=["idna<3.5"],
        progress=_Steps(steps),
    )
    assert {p.name: p.version for p in lock.packages(AMD64)}["idna"].startswith("3.4")
    assert steps == ["lock linux/amd64"]
    # the planner's additions are inputs: without them the lock is stale
    with pytest.raises(ConfigError, match="out of date"):
        lock_project(project, [AMD64], "3.11", cache, locked=True)
    # an index given by the planner is used (here: one that refuses connections)
    (root / "gpuship.lock").unlink()
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    with pytest.raises(ResolveError, match="127.0.0.1:9"):
        lock_project(project, [AMD64], "3.11", cache, index=IndexOptions(index_url="http://127.0.0.1:9/simple"))


class _Steps:
    """A :class:`gpuship.progress.Progress` that keeps the steps."""

    def __init__(self, steps: list[str]) -> None:
        self.steps = steps

    def step(self, message: str) -> None:
        self.steps.append(message)

    def transfer(self, key: str, done: int, total: int | None = None, status: str | None = None) -> None:
        pass

    def clear(self) -> None:
        pass
