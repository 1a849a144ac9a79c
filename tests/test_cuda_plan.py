"""The CUDA planner over real cases (driver x GPU x framework), the impossible ones with their messages, and one
real resolution of a rewritten requirement set with uv against the package index."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpuship.cuda import GpuPlan, GpuSettings, plan_gpu
from gpuship.errors import ConfigError, GpuError

INDEX = "https://example.invalid/torch/whl/{tag}"  # a stand-in: the planner only formats it


def plan(reqs: list[str], platform: str = "linux/amd64", **table: Any) -> GpuPlan:
    return plan_gpu(reqs, GpuSettings.from_table({k.replace("_", "-"): v for k, v in table.items()}), platform)


def error(reqs: list[str], platform: str = "linux/amd64", **table: Any) -> GpuError:
    with pytest.raises(GpuError) as exc:
        plan(reqs, platform, **table)
    return exc.value


# -- the newest line the inputs allow -----------------------------------------------------------------------------


def test_h100_on_the_default_r580_driver_gets_cuda_13_0_and_pypi_torch() -> None:
    p = plan(["torch"], targets=["H100"])
    assert p.is_gpu and p.cuda == "13.0"
    assert p.requirements == ("torch>=2.11,<2.15",)  # PyPI's torch 2.11-2.14 is the CUDA 13.0 build
    assert p.index_urls == ()
    assert dict(p.env) == {
        "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
        "NVIDIA_REQUIRE_CUDA": "cuda>=13.0",
    }
    assert dict(p.labels) == {
        "io.gpuship.cuda": "13.0",
        "io.gpuship.min-driver": "580.65.06",
        "io.gpuship.frameworks": "torch",
        "io.gpuship.targets": "sm_90",
    }
    assert "cuda-toolkit==13.0.*" in p.constraints and "nvidia-cuda-nvrtc==13.0.*" in p.constraints
    text = "\n".join(p.explain())
    assert text.startswith("CUDA 13.0: the newest line")
    assert "H100 (sm_90)" in text and "min-driver not set" in text and "torch 2.11-2.14" in text


def test_the_gpu_hosts_exact_driver_580_159_04_gets_13_0() -> None:
    p = plan(["torch"], targets=["H100"], min_driver="580.159.04")
    assert p.cuda == "13.0" and p.min_driver == "580.65.06"


def test_a_newer_driver_allows_the_newest_line() -> None:
    p = plan(["torch"], targets=["H100"], min_driver="595")
    assert p.cuda == "13.2" and p.requirements == ("torch>=2.15,<2.16",)
    assert p.env["NVIDIA_REQUIRE_CUDA"] == "cuda>=13.2" and p.ptx_isa == "9.2"


def test_min_driver_535_keeps_torch_on_its_cuda_12_1_wheels() -> None:
    p = plan(["torch"], min_driver="535")
    assert p.cuda == "12.1" and p.requirements == ("torch>=2.1,<2.5",)
    assert "nvidia-cuda-runtime-cu12==12.1.*" in p.constraints and "cuda-bindings==12.*" in p.constraints


def test_min_driver_525_gives_a_12_x_line_for_cupy() -> None:
    p = plan(["numpy", "cupy"], min_driver="525")
    assert p.cuda == "12.0" and p.requirements == ("numpy", "cupy-cuda12x[ctk]")


def test_cupy_picks_cupy_cuda13x_on_driver_580() -> None:
    p = plan(["cupy>=13"], min_driver="580")
    assert p.cuda == "13.0" and p.requirements == ("cupy-cuda13x[ctk]>=13",)
    assert any("[ctk] brings the CUDA libraries" in line for line in p.explain())


def test_numba_cuda_gets_its_cuda_extra() -> None:
    assert plan(["numba-cuda>=0.20"]).requirements == ("numba-cuda[cu13]>=0.20",)
    assert plan(["numba-cuda>=0.20"], min_driver="570").requirements == ("numba-cuda[cu12]>=0.20",)
    # an explicit [cu12] keeps the project on CUDA 12 even where 13 would be allowed
    p = plan(["numba-cuda[cu12]"], min_driver="580")
    assert p.cuda == "12.9" and p.requirements == ("numba-cuda[cu12]",)
    assert any("libNVVM cannot be found" in line for line in plan(["numba-cuda"]).explain())


def test_v100_keeps_torch_on_cuda_12_6_which_still_has_sm_70() -> None:
    p = plan(["torch"], targets=["V100"])
    assert p.cuda == "12.6" and p.requirements == ("torch>=2.7,<2.8",)
    assert "sm_70" in p.archs["torch"].sass


def test_with_the_pytorch_index_v100_gets_the_newest_torch_built_for_cuda_12_6() -> None:
    p = plan(["torch"], targets=["V100"], torch_index=INDEX)
    assert p.cuda == "12.6" and p.requirements == ("torch>=2.6,<2.15",)
    assert p.index_urls == ("https://example.invalid/torch/whl/cu126",)
    assert any("index: torch for cu126" in line for line in p.explain())


def test_b200_needs_cuda_12_8_and_raises_the_driver_floor() -> None:
    p = plan(["torch"], targets=["B200"], min_driver="560")
    assert p.cuda == "12.8"  # hosts with a B200 run R570 or newer
    assert any("B200 (sm_100): hosts with it run driver 570" in line for line in p.explain())
    e = error(["torch"], targets=["B200"], cuda="12.6")
    assert "B200 (sm_100) needs CUDA 12.8-13.2" in e.message and 'cuda = "12.6"' in e.message


def test_cuda_12_frameworks_pin_torch_to_its_cuda_12_8_releases() -> None:
    p = plan(["torch>=2.6", "torchvision", "cupy-cuda12x", "numba-cuda[cu12]"], targets=["L4", "A100"])
    assert p.cuda == "12.8"
    assert p.requirements == ("torch>=2.8,<2.11", "torchvision", "cupy-cuda12x[ctk]", "numba-cuda[cu12]")
    assert p.labels["io.gpuship.frameworks"] == "torch,cupy,numba-cuda"


def test_jax_on_sm_70_stays_on_cuda_12() -> None:
    p = plan(["jax[cuda]"], targets=["sm_70"])
    assert p.cuda == "12.9" and p.requirements == ("jax[cuda12]",)


def test_jax_cuda13_on_sm_70_is_impossible() -> None:
    e = error(["jax[cuda13]"], targets=["sm_70"])
    assert "jax[cuda13] is the CUDA 13 build" in e.message and "sm_70" in e.message
    assert "CUDA 13.0 dropped" in e.message and e.hint


def test_driver_535_cannot_run_a_cuda_13_request() -> None:
    e = error(["torch"], min_driver="535", cuda="13")
    assert e.message.startswith("no CUDA line fits: driver 535 (min-driver) runs CUDA 11.8-12.2")
    assert 'cuda = "13" asks for CUDA 13.0-13.2' in e.message
    assert "raise min-driver" in (e.hint or "") and 'set cuda = "auto"' in (e.hint or "")
    assert "minor-version-compat" not in (e.hint or "")  # it cannot bridge a major


def test_k80_with_torch_says_cuda_11_and_torch_2_7() -> None:
    e = error(["torch"], targets=["K80"])
    assert "K80 (sm_37)" in e.message and "sm_37 needs CUDA 11.x" in e.message
    assert "the newest torch with CUDA 11 wheels is 2.7 (cu118" in e.message
    assert "torch-index" in (e.hint or "")


def test_k80_with_the_index_still_needs_minor_version_compat_for_r470() -> None:
    e = error(["torch"], targets=["K80"], torch_index=INDEX)
    assert "driver 470 (the last branch for K80)" in e.message
    assert "minor-version-compat = true to run CUDA 11.8" in (e.hint or "")
    p = plan(["torch"], targets=["K80"], torch_index=INDEX, minor_version_compat=True)
    assert p.cuda == "11.8" and p.requirements == ("torch>=2.1,<2.8",)
    assert p.index_urls == ("https://example.invalid/torch/whl/cu118",)
    assert p.env["NVIDIA_REQUIRE_CUDA"] == "cuda>=11.0" and p.min_driver == "450.80.02"


def test_an_explicit_k80_min_driver_above_r470_is_refused() -> None:
    with pytest.raises(GpuError, match="last driver branch for this GPU is R470"):
        plan(["torch"], targets=["K80"], min_driver="535")


def test_a_pinned_torch_variant_needs_the_index() -> None:
    e = error(["torch==2.7.1+cu118"])
    assert "torch-index" in (e.hint or "")
    p = plan(["torch==2.7.1+cu118"], torch_index=INDEX)
    assert p.cuda == "11.8" and p.index_urls[0].endswith("/cu118")


def test_thor_builds_for_arm64_on_cuda_13_as_sm_110() -> None:
    p = plan(["torch"], "linux/arm64", targets=["Thor"])
    assert p.cuda == "13.0" and p.labels["io.gpuship.targets"] == "sm_110"
    assert "sm_110" in p.archs["torch"].sass and p.platform == "linux/arm64/v8"
    with pytest.raises(GpuError, match="arm64"):
        plan(["torch"], "linux/amd64", targets=["Thor"])
    with pytest.raises(GpuError, match="renamed it sm_110"):
        plan(["torch"], "linux/arm64", targets=["sm_101"])


def test_jetson_orin_is_refused_with_the_way_out() -> None:
    e = error(["torch"], "linux/arm64", targets=["Jetson Orin"])
    assert "sm_87" in e.message and "Tegra" in e.message and "JetPack 6" in e.message
    assert "l4t" in (e.hint or "") and "Jetson wheel index" in (e.hint or "")


def test_arm64_torch_comes_only_from_its_cuda_13_wheels() -> None:
    p = plan(["torch"], "linux/arm64", targets=["GH200"])
    assert p.cuda == "13.0" and p.requirements == ("torch>=2.11,<2.15",)
    e = error(["torch<2.11"], "linux/arm64")
    assert "no CUDA wheel for aarch64" in e.message


def test_frameworks_on_different_cuda_majors_clash() -> None:
    e = error(["cupy-cuda12x", "numba-cuda[cu13]"])
    assert "cupy-cuda12x is the CUDA 12 build" in e.message and "numba-cuda[cu13] asks for cu13" in e.message


def test_cuda_bindings_get_the_lines_major() -> None:
    p = plan(["numpy>=1.26", "cuda-bindings>=12.9"], targets=["H100"])
    assert p.cuda == "13.0" and p.requirements == ("numpy>=1.26", "cuda-bindings>=12.9,==13.*")
    assert p.archs == {}  # no kernels of its own: gpuship-check compares the GPU with the targets


def test_no_gpu_framework_means_no_gpu_settings() -> None:
    p = plan(["numpy", "requests"])
    assert not p.is_gpu and p.env == {} and p.labels == {} and p.requirements == ("numpy", "requests")
    assert "no GPU framework" in p.explain()[0]
    assert not plan(["jax"]).is_gpu  # CPU jax without a [tool.gpuship.gpu] table
    assert plan(["jax"], targets=["H100"]).requirements == ("jax[cuda13]",)
    off = plan(["torch"], enabled=False)
    assert not off.is_gpu and off.requirements == ("torch",)


def test_markers_extras_and_option_lines_survive_the_rewrite() -> None:
    p = plan(["--extra-index-url https://example.invalid/simple", "cupy[all]>=13; sys_platform == 'linux'", "numpy"])
    assert p.requirements == (
        "--extra-index-url https://example.invalid/simple",
        'cupy-cuda13x[all,ctk]>=13; sys_platform == "linux"',
        "numpy",
    )


def test_minor_version_compat_allows_a_newer_line_with_a_warning() -> None:
    p = plan(["cupy"], min_driver="535", minor_version_compat=True)
    assert p.cuda == "12.9" and p.env["NVIDIA_REQUIRE_CUDA"] == "cuda>=12.0" and p.min_driver == "525.60.13"
    assert any("cannot JIT PTX newer" in line for line in p.explain())


# -- settings -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"target": ["H100"]}, "did you mean 'targets'"),
        ({"cuda": "12.7"}, "CUDA 12.7 is not a line gpuship can build"),
        ({"cuda": "14.0"}, "newer than its table"),
        ({"cuda": "twelve"}, 'must be "auto"'),
        ({"min-driver": "abc"}, "min-driver must be a driver version"),
        ({"targets": ["H100", "ZZ9"]}, "unknown GPU target 'ZZ9'"),
        ({"targets": "H100", "driver-capabilities": ["utility"]}, 'without "compute"'),
        ({"torch-index": "pytorch"}, "torch-index must be a URL"),
        ({"minor-version-compat": "yes"}, "must be true or false"),
        ({"enabled": "maybe"}, "enabled must be"),
    ],
)
def test_bad_settings_are_one_line_errors(table: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError) as exc:
        GpuSettings.from_table(table)
    assert match in exc.value.line()


def test_settings_parse_what_users_write() -> None:
    s = GpuSettings.from_table({"cuda": "cu128", "targets": ["H100", "sm_80", "H100"], "min-driver": 535})
    assert s.cuda == "12.8" and [t.sm for t in s.targets] == ["sm_90", "sm_80"] and str(s.min_driver) == "535"
    assert GpuSettings.from_table({"cuda": "13"}).cuda == "13"
    assert GpuSettings.from_table(None).cuda == "auto"


# -- a real resolution --------------------------------------------------------------------------------------------


def test_the_rewritten_requirements_resolve_to_one_copy_of_each_cuda_library(tmp_path: Path) -> None:
    """uv resolves torch + CuPy + numba-cuda + JAX for the plan's line against the real index: every CUDA library
    is the CUDA 13 one, and the toolkit-versioned ones are from 13.0."""
    p = plan(["torch", "cupy", "numba-cuda", "jax[cuda]"], targets=["H100"])
    (tmp_path / "req.in").write_text("\n".join(p.requirements) + "\n")
    (tmp_path / "constraints.txt").write_text("\n".join(p.constraints) + "\n")
    from gpuship.tools import require

    proc = subprocess.run(
        [
            require("uv"),
            "pip",
            "compile",
            str(tmp_path / "req.in"),
            "-c",
            str(tmp_path / "constraints.txt"),
            "--python-version",
            f"{sys.version_info[0]}.{sys.version_info[1]}",
            "--python-platform",
            "x86_64-manylinux_2_28",
            "--no-header",
            "--no-annotate",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    pins = dict(line.split("==", 1) for line in proc.stdout.split() if "==" in line)
    assert pins["torch"].startswith(("2.11.", "2.12.", "2.13.", "2.14."))
    assert pins["cuda-toolkit"].startswith("13.0.")
    for pkg in ("nvidia-cuda-runtime", "nvidia-cuda-nvrtc", "nvidia-nvjitlink", "nvidia-cuda-nvcc", "nvidia-nvvm"):
        assert pins[pkg].startswith("13.0."), (pkg, pins[pkg])
    assert "cupy-cuda13x" in pins and "jax-cuda13-plugin" in pins and pins["cuda-bindings"].startswith("13.")
    assert not [name for name in pins if name.endswith("-cu12") or name == "cupy-cuda12x"], pins
