"""The host's NVIDIA driver, and what of it goes into a container — the NVIDIA container toolkit's job, done here.

Three steps, each a plain function over plain values:

* :func:`discover` finds the driver on the host: the device nodes (``/dev/nvidiactl``, ``/dev/nvidia-uvm``,
  ``/dev/nvidia-uvm-tools``, ``/dev/nvidia-modeset``, ``/dev/nvidiaN``, ``/dev/nvidia-caps/*``), the user-space
  libraries named ``<lib>.so.<driver version>`` (from the ld cache, ``/usr/local/nvidia/lib64`` and the usual
  library directories), the utilities (``nvidia-smi``), the GPUs and the CUDA version the driver supports.
* :func:`gpu_request` reads what the container asks for: ``NVIDIA_VISIBLE_DEVICES`` (``all`` / ``none`` /
  ``void`` / indices / UUIDs) and ``NVIDIA_DRIVER_CAPABILITIES`` from the image and ``-e``, overridden by
  ``--gpus``.
* :func:`plan_injection` turns both into an :class:`Injection`: device nodes, read-only bind mounts of the
  libraries into ``/usr/local/nvidia/lib64`` with their soname links (``libcuda.so.1``) and ``libcuda.so``,
  ``nvidia-smi`` into ``/usr/bin``, and the directory the loader must learn about. The runners apply it.

:func:`check_requirements` refuses, before anything starts, an image whose ``NVIDIA_REQUIRE_CUDA`` the driver
cannot meet, naming the driver as the cause (as ``nvidia-container-cli`` does).

Only the standard library is imported here (pyelftools lazily, for sonames), so the runner works from a bare
bootstrap on a GPU host.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import shutil
import stat
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..elf import elf_soname
from ..errors import GpuError
from .requirements import Requirement, required_cuda, requirements_from_env, unmet, version_tuple

#: Where the libraries go inside the container (the directory the NVIDIA CUDA images already search).
CONTAINER_LIB_DIR = "/usr/local/nvidia/lib64"
CONTAINER_BIN_DIR = "/usr/bin"

#: Libraries per driver capability (NVIDIA/libnvidia-container src/nvc_info.c; nvidia-container-toolkit).
LIBRARIES: dict[str, tuple[str, ...]] = {
    "utility": ("libnvidia-ml", "libnvidia-cfg", "libnvidia-nscq"),
    "compute": (
        "libcuda",
        "libcudadebugger",
        "libnvidia-opencl",
        "libnvidia-ptxjitcompiler",
        "libnvidia-fatbinaryloader",
        "libnvidia-allocator",
        "libnvidia-compiler",
        "libnvidia-nvvm",
        "libnvidia-nvvm70",
        "libnvidia-gpucomp",
        "libnvidia-pkcs11",
        "libnvidia-pkcs11-openssl3",
        "libnvidia-tileiras",
    ),
    "video": ("libvdpau_nvidia", "libnvidia-encode", "libnvidia-opticalflow", "libnvcuvid"),
    "graphics": (
        "libnvidia-eglcore",
        "libnvidia-glcore",
        "libnvidia-tls",
        "libnvidia-glsi",
        "libnvidia-fbc",
        "libnvidia-ifr",
        "libnvidia-rtcore",
        "libnvoptix",
        "libGLX_nvidia",
        "libEGL_nvidia",
        "libGLESv2_nvidia",
        "libGLESv1_CM_nvidia",
        "libnvidia-glvkspirv",
        "libnvidia-gpucomp",
    ),
}
#: Programs per capability.
BINARIES: dict[str, tuple[str, ...]] = {
    "utility": ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced"),
    "compute": ("nvidia-cuda-mps-control", "nvidia-cuda-mps-server"),
}
ALL_CAPABILITIES = ("compute", "compat32", "display", "graphics", "utility", "video", "ngx")
DEFAULT_CAPABILITIES = frozenset({"utility", "compute"})
CONTROL_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")

#: Minimum Linux driver per CUDA toolkit (CUDA release notes, "CUDA Toolkit and Corresponding Driver
#: Versions"; see /work/shared/notes/gpu-facts.md). Used to name the driver to install in an error, and to
#: estimate the driver's CUDA version when neither libcuda nor nvidia-smi can be asked.
MIN_DRIVER_FOR_CUDA: tuple[tuple[str, str], ...] = (
    ("13.2", "595.45.04"),
    ("13.1", "590.44.01"),
    ("13.0", "580.65.06"),
    ("12.9", "575.51.03"),
    ("12.8", "570.26"),
    ("12.6", "560.28.03"),
    ("12.5", "555.42.02"),
    ("12.4", "550.54.14"),
    ("12.3", "545.23.06"),
    ("12.2", "535.54.03"),
    ("12.1", "530.30.02"),
    ("12.0", "525.60.13"),
    ("11.8", "520.61.05"),
    ("11.0", "450.36.06"),
)

# Environment overrides for discovery (a driver kept somewhere unusual; tests that bring their own).
ENV_LIB_DIRS = "GPUSHIP_DRIVER_LIB_DIRS"
ENV_DEV_DIR = "GPUSHIP_DRIVER_DEV_DIR"
ENV_BIN_DIRS = "GPUSHIP_DRIVER_BIN_DIRS"
ENV_PROC_DIR = "GPUSHIP_DRIVER_PROC_DIR"


# -- values ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceNode:
    """A character device: where it is on the host, where it goes in the container, and its numbers."""

    host_path: str
    path: str
    major: int
    minor: int
    mode: int = 0o666
    uid: int = 0
    gid: int = 0

    @classmethod
    def of(cls, host_path: Path, container_path: str) -> DeviceNode:
        st = os.stat(host_path)
        return cls(
            str(host_path),
            container_path,
            os.major(st.st_rdev),
            os.minor(st.st_rdev),
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "host_path": self.host_path,
            "path": self.path,
            "major": self.major,
            "minor": self.minor,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
        }


@dataclass(frozen=True)
class Gpu:
    index: int
    minor: int
    uuid: str = ""
    pci: str = ""
    name: str = ""


@dataclass(frozen=True)
class DriverFile:
    """A driver library or program on the host, and the capability that brings it."""

    name: str  # libcuda, nvidia-smi
    path: str  # the real file on the host
    capability: str
    sonames: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostDriver:
    """The NVIDIA driver found on the host."""

    version: str
    libraries: tuple[DriverFile, ...]
    binaries: tuple[DriverFile, ...]
    control_devices: tuple[DeviceNode, ...]
    gpus: tuple[tuple[Gpu, DeviceNode], ...]
    caps_devices: tuple[DeviceNode, ...] = ()
    cuda_version: str | None = None  # the newest CUDA the driver supports ("13.0")

    def library(self, name: str) -> DriverFile | None:
        return next((lib for lib in self.libraries if lib.name == name), None)


@dataclass(frozen=True)
class HostGpus:
    """The outcome of :func:`discover`: a driver, or why there is none (one line)."""

    driver: HostDriver | None
    reason: str = ""


@dataclass(frozen=True)
class GpuRequest:
    """What the container asks for. ``devices`` is ``("all",)``, ``()`` for none, or indices/UUIDs;
    ``void`` means no GPU support at all (nothing injected)."""

    void: bool
    devices: tuple[str, ...]
    capabilities: frozenset[str]
    explicit: bool = False  # --gpus was given
    env_value: str = ""  # the NVIDIA_VISIBLE_DEVICES value to put in the container


@dataclass(frozen=True)
class Injection:
    """What goes into the container: nodes, read-only binds, links, loader directories, env."""

    devices: tuple[DeviceNode, ...] = ()
    mounts: tuple[tuple[str, str], ...] = ()  # (host file, container path), read-only
    symlinks: tuple[tuple[str, str], ...] = ()  # (container path, link target)
    ld_dirs: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    summary: str = ""

    @property
    def empty(self) -> bool:
        return not (self.devices or self.mounts)

    def to_json(self) -> dict[str, object]:
        return {
            "devices": [d.to_json() for d in self.devices],
            "mounts": [list(m) for m in self.mounts],
            "symlinks": [list(s) for s in self.symlinks],
            "ld_dirs": list(self.ld_dirs),
        }


# -- discovery ------------------------------------------------------------------------------------------------
def _multiarch() -> str:
    return {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(platform.machine(), "")


def default_lib_dirs() -> list[Path]:
    """Where a driver's libraries may be: the ld cache's directories first, then the usual places."""
    dirs: list[Path] = []
    ldconfig = shutil.which("ldconfig") or ("/sbin/ldconfig" if os.path.exists("/sbin/ldconfig") else None)
    if ldconfig:
        try:
            out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        for line in out.splitlines():
            m = re.match(r"^\s*(lib(?:cuda|nvidia-ml)\.so\.1)\s+\(([^)]*)\)\s+=>\s+(\S+)$", line)
            if m and ("x86-64" in m.group(2) or "AArch64" in m.group(2) or "64" in m.group(2)):
                dirs.append(Path(m.group(3)).parent)
    arch = _multiarch()
    dirs += [Path("/usr/local/nvidia/lib64"), Path("/usr/local/nvidia/lib")]
    if arch:
        dirs += [Path(f"/usr/lib/{arch}"), Path(f"/lib/{arch}")]
    dirs += [Path("/usr/lib64"), Path("/lib64"), Path("/usr/lib")]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique and d.is_dir():
            unique.append(d)
    return unique


def default_bin_dirs() -> list[Path]:
    path_dirs = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    dirs = [Path("/usr/local/nvidia/bin"), *path_dirs, Path("/usr/bin"), Path("/usr/sbin"), Path("/bin")]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique and d.is_dir():
            unique.append(d)
    return unique


def _env_paths(name: str) -> list[Path] | None:
    raw = os.environ.get(name)
    return [Path(p) for p in raw.split(os.pathsep) if p] if raw else None


def _driver_version(lib_dirs: Sequence[Path], proc_dir: Path) -> str | None:
    """The version in the name of the driver's libcuda (``libcuda.so.580.159.04``), else the kernel module's."""
    pattern = re.compile(r"^libcuda\.so\.(\d+\.\d+(?:\.\d+)?)$")
    for d in lib_dirs:
        one = d / "libcuda.so.1"
        if one.exists():
            m = pattern.match(os.path.basename(os.path.realpath(one)))
            if m:
                return m.group(1)
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            m = pattern.match(name)
            if m:
                return m.group(1)
    try:
        text = (proc_dir / "version").read_text()
    except OSError:
        return None
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else None


def _sonames(path: Path, name: str, version: str) -> tuple[str, ...]:
    """The names a library is loaded by: its ELF soname, the host's links to it, else ``<name>.so.1``."""
    real = os.path.basename(path)
    found: list[str] = []
    so = elf_soname(path)
    if so and so != real:
        found.append(so)
    try:
        for entry in os.scandir(path.parent):
            if entry.is_symlink() and entry.name.startswith(name + ".so.") and entry.name != real:
                if os.path.basename(os.path.realpath(entry.path)) == real and entry.name not in found:
                    found.append(entry.name)
    except OSError:
        pass
    if not found and so is None:
        found.append(f"{name}.so.1")
    return tuple(found)


