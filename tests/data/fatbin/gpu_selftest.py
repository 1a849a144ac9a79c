"""Prove on a real GPU that pruned libraries still load and run through the CUDA driver.

    uv run python tests/data/fatbin/gpu_selftest.py prepare DIR   # here: needs nvcc (builds, then prunes)
    uv run python tests/data/fatbin/gpu_selftest.py run DIR       # on the GPU host: needs only the driver
    DIR/run.sh                                                    # the same check without Python

``prepare`` builds the self-test libraries with make_fixtures.sh --gpu, prunes them with gpuship for several
targets, and writes DIR/expected.json: for each library, whether an H100-class GPU (compute capability 9.0)
must run its kernel (exit 0) or refuse it with cudaErrorNoKernelImageForDevice (209). ``run`` runs DIR/selftest
on each library and compares. The expectations hold for a 9.0 GPU (H100/H200/GH200).

It also takes a real NVIDIA library, nvJPEG for CUDA 13 from its PyPI wheel, prunes it for H100 and for A100, and
decodes sample.jpg on the GPU with each: the H100 build must give the very pixels the original gives, the A100
build must fail (its kernels are gone).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: (library built by make_fixtures.sh, targets to prune for or None, file name, result on a 9.0 GPU)
CASES = [
    ("libselftest_multi.so", None, "multi.so", 0),  # sm_80 sm_90 sm_100 + compute_100, untouched
    ("libselftest_multi.so", ["H100"], "multi_h100.so", 0),  # sm_90 only
    ("libselftest_multi.so", ["A100", "H100"], "multi_a100_h100.so", 0),  # sm_80 + sm_90
    ("libselftest_multi.so", ["A100"], "multi_a100.so", 209),  # sm_80 only: no kernel for 9.0
    ("libselftest_multi.so", ["B200"], "multi_b200.so", 209),  # sm_100 + compute_100: 9.0 cannot JIT 10.0 PTX
    ("libselftest_ptx80.so", ["H100"], "ptx80_h100.so", 0),  # compute_80 PTX only: the driver JIT-compiles it
]


NVJPEG_VARIANTS = {"orig": None, "h100": ["H100"], "a100": ["A100"]}


def prepare_nvjpeg(out: Path) -> None:
    """nvJPEG 13 as shipped, pruned for H100 and for A100, and a decoder (CUDA runtime linked in statically)."""
    import shutil

    sys.path.insert(0, str(HERE))
    from cudatools import NVJPEG_CU13, install_wheel

    from gpuship.slim import ArchSelection, prune_fatbins

    spec, member = NVJPEG_CU13
    wheel = install_wheel(spec, out / "nvjpeg-wheel")
    lib = (wheel / member).read_bytes()
    for name, targets in NVJPEG_VARIANTS.items():
        (out / name).mkdir(exist_ok=True)
        data = lib if targets is None else prune_fatbins(lib, ArchSelection.from_targets(targets)).data
        (out / name / Path(member).name).write_bytes(data)
    subprocess.run(
        [
            "nvcc",
            "-O2",
            "-cudart",
            "static",
            "-o",
            str(out / "nvjpeg_decode"),
            str(HERE / "nvjpeg_decode.c"),
            f"-I{wheel / Path(member).parent.parent / 'include'}",
            f"-L{out / 'orig'}",
            "-l:libnvjpeg.so.13",
        ],
        check=True,
    )
    shutil.copy(HERE / "sample.jpg", out / "sample.jpg")
    shutil.rmtree(wheel)


def run_nvjpeg(out: Path) -> int:
    results = {}
    for name in NVJPEG_VARIANTS:
        env = {"LD_LIBRARY_PATH": f"{out / name}:/usr/local/nvidia/lib64"}
        proc = subprocess.run(
            [str(out / "nvjpeg_decode"), str(out / "sample.jpg")], capture_output=True, text=True, timeout=120, env=env
        )
        results[name] = (proc.returncode, proc.stdout.strip())
        print(f"nvjpeg {name}: exit {proc.returncode}: {proc.stdout.strip()} {proc.stderr.strip()}")
    ok = results["orig"][0] == 0 and results["h100"] == results["orig"] and results["a100"][0] != 0
    print(f"{'ok  ' if ok else 'FAIL'} nvjpeg: pruned for H100 decodes the same pixels; pruned for A100 fails")
    return 0 if ok else 1


def prepare(out: Path) -> None:
    from gpuship.slim import ArchSelection, prune_fatbins

    subprocess.run(["bash", str(HERE / "make_fixtures.sh"), "--gpu", str(out)], check=True)
    prepare_nvjpeg(out)
    expected = {}
    for src, targets, name, rc in CASES:
        data = (out / src).read_bytes()
        kept = None
        if targets is not None:
            res = prune_fatbins(data, ArchSelection.from_targets(targets))
            data, kept = res.data, res.kept_archs
            print(
                f"{name}: kept {' '.join(res.kept_archs)}; dropped {' '.join(res.dropped_archs)}; saved {res.saved} B"
            )
        (out / name).write_bytes(data)
        (out / name).chmod(0o755)
        expected[name] = {"targets": targets, "kept": kept, "exit": rc}
    (out / "expected.json").write_text(json.dumps(expected, indent=2))
    lines = [
        "#!/bin/sh",
        "# Runs every self-test library on this GPU; exit 0 when each behaves as expected.json says.",
        'cd "$(dirname "$0")"',
        "fail=0",
    ]
    for name, exp in expected.items():
        want = "0" if exp["exit"] == 0 else "1"
        lines.append(
            f'./selftest "$PWD/{name}"; rc=$?; [ "$rc" = {want} ] || {{ echo "UNEXPECTED: {name} exit $rc"; fail=1; }}'
        )
    lines.append('[ "$fail" = 0 ] && echo "all pruned libraries behaved as expected"; exit $fail')
    (out / "run.sh").write_text("\n".join(lines) + "\n")
    (out / "run.sh").chmod(0o755)


def run(out: Path) -> int:
    expected = json.loads((out / "expected.json").read_text())
    bad = 0
    for name, exp in expected.items():
        proc = subprocess.run([str(out / "selftest"), str(out / name)], capture_output=True, text=True, timeout=120)
        line = (proc.stdout + proc.stderr).strip()
        got = line.rsplit("= ", 1)[-1] if "gpuship_selftest() = " in line else f"exit {proc.returncode}"
        ok = got == str(exp["exit"])
        bad += not ok
        print(
            f"{'ok  ' if ok else 'FAIL'} {name}: selftest returned {got}, expected {exp['exit']} (kept {exp['kept']})"
        )
    bad += run_nvjpeg(out)
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("prepare", "run"):
        sys.exit(__doc__)
    d = Path(sys.argv[2])
    if sys.argv[1] == "prepare":
        prepare(d)
    else:
        sys.exit(run(d))
