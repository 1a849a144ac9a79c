"""Project inputs: pyproject (PEP 621 + extras), requirements files (-r/-c/markers/--hash/index options), a conda
environment.yml (seed 000's, translated to PyPI), and an existing uv.lock — each alone and mixed."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from gpuship import tools
from gpuship.errors import ConfigError
from gpuship.project import load_project
from gpuship.project.conda import conda_version_to_pep440, parse_conda_spec

SEED_000 = Path("/work/shared/seeds/000_58f99a0e4fdcdfd9.txt")

# The environment.yml of seed 000 (its "Dependencies and conda environment" section), verbatim.
SEED_000_ENV = """\
name: cuda-python
channels:
 - conda-forge
dependencies:
 - cudatoolkit=11.4
 - numpy
 - numba
 - black
 - click
 - grpcio
 - grpcio-tools
 - mypy_extensions
 - packaging
 - pathspec
 - platformdirs
 - protobuf
 - tomli
 - typing_extensions
"""


def write(root: Path, name: str, text: str) -> Path:
    p = root / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return p


def test_pyproject_dependencies_extras_and_metadata(tmp_path: Path) -> None:
    write(
        tmp_path,
        "pyproject.toml",
        """\
        [project]
        name = "demo-app"
        version = "1.2.3"
        description = "A demo"
        license = "MIT"
        requires-python = ">=3.11"
        dependencies = ["numpy>=1.26", "click; python_version >= '3.8'"]
        [project.optional-dependencies]
        gpu = ["cupy-cuda12x", "demo-app[yaml]"]
        yaml = ["pyyaml"]
        dev = ["pytest"]
        [project.urls]
        Source = "https://example.invalid/demo"
        [project.scripts]
        demo = "demo.cli:main"
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"
        [tool.gpuship]
        entrypoint = ["demo"]
        """,
    )
    plain = load_project(tmp_path)
    assert plain.requirements == ("numpy>=1.26", "click; python_version >= '3.8'")
    assert plain.name == "demo-app" and plain.version == "1.2.3" and plain.license == "MIT"
    assert plain.urls == {"Source": "https://example.invalid/demo"}
    assert plain.scripts == {"demo": "demo.cli:main"}
    assert plain.tool == {"entrypoint": ["demo"]}
    assert plain.is_package
    assert plain.python_constraints == (("pyproject.toml requires-python", ">=3.11"),)
    assert plain.sources == ("pyproject.toml",)

    gpu = load_project(tmp_path, extras=["gpu"])
    # the self-reference demo-app[yaml] pulls the yaml group in; dev stays out
    assert gpu.requirements == ("numpy>=1.26", "click; python_version >= '3.8'", "cupy-cuda12x", "pyyaml")
    assert gpu.extras == ("gpu",)

    with pytest.raises(ConfigError, match="unknown extra: cuda") as exc:
        load_project(tmp_path, extras=["cuda"])
    assert "dev, gpu, yaml" in (exc.value.hint or "")


def test_python_constraint_is_checked(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[project]\nname = "x"\nversion = "0"\nrequires-python = ">=3.12"\n')
    project = load_project(tmp_path)
    project.check_python("3.13")
    with pytest.raises(ConfigError, match=r"requires-python asks for Python >=3.12 but the base image has Python 3.11"):
        project.check_python("3.11")


def test_requirements_files_with_includes_constraints_markers_hashes(tmp_path: Path) -> None:
    write(
        tmp_path,
        "requirements.txt",
        """\
        # the app
        --index-url https://pypi.example.invalid/simple
        --extra-index-url https://extra.example.invalid/simple
        --find-links ./wheels
        -r base.txt
        -c constraints.txt
        requests[socks] >=2.31 ; python_version >= "3.9"  # a comment
        six==1.17.0 \\
            --hash=sha256:4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274
        --pre
        """,
    )
    write(tmp_path, "base.txt", "numpy\n-r more/extra.txt\n")
    write(tmp_path, "more/extra.txt", "click  # via -r inside -r\n")
    write(tmp_path, "constraints.txt", "numpy<3\n")
    write(tmp_path, "requirements-dev.txt", "pytest\n")
    p = load_project(tmp_path)
    # in file order, an included file's lines where its -r stands
    assert p.requirements == ("numpy", "click", 'requests[socks] >=2.31 ; python_version >= "3.9"', "six==1.17.0")
    assert [f.relative_to(tmp_path).as_posix() for f in p.requirement_files] == [
        "requirements.txt",
        "base.txt",
        "more/extra.txt",
    ]
    assert p.constraint_files == (tmp_path / "constraints.txt",)
    assert p.index.index_url == "https://pypi.example.invalid/simple"
    assert p.index.extra_index_urls == ("https://extra.example.invalid/simple",)
    assert p.index.find_links == (str(tmp_path / "wheels"),)
    assert "--pre" in p.uv_options and f"--find-links {tmp_path / 'wheels'}" in p.uv_options
    assert p.hashes == {"six": ("4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274",)}
    assert set(p.input_files) == {
        tmp_path / n for n in ("requirements.txt", "base.txt", "more/extra.txt", "constraints.txt")
    }
    assert "pytest" not in p.requirements  # requirements-dev.txt is not an input unless chosen

    dev = load_project(tmp_path, extras=["dev"])  # requirements-<extra>.txt is chosen by the extra
    assert dev.requirements[-1] == "pytest"

    # the lock key follows the content of an included file
    before = p.lock_key()
    write(tmp_path, "more/extra.txt", "click<9\n")
    assert load_project(tmp_path).lock_key() != before


def test_requirements_errors(tmp_path: Path) -> None:
    write(tmp_path, "requirements.txt", "-r missing.txt\n")
    with pytest.raises(ConfigError, match="requirements file missing.txt does not exist"):
        load_project(tmp_path)
    write(tmp_path, "requirements.txt", "./libs/mylib\n")
    with pytest.raises(ConfigError, match="local path requirement './libs/mylib' is not supported"):
        load_project(tmp_path)
    write(tmp_path, "requirements.txt", "numpy\n-e .\n")
    assert load_project(tmp_path).is_package  # "-e ." is the project itself, installed from its own wheel
    (tmp_path / "requirements.txt").unlink()
    with pytest.raises(ConfigError, match="has no pyproject.toml"):
        load_project(tmp_path)


def test_seed_000_environment_is_translated(tmp_path: Path) -> None:
    assert "cudatoolkit=11.4" in SEED_000.read_text()  # the seed still carries the file this test copies
    write(tmp_path, "environment.yml", SEED_000_ENV)
    p = load_project(tmp_path)
    assert p.name == "cuda-python"
    assert p.sources == ("environment.yml",)
    assert p.cuda_version == "11.4"
    cuda = [r for r in p.requirements if r.startswith("nvidia-")]
    # CUDA 11 user-space libraries from PyPI, including libNVVM (nvidia-cuda-nvcc-cu11) that numba needs
    assert {"nvidia-cuda-runtime-cu11", "nvidia-cuda-nvrtc-cu11", "nvidia-cuda-nvcc-cu11", "nvidia-cublas-cu11"} <= set(
        cuda
    )
    assert all(r.endswith("-cu11") for r in cuda)
    rest = [r for r in p.requirements if not r.startswith("nvidia-")]
    assert rest == [
        "numpy",
        "numba",
        "black",
        "click",
        "grpcio",
        "grpcio-tools",
        "mypy_extensions",
        "packaging",
        "pathspec",
        "platformdirs",
        "protobuf",
        "tomli",
        "typing_extensions",
    ]
    assert any("cudatoolkit=11.4" in n and "CUDA 11" in n for n in p.notes)


def test_conda_names_versions_pip_section_and_python_pin(tmp_path: Path) -> None:
    write(
        tmp_path,
        "environment.yml",
        """\
        name: vision
        channels: [pytorch, nvidia, conda-forge]
        dependencies:
          - python=3.11
          - pytorch::pytorch=2.5
          - pytorch-cuda=12.4
          - py-opencv>=4.8,<5
          - conda-forge::pyyaml=6.0.1=py311h459d7ec_1
          - libprotobuf
          - protobuf
          - _libgcc_mutex=0.1=conda_forge
          - libstdcxx-ng
          - cudnn
          - pip
          - pip:
              - tomli==2.0.1
              - -r extra-reqs.txt
              - --extra-index-url https://extra.example.invalid/simple
        """,
    )
    write(tmp_path, "extra-reqs.txt", "rich\n")
    p = load_project(tmp_path)
    reqs = p.requirements
    assert "torch==2.5.*" in reqs
    assert "opencv-python-headless>=4.8,<5" in reqs
    assert "pyyaml==6.0.1.*" in reqs
    assert "protobuf" in reqs and not any("libprotobuf" in r or "libstdcxx" in r or "mutex" in r for r in reqs)
    assert "nvidia-cudnn-cu12" in reqs and "nvidia-cuda-runtime-cu12" in reqs  # pytorch-cuda=12.4 -> CUDA 12
    assert reqs[-2:] == ("tomli==2.0.1", "rich")
    assert p.index.extra_index_urls == ("https://extra.example.invalid/simple",)
    assert p.python_constraints == (("environment.yml python", "==3.11.*"),)
    assert p.cuda_version == "12.4"
    assert any("skipped libprotobuf" in n for n in p.notes)
    with pytest.raises(
        ConfigError, match=r"environment.yml python asks for Python ==3.11.\* but the base image has Python 3.13"
    ):
        p.check_python("3.13")


def test_conda_python_patch_pin_is_checked_as_minor(tmp_path: Path) -> None:
    write(tmp_path, "environment.yml", "dependencies:\n  - python=3.11.4=h955ad1f_0\n  - six\n")
    p = load_project(tmp_path)
    assert p.python_constraints == (("environment.yml python", "==3.11.*"),)
    p.check_python("3.11")
    with pytest.raises(ConfigError):
        p.check_python("3.13")


def test_conda_only_packages_are_listed_at_once(tmp_path: Path) -> None:
    write(tmp_path, "environment.yml", "dependencies:\n  - numpy\n  - ffmpeg\n  - r-base=4.3\n  - git\n")
    with pytest.raises(ConfigError) as exc:
        load_project(tmp_path)
    assert exc.value.message == "environment.yml: conda-only packages with no PyPI equivalent: ffmpeg, r-base, git"
    assert "system-packages" in (exc.value.hint or "")
    # a user's own map row turns one into a PyPI package
    write(tmp_path, "environment.yml", "dependencies:\n  - numpy\n  - ffmpeg\n")
    p = load_project(tmp_path, conda_map={"ffmpeg": "imageio-ffmpeg"})
    assert p.requirements == ("numpy", "imageio-ffmpeg")


@pytest.mark.parametrize(
    ("conda", "pep440"),
    [
        ("", ""),
        ("=1.26", "==1.26.*"),
        ("==1.26.4", "==1.26.4"),
        (">=1.2,<2", ">=1.2,<2"),
        ("1.2.*", "==1.2.*"),
        ("1.2", "==1.2"),
        ("=1.2.*", "==1.2.*"),
    ],
)
def test_conda_version_specs(conda: str, pep440: str) -> None:
    assert conda_version_to_pep440(conda, where="t") == pep440


def test_conda_spec_forms() -> None:
    assert parse_conda_spec("conda-forge::numpy=1.26=py311h_0", where="t").specifier == "==1.26.*"
    assert parse_conda_spec("numpy 1.26.4 py311h_0", where="t").specifier == "==1.26.4"
    assert parse_conda_spec("numpy >=1.2, <2", where="t").specifier == ">=1.2,<2"
    assert parse_conda_spec("numpy[version='>=1.2']", where="t").specifier == ">=1.2"
    with pytest.raises(ConfigError, match="has no PyPI form"):
        parse_conda_spec("numpy 1.2|1.3", where="t")


def test_mixed_inputs_merge(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[project]\nname = "mixed"\nversion = "0.1"\ndependencies = ["numpy"]\n')
    write(tmp_path, "requirements.txt", "six\nnumpy\n")
    write(tmp_path, "environment.yml", "dependencies:\n  - python=3.11\n  - click\n")
    p = load_project(tmp_path)
    assert p.sources == ("pyproject.toml", "requirements", "environment.yml")
    assert p.requirements == ("numpy", "six", "click")  # detection order, each requirement once
    assert p.name == "mixed"


def test_dynamic_dependencies_from_setuptools_files(tmp_path: Path) -> None:
    write(
        tmp_path,
        "pyproject.toml",
        """\
        [project]
        name = "dyn"
        version = "0.1"
        dynamic = ["dependencies"]
        [tool.setuptools.dynamic]
        dependencies = {file = ["reqs/base.txt"]}
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        """,
    )
    write(tmp_path, "reqs/base.txt", "attrs>=23\n")
    p = load_project(tmp_path)
    assert p.requirements == ("attrs>=23",)
    assert p.requirement_files == (tmp_path / "reqs/base.txt",)


def test_uv_lock_is_honoured(tmp_path: Path) -> None:
    write(
        tmp_path,
        "pyproject.toml",
        """\
        [project]
        name = "locked-app"
        version = "0.1.0"
        requires-python = ">=3.11"
        dependencies = ["six", "click<8.2"]
        [project.optional-dependencies]
        yaml = ["pyyaml"]
        [dependency-groups]
        dev = ["iniconfig"]
        """,
    )
    subprocess.run(
        [tools.require("uv"), "lock", "--quiet", "--project", str(tmp_path)], check=True, capture_output=True
    )
    p = load_project(tmp_path, extras=["yaml"])
    assert "uv.lock" in p.sources and tmp_path / "uv.lock" in p.input_files
    pins = {pin.split("==")[0]: pin for pin in p.pins}
    assert set(pins) >= {"six", "click", "pyyaml"} and "iniconfig" not in pins  # no dev group
    assert all("==" in pin for pin in p.pins)
    assert pins["click"].startswith("click==8.1.")
    assert p.requirements == ("six", "click<8.2", "pyyaml")
    # a uv.lock that no longer matches pyproject.toml is refused with the way out
    write(tmp_path, "pyproject.toml", (tmp_path / "pyproject.toml").read_text().replace('"six",', '"six", "idna",'))
    with pytest.raises(ConfigError, match="uv.lock is out of date with pyproject.toml") as exc:
        load_project(tmp_path)
    assert "uv lock" in (exc.value.hint or "")