def _find_libraries(lib_dirs: Sequence[Path], version: str) -> list[DriverFile]:
    out: list[DriverFile] = []
    seen: set[str] = set()
    for capability, names in LIBRARIES.items():
        for name in names:
            if name in seen:
                continue
            for d in lib_dirs:
                candidates = [d / f"{name}.so.{version}"]
                if name == "libnvidia-nvvm70":
                    candidates = sorted(d.glob("libnvidia-nvvm70.so.*"))
                hit = next((c for c in candidates if c.is_file() and not c.is_symlink()), None)
                if hit is None:
                    hit = next((c for c in candidates if c.is_file()), None)
                if hit is not None:
                    real = Path(os.path.realpath(hit))
                    out.append(DriverFile(name, str(real), capability, _sonames(real, name, version)))
                    seen.add(name)
                    break
    return out


def _find_binaries(bin_dirs: Sequence[Path]) -> list[DriverFile]:
    out = []
    for capability, names in BINARIES.items():
        for name in names:
            for d in bin_dirs:
                p = d / name
                if p.is_file() and os.access(p, os.X_OK):
                    out.append(DriverFile(name, os.path.realpath(p), capability))
                    break
    return out


def _proc_gpus(proc_dir: Path) -> list[tuple[str, int, str, str]]:
    """(pci, minor, uuid, model) per GPU from /proc/driver/nvidia/gpus/*/information."""
    gpus = []
    base = proc_dir / "gpus"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return []
    for pci in entries:
        try:
            text = (base / pci / "information").read_text()
        except OSError:
            continue
        minor = re.search(r"Device Minor:\s*(\d+)", text)
        uuid = re.search(r"GPU UUID:\s*(\S+)", text)
        model = re.search(r"Model:\s*(.+)", text)
        if minor:
            gpus.append(
                (pci, int(minor.group(1)), uuid.group(1) if uuid else "", model.group(1).strip() if model else "")
            )
    return gpus


