"""A registry image as the base of a build: its Python packages are kept, never replaced behind the user's back.

The base is made here: gpuship's own Debian bookworm base plus a layer with numpy 1.26.4 installed for real
(uv pip install --target) into /usr/lib/python3/dist-packages with idna 3.6, and ``nv-tool 2.0.0+nv24.3``, a distribution no
index serves (like NGC's ``torch 2.3.0a0+40ec155e58``) that requires six; pushed to a real registry on loopback
(Debian's docker-registry, as in the other registry tests) in Docker's media-type family. Projects then build
on ``127.0.0.1:PORT/test/base:1`` with the real CLI, and the images run in the real Docker Engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from build_support import gpuship, one_error_line
from gpuship.cache import Cache
from gpuship.errors import ConfigError
from gpuship.oci import Entry, Family, append_layers, build_layer, empty_image, entries_from_dir, with_family
from gpuship.registry import push
from gpuship.sources.registry_base import is_registry_reference, registry_base
from gpuship.uv import run_uv
from test_registry_support import LocalRegistry, have_tools

pytestmark = [pytest.mark.registry, pytest.mark.docker]

NUMPY = "1.26.4"
DIST = "usr/lib/python3/dist-packages"
NV_TOOL = "2.0.0+nv24.3"
IDNA = "3.6"


def nv_tool_entries() -> list[Entry]:
    meta = f"Metadata-Version: 2.1\nName: nv-tool\nVersion: {NV_TOOL}\nRequires-Dist: six>=1.16\n\nA tool.\n"
    return [
        Entry.file(f"{DIST}/nv_tool.py", b"import six\nVERSION = 'nv'\n"),
        Entry.file(f"{DIST}/nv_tool-{NV_TOOL}.dist-info/METADATA", meta.encode()),
        Entry.file(f"{DIST}/nv_tool-{NV_TOOL}.dist-info/RECORD", b""),
    ]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    have_tools()
    reg = LocalRegistry(tmp_path_factory.mktemp("base-registry")).start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def numpy_base(registry: LocalRegistry, shared_cache: Cache, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``127.0.0.1:PORT/test/base:1``: the Debian base + numpy 1.26.4 in dist-packages, Docker media types."""
    from gpuship.sources.debian import build_base

    base = build_base("debian-bookworm", "linux/amd64", cache=shared_cache)
    target = tmp_path_factory.mktemp("numpy-target")
    run_uv(
        [
            "pip",
            "install",
            "--target",
            str(target),
            f"numpy=={NUMPY}",
            f"idna=={IDNA}",
            "--no-deps",
            "--python-platform",
            "x86_64-manylinux_2_36",
            "--python-version",
            "3.11",
            "--quiet",
        ],
        what="installing numpy for the test base",
    )
    entries = [*entries_from_dir(target, DIST, include=lambda rel: not rel.startswith("bin")), *nv_tool_entries()]
    numpy_layer = build_layer(entries, shared_cache, comment=f"numpy {NUMPY} and nv-tool in dist-packages")
    img = append_layers(empty_image("linux/amd64", base.config), [*base.layers, numpy_layer])
    ref = f"{registry.host}/test/base:1"
    from gpuship.oci.compress import for_transport

    # gzip layers, as a base on a registry has them (push sends an image's layers as they are)
    push(with_family(for_transport(img, "gzip"), Family.DOCKER), ref, cache=shared_cache, insecure=True)
    return ref


def _project(root: Path, deps: list[str], extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        "[project]\nname = 'on-base'\nversion = '1.0'\nrequires-python = '>=3.11'\n"
        f"dependencies = {json.dumps(deps)}\n\n[tool.gpuship]\nentrypoint = ['python', 'main.py']\n{extra}"
    )
    (root / "main.py").write_text(
        "import numpy, six, nv_tool\nprint('numpy', numpy.__version__, numpy.__file__)\nprint('six', six.__file__)\n"
        "print('nv_tool', nv_tool.__file__)\n"
    )
    return root


def _env(registry: LocalRegistry) -> dict[str, str]:
    return {"GPUSHIP_INSECURE_REGISTRIES": registry.host}


