"""The OCI runtime bundle's ``config.json`` (runtime-spec ``config.md``) for ``runc run``.

New PID, IPC and mount namespaces; the host's network and hostname (so a server in the image is reachable on
its port, as with ``--network host``); /proc, a tmpfs /dev, /dev/pts, /dev/shm of the asked size, /dev/mqueue,
read-only /sys; Docker's default capabilities, masked and read-only paths; the rlimits; the GPU device nodes
with their cgroup allow rules; the user's volumes. The driver's libraries are already bound into the root by
the launcher (runc bind-mounts the root recursively, so they come along).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .gpu import DeviceNode
from .options import Ulimit, Volume
from .users import ExecUser

#: Docker's default capability set (moby oci/caps/defaults.go).
DEFAULT_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
UNLIMITED = 2**64 - 1


@dataclass(frozen=True)
class Process:
    """The command as it will run: argv, environment (``K=V``), working directory and user."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: ExecUser


def _rlimit(u: Ulimit) -> dict[str, object]:
    return {
        "type": f"RLIMIT_{u.name.upper()}",
        "soft": UNLIMITED if u.soft < 0 else u.soft,
        "hard": UNLIMITED if u.hard < 0 else u.hard,
    }


def _capabilities(*, is_root: bool) -> dict[str, list[str]]:
    """The default capability sets: a non-root process keeps them only in its bounding set."""
    caps = list(DEFAULT_CAPS)
    return {
        "bounding": caps,
        "effective": caps if is_root else [],
        "permitted": caps if is_root else [],
        "inheritable": [],
        "ambient": [],
    }


def _mounts(shm_size: int, volumes: Sequence[Volume], tmpfs: Sequence[str]) -> list[dict[str, object]]:
    """The standard container mounts, then the volumes (bind mounts) and the extra tmpfs directories."""
    mounts: list[dict[str, object]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={int(shm_size)}"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]
    for v in volumes:
        mounts.append(
            {
                "destination": v.destination,
                "type": "bind",
                "source": v.source,
                "options": ["rbind", "ro" if v.readonly else "rw"],
            }
        )
    for d in tmpfs:
        mounts.append(
            {"destination": d, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
        )
    return mounts


def _devices(devices: Sequence[DeviceNode]) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """The device nodes to create and the cgroup rules: every device denied but these."""
    dev_rules: list[dict[str, object]] = [{"allow": False, "access": "rwm"}]
    dev_nodes = []
    for node in devices:
        dev_nodes.append(
            {
                "path": node.path,
                "type": "c",
                "major": node.major,
                "minor": node.minor,
                "fileMode": node.mode,
                "uid": node.uid,
                "gid": node.gid,
            }
        )
        dev_rules.append({"allow": True, "type": "c", "major": node.major, "minor": node.minor, "access": "rwm"})
    return dev_nodes, dev_rules


def runc_config(
    process: Process,
    root: str,
    *,
    shm_size: int,
    ulimits: Sequence[Ulimit] = (),
    devices: Sequence[DeviceNode] = (),
    volumes: Sequence[Volume] = (),
    read_only: bool = False,
    tmpfs: Sequence[str] = (),
) -> dict[str, object]:
    """The runtime spec (``config.json``) runc runs ``process`` from: its mounts, devices and capabilities."""
    mounts = _mounts(shm_size, volumes, tmpfs)
    dev_nodes, dev_rules = _devices(devices)
    capabilities = _capabilities(is_root=process.user.uid == 0)
    namespaces = [{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": process.user.uid, "gid": process.user.gid, "additionalGids": list(process.user.groups)},
            "args": list(process.args),
            "env": list(process.env),
            "cwd": process.cwd,
            "capabilities": capabilities,
            "rlimits": [_rlimit(u) for u in ulimits],
            "noNewPrivileges": False,
        },
        "root": {"path": root, "readonly": read_only},
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "devices": dev_nodes,
            "resources": {"devices": dev_rules},
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