def _find_devices(
    dev_dir: Path, proc_dir: Path
) -> tuple[list[DeviceNode], list[tuple[Gpu, DeviceNode]], list[DeviceNode]]:
    control = [DeviceNode.of(dev_dir / n, f"/dev/{n}") for n in CONTROL_DEVICES if _is_chardev(dev_dir / n)]
    nodes: dict[int, Path] = {}
    try:
        for name in os.listdir(dev_dir):
            m = re.fullmatch(r"nvidia(\d+)", name)
            if m and _is_chardev(dev_dir / name):
                nodes[int(m.group(1))] = dev_dir / name
    except OSError:
        pass
    gpus: list[tuple[Gpu, DeviceNode]] = []
    from_proc = _proc_gpus(proc_dir)
    if from_proc:
        for index, (pci, minor, uuid, model) in enumerate(from_proc):
            if minor in nodes:
                gpus.append((Gpu(index, minor, uuid, pci, model), DeviceNode.of(nodes[minor], f"/dev/nvidia{minor}")))
    else:
        for index, minor in enumerate(sorted(nodes)):
            gpus.append((Gpu(index, minor), DeviceNode.of(nodes[minor], f"/dev/nvidia{minor}")))
    caps: list[DeviceNode] = []
    caps_dir = dev_dir / "nvidia-caps"
    if caps_dir.is_dir():
        for name in sorted(os.listdir(caps_dir)):
            if _is_chardev(caps_dir / name):
                caps.append(DeviceNode.of(caps_dir / name, f"/dev/nvidia-caps/{name}"))
    return control, gpus, caps


