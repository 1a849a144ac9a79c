"""CUDA compatibility data: literal tables, each row with its source.

Everything gpuship knows about CUDA toolkits, drivers, GPUs and the Python frameworks' CUDA wheels lives
here and nowhere else; :mod:`gpuship.cuda.compat`, :mod:`gpuship.cuda.gpus` and :mod:`gpuship.cuda.plan`
read it. A row that was inferred rather than read from its source says so in its comment.

Sources, cited by key in the comments below:

[CUDA-RN]     CUDA Toolkit release notes, table "CUDA Toolkit and Corresponding Driver Versions"
              (docs.nvidia.com/cuda/cuda-toolkit-release-notes), collected in /work/shared/notes/gpu-facts.md.
[CUDA-COMPAT] CUDA Compatibility guide (docs.nvidia.com/deploy/cuda-compatibility): minor-version compatibility,
              forward compatibility (cuda-compat), errors 803/804, PTX JIT limits.
[PTX-ISA]     PTX ISA documentation, "Release Notes" (PTX ISA version per CUDA release)
              (docs.nvidia.com/cuda/parallel-thread-execution). 13.0 -> 9.0 checked with ptxas 13.0.88 here
              ("Unsupported .version 9.1; current version is '9.0'").
[NVCC]        ``nvcc --list-gpu-code`` of the toolkit (13.0.88 run on the build host: sm_75 sm_80 sm_86 sm_87
              sm_88 sm_89 sm_90 sm_100 sm_110 sm_103 sm_120 sm_121) and the CUDA release notes' "deprecated /
              dropped architectures" sections.
[CC]          NVIDIA "CUDA GPUs - Compute Capability" table (developer.nvidia.com/cuda-gpus).
[DRV]         NVIDIA driver release notes: Kepler support ends with R470; R580 is the last branch for
              compute capability < 7.5 (gpu-facts.md).
[L4T]         dusty-nv/jetson-containers ``l4t_version.py`` (JetPack -> L4T -> CUDA).
[TORCH-META]  torch wheel METADATA (Requires-Dist) read with ``uv pip compile torch==X`` for
              x86_64-manylinux_2_28 and aarch64-manylinux_2_28 on 2026-11-23: which CUDA line PyPI's default
              torch wheel of each release is built against.
[TORCH-REL]   pytorch/pytorch RELEASE.md release-compatibility matrix (CUDA variants on the PyTorch index),
              via gpu-facts.md.
[TORCH-ARCH]  pytorch ``.ci/manywheel/build_cuda.sh`` and pytorch/builder ``manywheel/build_cuda.sh``
              (TORCH_CUDA_ARCH_LIST per CUDA variant), and gpu-facts.md ("Archs inside").
[PYPI-META]   The packages' own METADATA read with ``pip install --dry-run --report`` (cupy-cuda12x/13x 14.2.0,
              numba-cuda 0.30.4 and 0.20.0, jax 0.10.2, jax-cuda12/13-plugin 0.10.2, cuda-toolkit 12.8.1 and
              13.0.3.0, cuda-python 13.4.4, cuda-bindings 13.5.0) and ``pip index versions`` for release lists.
[JAX]         JAX installation guide: jax[cuda12] driver >= 525 and SM >= 5.2; jax[cuda13] driver >= 580 and
              SM >= 7.5 (gpu-facts.md).
[NUMBA-CUDA]  numba-cuda docs and NVIDIA/numba-cuda#69 ("NvvmSupportError: libNVVM cannot be found" = the
              cu12/cu13 extra is missing); CC 5.0-12.1 on CUDA 12, >= 7.5 on CUDA 13.
[CUPY]        CuPy installation guide: cupy-cuda11x only up to v13; cupy-cuda13x from v13.6; the [ctk] extra
              pulls the CUDA libraries from PyPI; NVRTC is needed at run time.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------------------------
# CUDA toolkits: minimum Linux driver (strict: everything, PTX JIT included), PTX ISA version, and the compute
# capabilities nvcc / NVRTC of that toolkit can build for.
# ---------------------------------------------------------------------------------------------------------------

#: CUDA toolkit -> minimum Linux x86_64 driver of its GA release.  [CUDA-RN]
MIN_DRIVER: dict[str, str] = {
    "11.0": "450.36.06",  # [CUDA-RN]
    "11.1": "455.23.05",  # [CUDA-RN]
    "11.2": "460.27.03",  # [CUDA-RN]
    "11.3": "465.19.01",  # [CUDA-RN]
    "11.4": "470.42.01",  # [CUDA-RN]
    "11.5": "495.29.05",  # [CUDA-RN]
    "11.6": "510.39.01",  # [CUDA-RN]
    "11.7": "515.43.04",  # [CUDA-RN]
    "11.8": "520.61.05",  # [CUDA-RN]
    "12.0": "525.60.13",  # [CUDA-RN]
    "12.1": "530.30.02",  # [CUDA-RN]
    "12.2": "535.54.03",  # [CUDA-RN]
    "12.3": "545.23.06",  # [CUDA-RN]
    "12.4": "550.54.14",  # [CUDA-RN]
    "12.5": "555.42.02",  # [CUDA-RN]
    "12.6": "560.28.03",  # [CUDA-RN]
    "12.8": "570.26",  # [CUDA-RN] (12.8 GA; 12.8 Update 1 needs 570.124.06)
    "12.9": "575.51.03",  # [CUDA-RN]
    "13.0": "580.65.06",  # [CUDA-RN]
    "13.1": "590.44.01",  # [CUDA-RN]
    "13.2": "595.45.04",  # [CUDA-RN]
}

#: Minor-version compatibility: every toolkit of a major version runs on this driver or newer, except PTX
#: that needs the driver's JIT (an older driver cannot JIT a newer PTX ISA: CUDA_ERROR_UNSUPPORTED_PTX_VERSION,
#: 222) and APIs newer than the driver.  [CUDA-COMPAT]
MINOR_VERSION_COMPAT_DRIVER: dict[int, str] = {
    11: "450.80.02",  # [CUDA-COMPAT]
    12: "525.60.13",  # [CUDA-COMPAT]
    13: "580.65.06",  # [CUDA-COMPAT]
}

#: CUDA toolkit -> PTX ISA version its compilers emit (and the newest its driver JITs).  [PTX-ISA]
PTX_ISA: dict[str, str] = {
    "11.0": "7.0",
    "11.1": "7.1",
    "11.2": "7.2",
    "11.3": "7.3",
    "11.4": "7.4",
    "11.5": "7.5",
    "11.6": "7.6",
    "11.7": "7.7",
    "11.8": "7.8",
    "12.0": "8.0",
    "12.1": "8.1",
    "12.2": "8.2",
    "12.3": "8.3",
    "12.4": "8.4",
    "12.5": "8.5",
    "12.6": "8.5",  # [PTX-ISA] 12.6 kept ISA 8.5
    "12.8": "8.7",  # [PTX-ISA] ISA 8.6 belonged to the unreleased 12.7
    "12.9": "8.8",
    "13.0": "9.0",  # [PTX-ISA] and ptxas 13.0.88 on the build host
    "13.1": "9.1",
    "13.2": "9.2",
}

_SM_11 = ("3.5", "3.7", "5.0", "5.2", "5.3", "6.0", "6.1", "6.2", "7.0", "7.2", "7.5", "8.0", "8.6")
_SM_12 = ("5.0", "5.2", "5.3", "6.0", "6.1", "6.2", "7.0", "7.2", "7.5", "8.0", "8.6", "8.7", "8.9", "9.0")
_SM_13 = ("7.5", "8.0", "8.6", "8.7", "8.8", "8.9", "9.0", "10.0", "10.3", "11.0", "12.0", "12.1")

#: CUDA toolkit -> compute capabilities its nvcc/NVRTC build for.  [NVCC]
ARCHS: dict[str, tuple[str, ...]] = {
    "11.0": _SM_11[:-1],  # 3.5-8.0 (3.0 dropped)  [NVCC]
    "11.1": _SM_11,  # adds 8.6
    "11.2": _SM_11,
    "11.3": _SM_11,
    "11.4": (*_SM_11, "8.7"),  # adds 8.7 (Orin)
    "11.5": (*_SM_11, "8.7"),
    "11.6": (*_SM_11, "8.7"),
    "11.7": (*_SM_11, "8.7"),
    "11.8": (*_SM_11, "8.7", "8.9", "9.0"),  # adds 8.9, 9.0  [NVCC]
    "12.0": _SM_12,  # >= 5.0: Kepler (3.5, 3.7) dropped  [NVCC]
    "12.1": _SM_12,
    "12.2": _SM_12,
    "12.3": _SM_12,
    "12.4": _SM_12,
    "12.5": _SM_12,
    "12.6": _SM_12,
    "12.8": (*_SM_12, "10.0", "10.1", "12.0"),  # adds Blackwell; Maxwell/Pascal/Volta deprecated  [NVCC]
    "12.9": (*_SM_12, "10.0", "10.1", "10.3", "12.0", "12.1"),  # adds 10.3 (B300), 12.1 (GB10)  [NVCC]
    "13.0": _SM_13,  # >= 7.5: Maxwell/Pascal/Volta removed; Thor sm_101 renamed sm_110  [NVCC] (nvcc 13.0.88)
    "13.1": _SM_13,  # inferred: no architecture changes announced after 13.0
    "13.2": _SM_13,  # inferred: no architecture changes announced after 13.0
}

#: Architectures a major version removed, for the error that names why a GPU cannot use it.  [NVCC]
DROPPED: dict[int, str] = {
    12: "CUDA 12.0 dropped Kepler (sm_35, sm_37)",
    13: "CUDA 13.0 dropped Maxwell, Pascal and Volta (sm_50 to sm_72)",
}

#: Compute capabilities whose names changed: Thor is sm_101 up to CUDA 12.9 and sm_110 from CUDA 13.0.  [NVCC]
RENAMED: dict[str, tuple[str, int]] = {"10.1": ("11.0", 13)}

# ---------------------------------------------------------------------------------------------------------------
# GPUs
# ---------------------------------------------------------------------------------------------------------------

#: GPU name -> (compute capability, kind). kind: "dgpu" (a PCIe/SXM GPU a CUDA wheel from PyPI can drive) or
#: "tegra" (Jetson: an integrated GPU on the L4T software stack).  [CC] unless noted.
GPUS: dict[str, tuple[str, str]] = {
    "K80": ("3.7", "dgpu"),
    "K40": ("3.5", "dgpu"),
    "M60": ("5.2", "dgpu"),
    "M40": ("5.2", "dgpu"),
    "P100": ("6.0", "dgpu"),
    "P40": ("6.1", "dgpu"),
    "P4": ("6.1", "dgpu"),
    "GTX 1080": ("6.1", "dgpu"),
    "V100": ("7.0", "dgpu"),
    "Titan V": ("7.0", "dgpu"),
    "T4": ("7.5", "dgpu"),
    "RTX 2080": ("7.5", "dgpu"),
    "A100": ("8.0", "dgpu"),
    "A30": ("8.0", "dgpu"),
    "A10": ("8.6", "dgpu"),
    "A10G": ("8.6", "dgpu"),
    "A40": ("8.6", "dgpu"),
    "A16": ("8.6", "dgpu"),
    "A2": ("8.6", "dgpu"),
    "RTX A6000": ("8.6", "dgpu"),
    "RTX 3090": ("8.6", "dgpu"),
    "RTX 3080": ("8.6", "dgpu"),
    "L4": ("8.9", "dgpu"),
    "L40": ("8.9", "dgpu"),
    "L40S": ("8.9", "dgpu"),
    "RTX 6000 Ada": ("8.9", "dgpu"),
    "RTX 4090": ("8.9", "dgpu"),
    "RTX 4080": ("8.9", "dgpu"),
    "H100": ("9.0", "dgpu"),
    "H200": ("9.0", "dgpu"),
    "H20": ("9.0", "dgpu"),
    "H800": ("9.0", "dgpu"),
    "GH200": ("9.0", "dgpu"),
    "B200": ("10.0", "dgpu"),
    "GB200": ("10.0", "dgpu"),
    "B300": ("10.3", "dgpu"),
    "GB300": ("10.3", "dgpu"),
    "RTX 5090": ("12.0", "dgpu"),
    "RTX 5080": ("12.0", "dgpu"),
    "RTX PRO 6000": ("12.0", "dgpu"),
    "GB10": ("12.1", "dgpu"),  # DGX Spark
    "DGX Spark": ("12.1", "dgpu"),
    "Jetson Xavier": ("7.2", "tegra"),
    "Jetson Orin": ("8.7", "tegra"),
    "Orin": ("8.7", "tegra"),
    "Thor": ("11.0", "tegra"),  # sm_110 under CUDA 13 (sm_101 under 12.8/12.9)  [NVCC]
    "Jetson Thor": ("11.0", "tegra"),
}

#: The last driver branch that supports a GPU generation (compute capability below the key).  [DRV]
LAST_DRIVER_BRANCH: tuple[tuple[str, str], ...] = (
    ("5.0", "470"),  # Kepler (3.x): R470 is the last branch  [DRV]
    ("7.5", "580"),  # Maxwell, Pascal, Volta (5.0-7.2): R580 is the last branch  [DRV]
)

#: Jetson: JetPack -> (L4T release, CUDA).  [L4T]
JETPACK: dict[str, tuple[str, str]] = {
    "4.6": ("r32.7", "10.2"),
    "5": ("r35", "11.4"),
    "6.0": ("r36.3", "12.2"),
    "6.1": ("r36.4", "12.6"),
    "6.2": ("r36.4", "12.6"),
    "7.0": ("r38.2", "13.0"),  # Thor
}

# ---------------------------------------------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------------------------------------------

#: torch release -> CUDA line of PyPI's default Linux wheel, per machine. None: PyPI's wheel for that machine is
#: CPU-only. Read from each release's METADATA (nvidia-cuda-runtime-cu1X / cuda-toolkit pins).  [TORCH-META]
TORCH_PYPI: dict[str, dict[str, str | None]] = {
    "2.0": {"x86_64": "11.7", "aarch64": None},
    "2.1": {"x86_64": "12.1", "aarch64": None},
    "2.2": {"x86_64": "12.1", "aarch64": None},
    "2.3": {"x86_64": "12.1", "aarch64": None},
    "2.4": {"x86_64": "12.1", "aarch64": None},
    "2.5": {"x86_64": "12.4", "aarch64": None},
    "2.6": {"x86_64": "12.4", "aarch64": None},
    "2.7": {"x86_64": "12.6", "aarch64": None},
    "2.8": {"x86_64": "12.8", "aarch64": None},
    "2.9": {"x86_64": "12.8", "aarch64": None},
    "2.10": {"x86_64": "12.8", "aarch64": None},
    "2.11": {"x86_64": "13.0", "aarch64": "13.0"},  # cuda-toolkit==13.0.2
    "2.12": {"x86_64": "13.0", "aarch64": "13.0"},
    "2.13": {"x86_64": "13.0", "aarch64": "13.0"},  # cuda-toolkit==13.0.3.0
    "2.14": {"x86_64": "13.0", "aarch64": "13.0"},
    "2.15": {"x86_64": "13.2", "aarch64": "13.2"},  # cuda-toolkit==13.2.2
}

#: torch release -> CUDA variants on the PyTorch wheel index (``cu118`` ...).  [TORCH-REL]
#: 2.15: not in the matrix gpu-facts.md was collected from; only its PyPI wheel (cu132) is known.
TORCH_INDEX: dict[str, tuple[str, ...]] = {
    "2.1": ("11.8", "12.1"),
    "2.2": ("11.8", "12.1"),
    "2.3": ("11.8", "12.1"),
    "2.4": ("11.8", "12.1", "12.4"),
    "2.5": ("11.8", "12.1", "12.4"),
    "2.6": ("11.8", "12.4", "12.6"),
    "2.7": ("11.8", "12.6", "12.8"),
    "2.8": ("12.6", "12.8", "12.9"),
    "2.9": ("12.6", "12.8", "13.0"),
    "2.10": ("12.6", "12.8", "13.0"),
    "2.11": ("12.6", "12.8", "13.0"),
    "2.12": ("12.6", "13.0", "13.2"),
    "2.13": ("12.6", "13.0", "13.2"),
    "2.14": ("12.6", "13.0", "13.2"),
}

#: Machines the PyTorch index has CUDA wheels for, per CUDA major: aarch64 (SBSA) is documented for the
#: CUDA 13 variants only; older aarch64 CUDA variants are not assumed.  [TORCH-REL] (gpu-facts.md)
TORCH_INDEX_MACHINES: dict[int, tuple[str, ...]] = {11: ("x86_64",), 12: ("x86_64",), 13: ("x86_64", "aarch64")}

#: (CUDA line, first torch release, last torch release) -> (SASS architectures, PTX architecture or "").
#: The rows pick the smaller set where sources disagree, so gpuship never promises a kernel a wheel lacks.
TORCH_ARCHS: tuple[tuple[str, str, str, tuple[str, ...], str], ...] = (
    # [TORCH-ARCH] pytorch/builder build_cuda.sh: base "3.7;5.0;6.0;7.0" + 11.8 "7.5;8.0;8.6;9.0"
    ("11.7", "2.0", "2.0", ("3.7", "5.0", "6.0", "7.0", "7.5", "8.0", "8.6"), ""),
    ("11.8", "2.0", "2.7", ("3.7", "5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0"), ""),
    # [TORCH-ARCH] builder: "5.0;6.0;7.0;7.5;8.0;8.6" + 9.0 for CUDA 12
    ("12.1", "2.1", "2.5", ("5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0"), ""),
    ("12.4", "2.4", "2.6", ("5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0"), ""),
    # [TORCH-ARCH] build_cuda.sh 12.6: "5.0;6.0;7.0;7.5;8.0;8.6;9.0"; gpu-facts: cu126 sm_50-90
    ("12.6", "2.6", "2.99", ("5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0"), ""),
    # 2.7 cu128 is the first Blackwell build; sm_50-70 were removed from cu128 in 2.8. For 2.7 gpuship assumes
    # only what 2.8 keeps (inferred, conservative).
    ("12.8", "2.7", "2.99", ("7.5", "8.0", "8.6", "9.0", "10.0", "12.0"), ""),
    # [TORCH-ARCH] build_cuda.sh 12.9: "...;10.0;12.0+PTX" (sm_70 kept only in later snapshots: not assumed)
    ("12.9", "2.8", "2.8", ("7.5", "8.0", "8.6", "9.0", "10.0", "12.0"), "12.0"),
    # gpu-facts: cu130 7.5-9.0, 10.0, 12.0(+PTX); torch 2.11.0+cu130 on an H100 (2026-11-23) reports
    # get_arch_list() == [sm_75, sm_80, sm_86, sm_90, sm_100, sm_120]: no compute_120, so no PTX is assumed.
    # aarch64 adds 11.0, see TORCH_ARCHS_AARCH64_EXTRA.
    ("13.0", "2.9", "2.99", ("7.5", "8.0", "8.6", "9.0", "10.0", "12.0"), ""),
    # cu132: inferred equal to cu130 (no source lists it)
    ("13.2", "2.12", "2.99", ("7.5", "8.0", "8.6", "9.0", "10.0", "12.0"), ""),
)

#: Extra SASS in torch's aarch64 CUDA 13 wheels (Thor).  [TORCH-ARCH] (gpu-facts.md)
TORCH_ARCHS_AARCH64_EXTRA: dict[str, tuple[str, ...]] = {"13.0": ("11.0",), "13.2": ("11.0",)}

#: Companion packages that must come from the same place (and the same CUDA variant) as torch.
TORCH_COMPANIONS = ("torchvision", "torchaudio")

#: The last CUDA 11 torch release, named in errors (cu118 on the PyTorch index).  [TORCH-REL]
TORCH_LAST_CUDA11 = "2.7"

# ---------------------------------------------------------------------------------------------------------------
# Other frameworks
# ---------------------------------------------------------------------------------------------------------------

#: CuPy: CUDA major -> (wheel package, extra that pulls the CUDA libraries from PyPI, first release, last).
CUPY: dict[int, tuple[str, str, str, str]] = {
    11: ("cupy-cuda11x", "", "11.0", "13.99"),  # [CUPY] only up to v13; no [ctk] extra  [PYPI-META]
    12: ("cupy-cuda12x", "ctk", "11.5", "99"),  # [PYPI-META] cupy-cuda12x[ctk] -> cuda-toolkit[...]==12.*
    13: ("cupy-cuda13x", "ctk", "13.6", "99"),  # [CUPY] first release 13.6.0  [PYPI-META]
}

#: numba-cuda: CUDA major -> extra. Without it: "NvvmSupportError: libNVVM cannot be found".  [NUMBA-CUDA]
NUMBA_CUDA_EXTRA: dict[int, str] = {12: "cu12", 13: "cu13"}  # [PYPI-META] numba-cuda 0.30.4 extras

#: JAX: CUDA major -> (extra, first jax release with it, minimum compute capability).  [JAX] [PYPI-META]
JAX_CUDA: dict[int, tuple[str, str, str]] = {
    12: ("cuda12", "0.4.26", "5.2"),
    13: ("cuda13", "0.7.2", "7.5"),  # jax-cuda13-plugin's first release is 0.7.2  [PYPI-META]
}

#: cuda-python / cuda-bindings: their major version is the CUDA major they bind.  [PYPI-META]
CUDA_BINDINGS_MAJORS: tuple[int, ...] = (11, 12, 13)

#: Packages whose versions follow the toolkit's (major.minor.patch): pinned to the chosen line so torch, CuPy,
#: numba-cuda and JAX share one copy of each library.  [PYPI-META] (cuda-toolkit 12.8.1 / 13.0.3.0 pins)
TOOLKIT_VERSIONED: dict[int, tuple[str, ...]] = {
    12: (
        "cuda-toolkit",
        "nvidia-cuda-runtime-cu12",
        "nvidia-cuda-nvrtc-cu12",
        "nvidia-cuda-nvcc-cu12",
        "nvidia-cuda-cupti-cu12",
        "nvidia-nvjitlink-cu12",
    ),
    13: (
        "cuda-toolkit",
        "nvidia-cuda-runtime",
        "nvidia-cuda-nvrtc",
        "nvidia-cuda-nvcc",
        "nvidia-cuda-crt",
        "nvidia-nvvm",
        "nvidia-cuda-cupti",
        "nvidia-nvjitlink",
    ),
}

#: Packages with one major line per CUDA major (pinned to ``==<major>.*``).  [PYPI-META]
MAJOR_VERSIONED = ("cuda-bindings", "cuda-python")

#: The CUDA lines gpuship chooses between: a line needs its driver row, its ISA row and PyPI CUDA wheels
#: (``cuda-toolkit`` exists for 11.8 and every 12.x/13.x minor).  [PYPI-META] ``pip index versions cuda-toolkit``
LINES: tuple[str, ...] = (
    "11.8",
    "12.0",
    "12.1",
    "12.2",
    "12.3",
    "12.4",
    "12.5",
    "12.6",
    "12.8",
    "12.9",
    "13.0",
    "13.1",
    "13.2",
)

#: The driver assumed when ``min-driver`` is not set: the R580 long-term branch (the last for GPUs below
#: sm_75, and the first of CUDA 13).  [DRV]
DEFAULT_MIN_DRIVER = "580"
