"""On a real GPU host: the built-in runner injects the NVIDIA driver and CUDA works inside the container.

Opt-in (``GPUSHIP_GPU_TESTS=1``, marked slow): CI has no GPU. With the variable set, a host without a GPU is a
failure, not a skip. Needs no network: the image is made from the host's own ``python3`` (the interpreter, its
shared libraries and its standard library), so it is a real glibc userland that can ``dlopen("libcuda.so.1")``
— which only succeeds if the runner bound the driver in, ran ldconfig, and made the device nodes.

Run it on the GPU host as root::

    GPUSHIP_GPU_TESTS=1 python3 -m pytest -m slow tests/test_run_gpu_host.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.errors import GpuError
from gpuship.oci import Entry, ImageConfig, append_layers, build_layer, empty_image, entries_from_dir
from gpuship.oci.entry import rebase_through_links
from gpuship.oci.image import Image
from gpuship.run import RunOptions, discover, run_image

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("GPUSHIP_GPU_TESTS"), reason="GPU host test: set GPUSHIP_GPU_TESTS=1"),
]

MERGED_USR = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
SKIP_STDLIB = {
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "__pycache__",
    "site-packages",
    "dist-packages",
    "pydoc_data",
}

CUDA_PROBE = r"""
import ctypes, sys
cuda = ctypes.CDLL("libcuda.so.1")
rc = cuda.cuInit(0)
if rc != 0:
    print(f"cuInit={rc}"); sys.exit(3)
n, v, dev, ctx, ptr = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
cuda.cuDeviceGetCount(ctypes.byref(n)); cuda.cuDriverGetVersion(ctypes.byref(v))
cuda.cuDeviceGet(ctypes.byref(dev), 0)
name = ctypes.create_string_buffer(128); cuda.cuDeviceGetName(name, 128, dev)
assert cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) == 0
assert cuda.cuCtxSetCurrent(ctx) == 0
assert cuda.cuMemAlloc_v2(ctypes.byref(ptr), 1 << 20) == 0 and ptr.value
assert cuda.cuMemFree_v2(ptr) == 0
print(f"count={n.value} driver={v.value} name={name.value.decode()} alloc=ok")
"""


def _ldd(paths: list[str]) -> set[str]:
    libs: set[str] = set()
    for p in paths:
        out = subprocess.run(["ldd", p], capture_output=True, text=True).stdout
        for m in re.finditer(r"(/\S+)\s+\(0x", out):
            libs.add(m.group(1))
    return libs


def host_python_image(cache: Cache) -> Image:
    """The host's python3 as a one-layer image (merged /usr, ld.so.conf for the multiarch directory)."""
    exe = os.path.realpath(sys.executable)
    stdlib = sysconfig.get_paths()["stdlib"]
    dynload = Path(stdlib) / "lib-dynload"
    # the interpreter's libraries, and the glibc pieces the driver's libcuda and nvidia-smi load (libpthread, libdl,
    # librt, libm: a real Debian image has them all)
    drv = discover().driver
    driver_files = (
        [f.path for f in (drv.libraries + drv.binaries) if f.name in ("libcuda", "nvidia-smi")] if drv else []
    )
    libs = _ldd([exe, *map(str, dynload.glob("*.so")), *driver_files])
    libs = {p for p in libs if "nvidia" not in p and "libcuda" not in p}
    entries: list[Entry] = [Entry.symlink(k, v) for k, v in MERGED_USR.items()]
    seen: set[str] = set()
    for path in sorted(libs | {exe}):
        real = os.path.realpath(path)
        target = rebase_through_links(real.lstrip("/"), MERGED_USR)
        if target not in seen:
            entries.append(Entry.file(target, Path(real), mode=0o755))
            seen.add(target)
        link = rebase_through_links(path.lstrip("/"), MERGED_USR)
        if link != target and link not in seen:
            entries.append(Entry.symlink(link, real))
            seen.add(link)
    entries.append(Entry.symlink("usr/bin/python3", "/" + rebase_through_links(exe.lstrip("/"), MERGED_USR)))
    entries += list(
        entries_from_dir(
            stdlib,
            rebase_through_links(stdlib.lstrip("/"), MERGED_USR),
            include=lambda rel: rel.split("/")[0] not in SKIP_STDLIB and "__pycache__" not in rel,
        )
    )
    arch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    entries += [
        Entry.file("etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n"),
        Entry.file(f"etc/ld.so.conf.d/{arch}.conf", f"/usr/local/lib/{arch}\n/lib/{arch}\n/usr/lib/{arch}\n"),
        Entry.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532::/home/nonroot:/bin/sh\n"),
        Entry.file("etc/group", "root:x:0:\nnonroot:x:65532:\n"),
        Entry.dir("tmp", 0o1777),
    ]
    unique: dict[str, Entry] = {}
    for e in entries:
        unique.setdefault(e.path, e)
    layer = build_layer(unique.values(), cache, comment="host python")
    config = ImageConfig(env=("PATH=/usr/local/bin:/usr/bin:/bin",), cmd=("python3",))
    return append_layers(empty_image("linux/amd64", config), [layer])


