"""The CUDA compatibility rules: driver versions, PTX ISA, compute capabilities, GPU names.

The PTX ISA table is checked against the real toolkit on this machine (ptxas 13.0 is installed): the newest
ISA it accepts must be the table's ISA for its CUDA version, and one above must be refused.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gpuship.check import gpuship_check
from gpuship.cuda import data
from gpuship.cuda.compat import (
    DriverVersion,
    cc_str,
    cuda_for_driver,
    cuda_for_ptx_isa,
    driver_allows,
    driver_jits_ptx,
    driver_ptx_isa,
    last_branch_for,
    line_of,
    min_driver,
    min_driver_for_ptx_isa,
    ptx_isa,
    required_driver,
    runs_on,
    sm,
    toolkit_builds_for,
)
from gpuship.cuda.gpus import parse_target
from gpuship.errors import ConfigError

# -- CUDA toolkit -> PTX ISA -> minimum driver ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cuda", "isa"),
    [
        ("11.8", "7.8"),
        ("12.0", "8.0"),
        ("12.4", "8.4"),
        ("12.6", "8.5"),
        ("12.8", "8.7"),
        ("12.9", "8.8"),
        ("13.0", "9.0"),
    ],
)
def test_toolkit_to_ptx_isa(cuda: str, isa: str) -> None:
    assert ptx_isa(cuda) == isa


@pytest.mark.parametrize(
    ("isa", "cuda", "driver"),
    [
        ("7.0", "11.0", "450.36.06"),
        ("8.5", "12.5", "555.42.02"),  # 12.5 and 12.6 both emit 8.5: the older toolkit's driver suffices
        ("8.6", "12.8", "570.26"),  # 8.6 (the unreleased 12.7) first JITted by 12.8's driver
        ("8.7", "12.8", "570.26"),
        ("9.0", "13.0", "580.65.06"),
        ("9.1", "13.1", "590.44.01"),
    ],
)
def test_ptx_isa_to_min_driver(isa: str, cuda: str, driver: str) -> None:
    assert cuda_for_ptx_isa(isa) == cuda
    assert min_driver_for_ptx_isa(isa) == driver


def test_ptx_isa_newer_than_every_known_toolkit_has_no_driver() -> None:
    assert cuda_for_ptx_isa("9.9") is None and min_driver_for_ptx_isa("9.9") is None


@pytest.mark.parametrize(
    ("driver_cuda", "isa", "ok"),
    [
        ("13.0", "9.0", True),
        ("13.0", "9.1", False),
        ("13.0", "7.0", True),
        ("12.2", "8.7", False),
        ("12.8", "8.7", True),
        ("13.4", "9.4", True),
        ("13.4", "9.5", False),
    ],
)
def test_driver_jits_ptx_up_to_its_own_isa(driver_cuda: str, isa: str, ok: bool) -> None:
    assert driver_jits_ptx(driver_cuda, isa) is ok


def test_the_gpu_hosts_driver_is_cuda_13_0() -> None:
    # the lead's H100: driver 580.159.04 reports CUDA 13.0 and JITs PTX up to ISA 9.0
    assert cuda_for_driver("580.159.04") == "13.0"
    assert driver_ptx_isa("13.0") == "9.0"
    assert cuda_for_driver("535.230.02") == "12.2"
    assert cuda_for_driver("440.1") is None


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="needs ptxas (CUDA toolkit) on PATH")
def test_ptx_isa_table_matches_the_installed_ptxas(tmp_path: Path) -> None:
    version = subprocess.run(["ptxas", "--version"], capture_output=True, text=True, check=True).stdout
    cuda = re.search(r"release (\d+\.\d+)", version).group(1)  # type: ignore[union-attr]
    isa = data.PTX_ISA[cuda]
    major, minor = (int(x) for x in isa.split("."))
    good = tmp_path / "good.ptx"
    good.write_text(gpuship_check.ptx_source(isa, "sm_75"))
    assert subprocess.run(["ptxas", "-arch=sm_90", str(good), "-o", str(tmp_path / "g.cubin")]).returncode == 0
    bad = tmp_path / "bad.ptx"
    bad.write_text(gpuship_check.ptx_source(f"{major}.{minor + 1}", "sm_75"))
    proc = subprocess.run(
        ["ptxas", "-arch=sm_90", str(bad), "-o", str(tmp_path / "b.cubin")], capture_output=True, text=True
    )
    assert proc.returncode != 0 and f"current version is '{isa}'" in proc.stderr


# -- drivers -----------------------------------------------------------------------------------------------------


def test_a_branch_compares_on_the_branch_a_full_version_in_full() -> None:
    assert DriverVersion("580").at_least("580.65.06")  # "580" means the R580 branch
    assert not DriverVersion("580.40.01").at_least("580.65.06")  # a pre-release 580 driver does not run CUDA 13.0
    assert DriverVersion("570.124.06").at_least("570.26") and not DriverVersion("570.124.06").at_least("575.51.03")


@pytest.mark.parametrize("bad", ["abc", "12.x", "", "5"])
def test_bad_driver_versions_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        DriverVersion.parse(bad)


def test_minor_version_compatibility_lowers_the_driver_floor_to_the_major() -> None:
    assert required_driver("12.8") == "570.26"
    assert required_driver("12.8", minor_version_compat=True) == "525.60.13"
    assert not driver_allows(DriverVersion("535"), "12.8") and driver_allows(
        DriverVersion("535"), "12.8", minor_version_compat=True
    )
    assert not driver_allows(DriverVersion("535"), "13.0", minor_version_compat=True)  # never across a major
    assert min_driver("11.8") == "520.61.05"


def test_last_driver_branch_of_old_gpus() -> None:
    assert last_branch_for("3.7") == "470" and last_branch_for("7.0") == "580" and last_branch_for("7.5") is None


# -- architectures and GPUs --------------------------------------------------------------------------------------


def test_toolkits_drop_and_add_architectures() -> None:
    assert toolkit_builds_for("11.8", "3.7") and not toolkit_builds_for("12.0", "3.7")  # Kepler gone in 12.0
    assert toolkit_builds_for("12.9", "7.0") and not toolkit_builds_for("13.0", "7.0")  # Volta gone in 13.0
    assert not toolkit_builds_for("12.6", "10.0") and toolkit_builds_for("12.8", "10.0")  # Blackwell from 12.8
    assert toolkit_builds_for("12.8", "10.1") and not toolkit_builds_for("13.0", "10.1")  # Thor renamed ...
    assert toolkit_builds_for("13.0", "11.0")  # ... sm_110 under CUDA 13
    assert toolkit_builds_for("13.0", "8.7")  # nvcc 13.0 still builds for Orin


def test_installed_nvcc_lists_the_archs_of_its_row() -> None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("needs nvcc on PATH")
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    cuda = line_of(re.search(r"release (\d+\.\d+)", out).group(1))  # type: ignore[union-attr]
    codes = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(cc_str(c) for c in codes) == sorted(data.ARCHS[cuda])


def test_sass_runs_on_same_major_higher_minor_ptx_on_newer() -> None:
    assert runs_on("8.6", ["8.0"]) and runs_on("8.9", ["8.0", "9.0"])
    assert not runs_on("9.0", ["8.0", "8.6"]) and not runs_on("12.0", ["10.0"])
    assert runs_on("12.1", ["9.0"], ptx="12.0") and not runs_on("7.0", ["7.5"], ptx="12.0")


@pytest.mark.parametrize(
    ("text", "name", "cc"),
    [
        ("H100", "H100", "9.0"),
        ("NVIDIA H100 80GB HBM3", "H100", "9.0"),
        ("h200", "H200", "9.0"),
        ("GH200", "GH200", "9.0"),
        ("A100-SXM4-40GB", "A100", "8.0"),
        ("A10", "A10", "8.6"),
        ("A10G", "A10G", "8.6"),
        ("L4", "L4", "8.9"),
        ("L40S", "L40S", "8.9"),
        ("Tesla T4", "T4", "7.5"),
        ("V100", "V100", "7.0"),
        ("K80", "K80", "3.7"),
        ("P100", "P100", "6.0"),
        ("A30", "A30", "8.0"),
        ("L40", "L40", "8.9"),
        ("B200", "B200", "10.0"),
        ("B300", "B300", "10.3"),
        ("GeForce RTX 3090", "RTX 3090", "8.6"),
        ("rtx4090", "RTX 4090", "8.9"),
        ("RTX 5090", "RTX 5090", "12.0"),
        ("Jetson AGX Orin", "Jetson Orin", "8.7"),
        ("Thor", "Thor", "11.0"),
        ("sm_80", "sm_80", "8.0"),
        ("sm_90a", "sm_90", "9.0"),
        ("8.9", "sm_89", "8.9"),
        ("compute_120", "sm_120", "12.0"),
        ("sm_110", "sm_110", "11.0"),
    ],
)
def test_gpu_names_and_architectures(text: str, name: str, cc: str) -> None:
    t = parse_target(text)
    assert (t.name, t.cc) == (name, cc)
    assert t.sm == sm(cc)


def test_unknown_gpu_names_say_what_to_do() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_target("H1000X")
    assert "H1000X" in exc.value.message and exc.value.hint
    with pytest.raises(ConfigError, match="no CUDA toolkit"):
        parse_target("sm_99")


def test_the_check_scripts_tables_are_the_datas() -> None:
    # gpuship_check.py is standard-library only, so it carries its own copies; they must not drift
    assert gpuship_check.PTX_ISA == data.PTX_ISA
    assert gpuship_check.MIN_DRIVER == data.MIN_DRIVER
    for cuda in ("12.6", "13.0", "13.3"):
        assert gpuship_check.driver_ptx_isa(cuda) == driver_ptx_isa(cuda)