def _is_chardev(path: Path) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def cuda_version_of_libcuda(path: str) -> str | None:
    """``cuDriverGetVersion`` through ctypes on the host's libcuda (``"13.0"``), or None."""
    try:
        lib = ctypes.CDLL(path)
        value = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(value)) != 0 or value.value <= 0:
            return None
        return f"{value.value // 1000}.{(value.value % 1000) // 10}"
    except (OSError, AttributeError):
        return None


def cuda_version_of_nvidia_smi(nvidia_smi: str) -> str | None:
    """The ``CUDA Version: 13.0`` in nvidia-smi's header, or None."""
    try:
        out = subprocess.run([nvidia_smi], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"CUDA Version:\s*(\d+\.\d+)", out)
    return m.group(1) if m else None


def cuda_version_of_driver(driver_version: str) -> str | None:
    """The newest CUDA whose minimum driver is at most ``driver_version`` (from the release-notes table)."""
    try:
        have = version_tuple(driver_version)
    except ValueError:
        return None
    for cuda, minimum in MIN_DRIVER_FOR_CUDA:
        if version_tuple(minimum) <= have:
            return cuda
    return None


def min_driver_for(cuda: str) -> str | None:
    """The minimum driver for CUDA ``cuda`` (the table's first row at or above it)."""
    try:
        want = version_tuple(cuda)[:2]
    except ValueError:
        return None
    for c, minimum in reversed(MIN_DRIVER_FOR_CUDA):
        if version_tuple(c) >= want:
            return minimum
    return None


def discover(
    lib_dirs: Sequence[Path | str] | None = None,
    dev_dir: Path | str | None = None,
    bin_dirs: Sequence[Path | str] | None = None,
    proc_dir: Path | str | None = None,
) -> HostGpus:
    """Find the NVIDIA driver on this host. Arguments default to ``GPUSHIP_DRIVER_*`` env, then the usual places."""
    libs = [Path(p) for p in lib_dirs] if lib_dirs is not None else (_env_paths(ENV_LIB_DIRS) or default_lib_dirs())
    dev = Path(dev_dir) if dev_dir is not None else Path(os.environ.get(ENV_DEV_DIR) or "/dev")
    bins = [Path(p) for p in bin_dirs] if bin_dirs is not None else (_env_paths(ENV_BIN_DIRS) or default_bin_dirs())
    proc = Path(proc_dir) if proc_dir is not None else Path(os.environ.get(ENV_PROC_DIR) or "/proc/driver/nvidia")

    if not _is_chardev(dev / "nvidiactl"):
        return HostGpus(None, f"no NVIDIA GPU or driver on this host ({dev}/nvidiactl is missing)")
    version = _driver_version(libs, proc)
    if version is None:
        return HostGpus(
            None,
            "the NVIDIA kernel driver is loaded but its libraries (libcuda.so.*) are not found "
            f"in {', '.join(map(str, libs)) or 'any library directory'} "
            f"(set {ENV_LIB_DIRS} to their directory)",
        )
    libraries = _find_libraries(libs, version)
    if not any(lib.name == "libcuda" for lib in libraries):
        return HostGpus(
            None,
            f"libcuda.so.{version} is not found in {', '.join(map(str, libs))} "
            f"(set {ENV_LIB_DIRS} to the driver's library directory)",
        )
    binaries = _find_binaries(bins)
    control, gpus, caps = _find_devices(dev, proc)
    libcuda = next(lib for lib in libraries if lib.name == "libcuda")
    smi = next((b.path for b in binaries if b.name == "nvidia-smi"), None)
    cuda = cuda_version_of_libcuda(libcuda.path) or (cuda_version_of_nvidia_smi(smi) if smi else None)
    cuda = cuda or cuda_version_of_driver(version)
    return HostGpus(
        HostDriver(version, tuple(libraries), tuple(binaries), tuple(control), tuple(gpus), tuple(caps), cuda)
    )