@pytest.fixture(scope="module")
def gpu_cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    return Cache(tmp_path_factory.mktemp("gpu-cache"))


@pytest.fixture(scope="module")
def image(gpu_cache: Cache) -> Image:
    host = discover()
    assert host.driver is not None, f"GPUSHIP_GPU_TESTS is set but {host.reason}"
    return host_python_image(gpu_cache)


def _flavors() -> list[str]:
    from gpuship import tools

    return ["chroot"] + (["runc"] if tools.which("runc") else [])


@pytest.mark.parametrize("flavor", _flavors())
@pytest.mark.parametrize("user", ["0", "65532"])
def test_cuda_works_in_the_container(image: Image, gpu_cache: Cache, flavor: str, user: str, capfd) -> None:
    code = run_image(
        image,
        RunOptions(runtime=flavor, user=user, command=("python3", "-c", CUDA_PROBE)),  # type: ignore[arg-type]
        cache=gpu_cache,
        notify=print,
    )
    captured = capfd.readouterr()
    out = captured.out
    assert code == 0, out + captured.err
    m = re.search(r"count=(\d+) driver=(\d+) name=(.+) alloc=ok", out)
    assert m and int(m.group(1)) >= 1, out
    drv = discover().driver
    assert drv is not None and drv.cuda_version is not None
    major, minor = drv.cuda_version.split(".")
    assert int(m.group(2)) == int(major) * 1000 + int(minor) * 10


@pytest.mark.parametrize("flavor", _flavors())
def test_nvidia_smi_and_gpu_selection(image: Image, gpu_cache: Cache, flavor: str, capfd) -> None:
    assert run_image(image, RunOptions(runtime=flavor, command=("nvidia-smi", "-L")), cache=gpu_cache) == 0  # type: ignore[arg-type]
    assert re.search(r"^GPU 0: .+ \(UUID: GPU-", capfd.readouterr().out, re.M)
    probe = "import os; print(sorted(n for n in os.listdir('/dev') if n.startswith('nvidia')))"
    assert (
        run_image(
            image,
            RunOptions(runtime=flavor, gpus="none", command=("python3", "-c", probe)),  # type: ignore[arg-type]
            cache=gpu_cache,
        )
        == 0
    )
    seen = capfd.readouterr().out
    assert "'nvidiactl'" in seen and "'nvidia0'" not in seen
    code = run_image(
        image,
        RunOptions(runtime=flavor, gpus="none", command=("python3", "-c", CUDA_PROBE)),  # type: ignore[arg-type]
        cache=gpu_cache,
    )
    assert code == 3 and "cuInit=100" in capfd.readouterr().out  # CUDA_ERROR_NO_DEVICE


def test_require_cuda_newer_than_the_driver_is_refused(image: Image, gpu_cache: Cache) -> None:
    drv = discover().driver
    assert drv is not None and drv.cuda_version
    major, minor = map(int, drv.cuda_version.split("."))
    too_new = f"{major}.{minor + 1}"
    opts = RunOptions(
        runtime="chroot", env={"NVIDIA_REQUIRE_CUDA": f"cuda>={too_new}"}, command=("python3", "-c", "pass")
    )
    with pytest.raises(GpuError, match=rf"driver {re.escape(drv.version)} supports CUDA up to {drv.cuda_version}"):
        run_image(image, opts, cache=gpu_cache)