def test_registry_base_reads_python_dpkg_and_constraints(numpy_base: str, shared_cache: Cache, monkeypatch) -> None:
    monkeypatch.setenv("GPUSHIP_INSECURE_REGISTRIES", numpy_base.split("/")[0])
    assert is_registry_reference(numpy_base) and not is_registry_reference("debian-bookworm")
    rb = registry_base(numpy_base, "linux/amd64", shared_cache)
    assert (rb.python.version, rb.python.executable) == ("3.11", "/usr/bin/python3")
    assert rb.facts.distributions["numpy"] == NUMPY and rb.facts.os_id == "debian 12"
    assert rb.constraints() == [f"idna=={IDNA}", f"numpy=={NUMPY}", f"nv-tool=={NV_TOOL}"]
    assert rb.constraints(replace=["NumPy"]) == [f"idna=={IDNA}", f"nv-tool=={NV_TOOL}"]
    assert rb.scan.requires["nv-tool"] == ("Requires-Dist: six>=1.16",)
    wheels = sorted(p.name for p in rb.lock_options(shared_cache)["installed_wheels"].iterdir())
    assert wheels == [
        f"idna-{IDNA}-py3-none-any.whl",
        f"numpy-{NUMPY}-py3-none-any.whl",
        f"nv_tool-{NV_TOOL}-py3-none-any.whl",
    ]
    assert rb.location("numpy") == f"/{DIST}"
    assert "libc6" in [n for n, _, _ in rb.packages] and rb.glibc == "2.36"
    assert rb.links["bin"] == "usr/bin" and rb.dropped is None
    assert rb.image.family is Family.DOCKER and len(rb.layers) == 4
    assert rb.pinned.startswith(numpy_base + "@sha256:")
    rb.check_requirements(["numpy>=1.26,<2", "six"])  # satisfied: no error
    with pytest.raises(Exception) as info:
        rb.check_requirements(["numpy>=2; python_version >= '3.8'"])
    assert "numpy 1.26.4 (in /usr/lib/python3/dist-packages)" in str(info.value)


def test_a_base_without_python_is_refused(registry: LocalRegistry, cache: Cache, monkeypatch) -> None:
    monkeypatch.setenv("GPUSHIP_INSECURE_REGISTRIES", registry.host)
    img = append_layers(
        empty_image("linux/amd64"), [build_layer([Entry.file("etc/os-release", b"ID=debian\nVERSION_ID=12\n")], cache)]
    )
    push(img, f"{registry.host}/test/nopython:1", cache=cache, insecure=True)
    with pytest.raises(ConfigError, match="has no Python 3"):
        registry_base(f"{registry.host}/test/nopython:1", "linux/amd64", cache)


def test_build_on_the_base_keeps_its_numpy(
    numpy_base: str, registry: LocalRegistry, shared_cache: Cache, tmp_path: Path, docker
) -> None:
    # nv-tool is not on any index: the lock takes the base's, and six because the base's nv-tool requires it
    project = _project(tmp_path / "proj", ["numpy>=1.26,<2", "nv-tool>=2"], f"base = '{numpy_base}'\n")
    archive, layout = tmp_path / "img.tar", tmp_path / "layout"
    proc = gpuship(
        "build",
        str(project),
        "-o",
        f"docker-archive:{archive},oci:{layout}",
        "--report",
        str(tmp_path / "report.json"),
        cache=shared_cache.root,
        env=_env(registry),
    )
    assert proc.returncode == 0, proc.stderr
    lock = (project / "gpuship.lock").read_text()
    assert f'version = "{NUMPY}"' in lock  # the lock pins the base's numpy (a constraint) ...
    report = json.loads((tmp_path / "report.json").read_text())
    plat = report["platforms"][0]
    dists = dict(plat["python_distributions"])
    assert f'version = "{NV_TOOL}"' in lock
    assert "numpy" not in dists and "nv-tool" not in dists and "six" in dists  # ... and does not install it again
    assert [layer["group"] for layer in plat["layers"]][:4] == ["base"] * 4

    # the base's layers byte for byte, below ours; Docker's media types throughout (the base's family)
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
    from gpuship.registry import pull_image

    pulled = pull_image(numpy_base, "linux/amd64", Cache(tmp_path / "fresh"), insecure=True)
    assert [layer["digest"] for layer in manifest["layers"][:4]] == [layer.digest for layer in pulled.layers]
    config = json.loads((layout / "blobs/sha256" / manifest["config"]["digest"][7:]).read_bytes())
    env = dict(e.split("=", 1) for e in config["config"]["Env"])
    assert env["PATH"].startswith("/opt/venv/bin:") and env["LANG"] == "C.UTF-8"  # the base's env under ours

    with docker.loaded(archive) as ref:
        out = docker.run("run", "--rm", ref).stdout
        cfg = docker.python(
            ref,
            "import sys, glob; print(open('/opt/venv/pyvenv.cfg').read());"
            "print(glob.glob('/opt/venv/lib/python3.11/site-packages/numpy*'))",
        )
    assert f"numpy {NUMPY} /usr/lib/python3/dist-packages/numpy/__init__.py" in out
    assert "six /opt/venv/lib/python3.11/site-packages/six.py" in out
    assert "nv_tool /usr/lib/python3/dist-packages/nv_tool.py" in out
    assert "include-system-site-packages = true" in cfg and "home = /usr/bin" in cfg
    assert "[]" in cfg  # no second numpy in the venv