# -- what the container asks for ------------------------------------------------------------------------------
def parse_gpus_option(value: str) -> str:
    """``--gpus all|none|void|0,1|GPU-uuid`` (also Docker's ``device=0,1`` and a count-free ``"device=..."``)."""
    v = value.strip().strip('"').strip("'")
    if v.startswith("device="):
        v = v[len("device=") :]
    if not v:
        raise GpuError("--gpus needs a value", "use --gpus all, --gpus none or --gpus 0,1")
    return v


def gpu_request(image_env: Mapping[str, str], user_env: Mapping[str, str], gpus: str | None) -> GpuRequest:
    """What the container asks for: ``--gpus`` beats ``-e NVIDIA_VISIBLE_DEVICES`` beats the image's env.

    Without any of them the container gets every GPU (a gpuship image is a GPU image; ``void`` opts out).
    """
    env = dict(image_env)
    env.update(user_env)
    explicit = gpus is not None
    raw = parse_gpus_option(gpus) if gpus is not None else env.get("NVIDIA_VISIBLE_DEVICES")
    if raw is None:
        raw = "all"
    items = [x.strip() for x in raw.split(",") if x.strip()]
    caps_raw = env.get("NVIDIA_DRIVER_CAPABILITIES", "").strip()
    if not caps_raw:
        capabilities = DEFAULT_CAPABILITIES
    else:
        capabilities = frozenset(c.strip() for c in caps_raw.split(",") if c.strip())
        if "all" in capabilities:
            capabilities = frozenset(ALL_CAPABILITIES)
    if not items or "void" in items:
        return GpuRequest(True, (), capabilities, explicit, raw)
    if "none" in items:
        return GpuRequest(False, (), capabilities, explicit, "none")
    if "all" in items:
        return GpuRequest(False, ("all",), capabilities, explicit, "all")
    return GpuRequest(False, tuple(items), capabilities, explicit, ",".join(items))


def select_gpus(driver: HostDriver, devices: Iterable[str]) -> list[tuple[Gpu, DeviceNode]]:
    """The GPUs named by indices or (prefixes of) UUIDs; ``all`` is every one."""
    wanted = list(devices)
    if wanted == ["all"]:
        return list(driver.gpus)
    chosen: list[tuple[Gpu, DeviceNode]] = []
    count = len(driver.gpus)
    for item in wanted:
        if item.isdigit():
            idx = int(item)
            match = [g for g in driver.gpus if g[0].index == idx]
            if not match:
                have = f"0-{count - 1}" if count else "none"
                raise GpuError(
                    f"GPU {idx} was asked for but this host has {count} GPU(s) (indices {have})",
                    "use --gpus all or an index that exists (nvidia-smi -L lists them)",
                )
        elif item.startswith("MIG-"):
            raise GpuError(
                f"MIG device {item} cannot be selected by the built-in runner",
                "use --runtime docker or podman with the NVIDIA container toolkit for MIG",
            )
        else:
            match = [g for g in driver.gpus if g[0].uuid and g[0].uuid.startswith(item)]
            if not match:
                raise GpuError(f"no GPU with UUID {item} on this host", "nvidia-smi -L lists the GPUs and their UUIDs")
        for g in match:
            if g not in chosen:
                chosen.append(g)
    return chosen


