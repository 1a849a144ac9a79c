"""Helpers for the run tests: a tiny real image (Debian's busybox-static) and a fake NVIDIA driver tree.

The busybox binary comes from the real .deb (``apt-get download busybox-static`` from the host's configured
Debian mirror); the image is built with gpuship's own layer writer. The fake driver is made of plain files
named like the 580.159.04 driver's libraries and character devices with /dev/null's numbers: it tests the
injection's mount plumbing for real on a host without a GPU.
"""

from __future__ import annotations

import functools
import io
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

from gpuship.cache import Cache
from gpuship.oci import Entry, ImageConfig, append_layers, build_layer, empty_image
from gpuship.oci.image import Image

APPLETS = (
    "sh",
    "id",
    "cat",
    "env",
    "pwd",
    "df",
    "ls",
    "echo",
    "sleep",
    "stat",
    "readlink",
    "grep",
    "test",
    "wc",
    "touch",
    "mkdir",
    "head",
    "printf",
    "true",
    "false",
    "kill",
    "uname",
    "find",
    "awk",
    "cut",
    "sort",
    "tr",
)
FAKE_DRIVER = "580.159.04"
USER_UID = 65532


@functools.lru_cache(maxsize=1)
def busybox_binary() -> bytes:
    """The static busybox from Debian's busybox-static package (downloaded once per test session)."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            ["apt-get", "download", "busybox-static"], cwd=tmp, capture_output=True, text=True, timeout=300
        )
        debs = list(Path(tmp).glob("busybox-static_*.deb"))
        assert proc.returncode == 0 and debs, f"apt-get download busybox-static failed: {proc.stderr}"
        data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs[0])], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmember("./bin/busybox")
        fh = tar.extractfile(member)
        assert fh is not None
        return fh.read()


def busybox_image(
    cache: Cache,
    *,
    env: dict[str, str] | None = None,
    extra: list[Entry] | None = None,
    user: str = "nonroot",
    cmd: tuple[str, ...] = ("sh", "-c", "echo default-cmd"),
) -> Image:
    """A one-layer image: busybox + applet links in /bin, a nonroot user (65532), /work owned by it."""
    entries = [
        Entry.file("bin/busybox", busybox_binary(), mode=0o755),
        *[Entry.symlink(f"bin/{a}", "busybox") for a in APPLETS],
        Entry.file(
            "etc/passwd",
            f"root:x:0:0:root:/root:/bin/sh\nnonroot:x:{USER_UID}:{USER_UID}:nonroot:/home/nonroot:/bin/sh\n",
        ),
        Entry.file("etc/group", f"root:x:0:\nnonroot:x:{USER_UID}:\nvideo:x:44:nonroot\n"),
        Entry.dir("home/nonroot", 0o755, USER_UID, USER_UID),
        Entry.dir("work", 0o755, USER_UID, USER_UID),
        Entry.dir("tmp", 0o1777),
        Entry.dir("root", 0o700),
        *(extra or []),
    ]
    layer = build_layer(entries, cache, comment="busybox")
    base_env = {"PATH": "/bin", "GREETING": "hello from the image"}
    base_env.update(env or {})
    config = ImageConfig(env=tuple(f"{k}={v}" for k, v in base_env.items()), cmd=cmd, working_dir="/work", user=user)
    return append_layers(empty_image("linux/amd64", config), [layer])


def fake_driver(root: Path, gpus: int = 2) -> dict[str, Path]:
    """A driver tree under ``root``: lib/ (fake .so files and their links), dev/ (char devices), bin/nvidia-smi."""
    lib, dev, bindir, proc = root / "lib", root / "dev", root / "bin", root / "proc"
    for d in (lib, dev, bindir, proc):
        d.mkdir(parents=True)
    for name, soname in (
        ("libcuda", "libcuda.so.1"),
        ("libnvidia-ml", "libnvidia-ml.so.1"),
        ("libnvidia-ptxjitcompiler", "libnvidia-ptxjitcompiler.so.1"),
        ("libnvidia-nvvm", "libnvidia-nvvm.so.4"),
    ):
        real = f"{name}.so.{FAKE_DRIVER}"
        (lib / real).write_text(f"fake {name} {FAKE_DRIVER}\n")
        os.symlink(real, lib / soname)
    # a library of a capability that is not asked for by default (video): must stay out
    (lib / f"libnvidia-encode.so.{FAKE_DRIVER}").write_text("fake encode\n")
    null = os.stat("/dev/null").st_rdev
    names = ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"] + [f"nvidia{i}" for i in range(gpus)]
    for name in names:
        os.mknod(dev / name, 0o666 | 0o020000, null)  # S_IFCHR
        os.chmod(dev / name, 0o666)
    smi = bindir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho 'NVIDIA-SMI {FAKE_DRIVER}  Driver Version: {FAKE_DRIVER}  CUDA Version: 13.0'\n")
    smi.chmod(0o755)
    return {"lib": lib, "dev": dev, "bin": bindir, "proc": proc}