@pytest.mark.parametrize("requirement", ["numpy==2.1.0", "numpy>=2"])
def test_a_requirement_that_would_replace_the_base_numpy_fails_clearly(
    requirement: str, numpy_base: str, registry: LocalRegistry, shared_cache: Cache, tmp_path: Path
) -> None:
    project = _project(tmp_path / "proj", [requirement, "six"], f"base = '{numpy_base}'\n")
    proc = gpuship("build", str(project), "-o", f"oci:{tmp_path / 'out'}", cache=shared_cache.root, env=_env(registry))
    line = one_error_line(proc)
    assert (
        f"{requirement} is required but the base image {numpy_base} has numpy {NUMPY} (in /usr/lib/python3/dist-packages)"
        in line
    )
    assert "it would be replaced" in line and "relax the requirement" in line
    assert f"choose a base with numpy {requirement[5:]}" in line and 'replace-base-packages = ["numpy"]' in line
    assert not (tmp_path / "out").exists() and not (project / "gpuship.lock").exists()


def test_unknown_profile_typo_is_not_pulled(tmp_path: Path, shared_cache: Cache) -> None:
    project = _project(tmp_path / "proj", ["six"], "base = 'debian-bokworm'\n")
    line = one_error_line(gpuship("build", str(project), cache=shared_cache.root))
    assert "unknown base 'debian-bokworm'" in line and "did you mean debian-bookworm" in line


def test_system_packages_on_a_registry_base_are_refused_before_a_pull(tmp_path: Path, shared_cache: Cache) -> None:
    # the registry's host does not resolve: the refusal must come from the planner before any pull
    project = _project(
        tmp_path / "proj", ["six"], "base = 'registry.invalid/team/base:1'\nsystem-packages = ['curl']\n"
    )
    line = one_error_line(gpuship("build", str(project), cache=shared_cache.root))
    assert "system-packages needs a Debian profile base" in line and "registry.invalid/team/base:1" in line


def test_replace_base_packages_installs_over_the_base(
    numpy_base: str, registry: LocalRegistry, shared_cache: Cache, tmp_path: Path, docker
) -> None:
    """The way out the error names: the project's idna goes into the venv, which comes first on sys.path."""
    project = _project(tmp_path / "proj", ["idna==3.7", "six"], f"base = '{numpy_base}'\n")
    assert "idna==3.7 is required but the base image" in one_error_line(
        gpuship("build", str(project), "-o", f"oci:{tmp_path / 'x'}", cache=shared_cache.root, env=_env(registry))
    )
    project = _project(
        tmp_path / "proj", ["idna==3.7", "six"], f"base = '{numpy_base}'\nreplace-base-packages = ['idna']\n"
    )
    archive = tmp_path / "img.tar"
    proc = gpuship(
        "build", str(project), "-o", f"docker-archive:{archive}", cache=shared_cache.root, env=_env(registry)
    )
    assert proc.returncode == 0, proc.stderr
    with docker.loaded(archive) as ref:
        out = docker.python(ref, "import idna, numpy; print(idna.__version__, idna.__file__, numpy.__version__)")
    assert out.strip() == f"3.7 /opt/venv/lib/python3.11/site-packages/idna/__init__.py {NUMPY}"


def test_a_library_the_base_lacks_is_a_build_error(
    numpy_base: str, registry: LocalRegistry, shared_cache: Cache, tmp_path: Path
) -> None:
    """numpy 2.1.0 needs libstdc++, which this base does not have; find-libdeps cannot add .debs to a registry base."""
    project = _project(
        tmp_path / "proj", ["numpy==2.1.0"], f"base = '{numpy_base}'\nreplace-base-packages = ['numpy']\n"
    )
    line = one_error_line(
        gpuship("build", str(project), "-o", f"oci:{tmp_path / 'out'}", cache=shared_cache.root, env=_env(registry))
    )
    assert (
        "needs libstdc++.so.6, which the base image" in line and "/opt/venv/lib/python3.11/site-packages/numpy" in line
    )
    assert "find-libdeps = false" in line and not (tmp_path / "out").exists()