def host_facts(driver: HostDriver, requirements: Sequence[Requirement] = ()) -> dict[str, str | None]:
    """The properties the requirements are checked against."""
    facts: dict[str, str | None] = {"cuda": driver.cuda_version, "driver": driver.version, "arch": None, "brand": None}
    if any(f.prop == "arch" for r in requirements for t in r.terms for f in t):
        smi = next((b.path for b in driver.binaries if b.name == "nvidia-smi"), None)
        if smi:
            try:
                out = subprocess.run(
                    [smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                ).stdout.split()
                facts["arch"] = min(out, key=version_tuple) if out else None
            except (OSError, subprocess.TimeoutExpired, ValueError):
                pass
    return facts


def check_requirements(driver: HostDriver, env: Mapping[str, str]) -> None:
    """Refuse an image whose ``NVIDIA_REQUIRE_*`` the host driver does not meet (unless NVIDIA_DISABLE_REQUIRE)."""
    reqs = requirements_from_env(env)
    if not reqs:
        return
    failed = unmet(reqs, host_facts(driver, reqs))
    if not failed:
        return
    cuda = required_cuda(failed)
    need = min_driver_for(cuda) if cuda else None
    what = "; ".join(f"{r.name}={r.text}" for r in failed)
    supports = (
        f"supports CUDA up to {driver.cuda_version}" if driver.cuda_version else "does not report its CUDA version"
    )
    hint = (
        (f"update the NVIDIA driver to {need} or newer" if need else "update the NVIDIA driver")
        + (f", or use an image built for CUDA {driver.cuda_version}" if driver.cuda_version else "")
        + "; NVIDIA_DISABLE_REQUIRE=1 skips this check"
    )
    raise GpuError(f"the host's NVIDIA driver {driver.version} {supports}, but the image requires {what}", hint)


def requirement_note(env: Mapping[str, str]) -> str:
    """A few words on what the image asks of the driver, for the no-GPU note."""
    try:
        reqs = requirements_from_env(env)
    except GpuError:
        return ""
    cuda = required_cuda(reqs)
    return f"; the image asks for CUDA >= {cuda}" if cuda else ""


def no_gpu_note(request: GpuRequest, gpus: str | None, env: Mapping[str, str]) -> str:
    """The note for a container that is given no GPU though its image asks for CUDA ("" when it asks for none)."""
    try:
        cuda = required_cuda(requirements_from_env({**env, "NVIDIA_DISABLE_REQUIRE": ""}))
    except GpuError:
        cuda = None
    if request.devices or not cuda:
        return ""
    asked = f"--gpus {gpus}" if gpus is not None else f"NVIDIA_VISIBLE_DEVICES={request.env_value or 'void'}"
    return (
        f"note: {asked}: the container starts without a GPU, though the image asks for CUDA >= {cuda} "
        f"(its code runs on the CPU or fails; {'leave out --gpus' if gpus is not None else 'use --gpus all'} "
        "to give it the host's GPUs)"
    )


# -- the plan -------------------------------------------------------------------------------------------------
def plan_injection(driver: HostDriver, request: GpuRequest, lib_dir: str = CONTAINER_LIB_DIR) -> Injection:
    """Device nodes, library/program binds, links and loader directory for ``request`` on ``driver``."""
    if request.void:
        return Injection()
    gpus = select_gpus(driver, request.devices) if request.devices else []
    devices = list(driver.control_devices) + [node for _, node in gpus] + list(driver.caps_devices)
    caps = request.capabilities
    mounts: list[tuple[str, str]] = []
    links: list[tuple[str, str]] = []
    for lib in driver.libraries:
        if lib.capability not in caps and not (lib.name == "libnvidia-gpucomp" and "graphics" in caps):
            continue
        fname = os.path.basename(lib.path)
        mounts.append((lib.path, f"{lib_dir}/{fname}"))
        for so in lib.sonames:
            links.append((f"{lib_dir}/{so}", fname))
        if lib.name == "libcuda":
            one = next((s for s in lib.sonames if s == "libcuda.so.1"), fname)
            links.append((f"{lib_dir}/libcuda.so", one))
    for b in driver.binaries:
        if b.capability in caps:
            mounts.append((b.path, f"{CONTAINER_BIN_DIR}/{b.name}"))
    names = ", ".join(f"GPU {g.index}" for g, _ in gpus) or "no GPU devices"
    summary = (
        f"NVIDIA driver {driver.version} (CUDA {driver.cuda_version or '?'}): {names}; "
        f"capabilities {','.join(sorted(caps))}"
    )
    env = {"NVIDIA_VISIBLE_DEVICES": request.env_value} if request.explicit else {}
    return Injection(tuple(devices), tuple(mounts), tuple(links), (lib_dir,) if mounts else (), env, summary)
