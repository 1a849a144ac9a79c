"""The built-in, daemonless runner: an unpacked image root + its config -> a running container, as root.

Two flavours share everything but the last step (see ``launcher.py``): ``runc`` (an OCI runtime bundle, run
with ``runc run`` under a unique id and deleted after) and ``chroot`` (new mount/PID/IPC namespaces, bind
mounts, chroot, the image's user). Both keep the host's network, so a server in the image answers on the
host's port, and both apply the GPU :class:`~gpuship.run.gpu.Injection` the way the NVIDIA toolkit does.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from .. import tools
from ..cache import Cache
from ..errors import GpushipError
from ..oci.image import ImageConfig
from . import launcher
from .bundle import DEFAULT_CAPS, Process, runc_config
from .gpu import Injection
from .limits import possible_ulimits
from .options import RunOptions, Ulimit, host_and_container_port
from .process import run_forwarding
from .users import resolve_user

Flavor = Literal["runc", "chroot"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CHECK_PATH = "/usr/local/bin/gpuship-check"
READ_ONLY_TMPFS = ("/tmp", "/var/tmp", "/run")


def host_ldconfig() -> str | None:
    """The host's real ldconfig (Ubuntu's /sbin/ldconfig is a wrapper around ldconfig.real)."""
    for p in ("/sbin/ldconfig.real", "/usr/sbin/ldconfig.real", "/sbin/ldconfig", "/usr/sbin/ldconfig"):
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return shutil.which("ldconfig")


def require_root(what: str = "the built-in runner") -> None:
    if os.geteuid() != 0:
        raise GpushipError(
            f"{what} needs root (it mounts the image's filesystems)",
            "run gpuship as root (sudo), or use --runtime docker/podman",
        )


def check_ports(ports: Sequence[str]) -> None:
    """The built-in runner shares the host's network: a port can be served, not remapped."""
    for p in ports:
        host, container = host_and_container_port(p)
        if host is not None and host != container:
            raise GpushipError(
                f"-p {p}: the built-in runner shares the host's network, so port {container} cannot be moved to {host}",
                f"use -p {container}:{container}, or --runtime docker/podman",
            )


def _command(config: ImageConfig, options: RunOptions) -> tuple[str, ...]:
    entrypoint = config.entrypoint if options.entrypoint is None else options.entrypoint
    if options.command:
        cmd = options.command
    else:
        cmd = config.cmd if options.entrypoint is None else ()
    args = tuple(entrypoint) + tuple(cmd)
    if not args:
        raise GpushipError(
            "the image has no Entrypoint or Cmd, and no command was given",
            "give one after --: gpuship run IMAGE -- COMMAND",
        )
    return args


def _provided(path: str, provided: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in provided)


def find_executable(rootfs: str, arg0: str, env_path: str, cwd: str, provided: Sequence[str] = ()) -> str | None:
    """Where ``arg0`` is inside the image (PATH lookup as exec does), or None."""
    if "/" in arg0:
        candidates = [arg0 if arg0.startswith("/") else posixpath.normpath(posixpath.join(cwd, arg0))]
    else:
        candidates = [posixpath.join(d, arg0) for d in env_path.split(":") if d]
    for c in candidates:
        if _provided(c, provided):
            return c
        try:
            full = launcher.resolve_in_root(rootfs, c)
        except OSError:
            continue
        if os.path.isfile(full) and os.stat(full).st_mode & 0o111:
            return c
    return None


def container_process(
    rootfs: Path | str, config: ImageConfig, options: RunOptions, injection: Injection, ldconfig: bool = True
) -> Process:
    """argv, environment, working directory and user, resolved the way Docker/runc resolve them."""
    root = str(rootfs)
    args = _command(config, options)
    user = resolve_user(root, options.user if options.user is not None else config.user)
    env: dict[str, str] = {}
    for item in config.env:
        k, _, v = item.partition("=")
        env[k] = v
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", socket.gethostname())
    env.update(injection.env)
    env.update(options.env)
    env.setdefault("HOME", user.home)
    if injection.ld_dirs and not ldconfig:
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (env.get("LD_LIBRARY_PATH", ""), *injection.ld_dirs) if p)
    cwd = options.workdir or config.working_dir or "/"
    if not cwd.startswith("/"):
        raise GpushipError(f"the working directory {cwd!r} is not an absolute path", "use -w /path")
    provided = [m[1] for m in injection.mounts] + [v.destination for v in options.volumes]
    if find_executable(root, args[0], env["PATH"], cwd, provided) is None:
        if args[0] == CHECK_PATH:
            raise GpushipError(
                f"this image has no {CHECK_PATH}",
                "images built by gpuship carry it; rebuild the image with gpuship build",
            )
        raise GpushipError(
            f"{args[0]!r} is not found in the image (PATH={env['PATH']})",
            "check the command, or give the full path inside the image",
        )
    return Process(args, tuple(f"{k}={v}" for k, v in env.items()), cwd, user)


def _host_file(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def _runc_bundle(
    rundir: Path,
    runc: str,
    cid: str,
    process: Process,
    options: RunOptions,
    injection: Injection,
    ulimits: Sequence[Ulimit],
    tmpfs: Sequence[str],
) -> dict[str, object]:
    """Write runc's bundle (its ``config.json``) under ``rundir``; the launcher's ``runc`` entry runs it."""
    bundle = rundir / "bundle"
    bundle.mkdir()
    config_json = runc_config(
        process,
        str(rundir / "rootfs"),
        shm_size=options.shm_size,
        ulimits=ulimits,
        devices=injection.devices,
        volumes=options.volumes,
        read_only=options.read_only,
        tmpfs=tmpfs,
    )
    (bundle / "config.json").write_text(json.dumps(config_json, indent=1))
    return {"argv": [str(runc), "run", "--bundle", str(bundle), cid]}


def _direct_spec(process: Process, options: RunOptions, ulimits: Sequence[Ulimit]) -> dict[str, object]:
    """The launcher's own ``volumes`` and ``process`` entries, for running without runc."""
    return {
        "volumes": [
            {"source": v.source, "destination": v.destination, "readonly": v.readonly} for v in options.volumes
        ],
        "process": {
            "args": list(process.args),
            "env": dict(e.split("=", 1) for e in process.env),
            "cwd": process.cwd,
            "uid": process.user.uid,
            "gid": process.user.gid,
            "groups": list(process.user.groups),
            "rlimits": [[u.name, u.soft, u.hard] for u in ulimits],
            # Docker's default set, less CAP_MKNOD: no device cgroup here, so no making nodes for other GPUs
            "capabilities": [c for c in DEFAULT_CAPS if c != "CAP_MKNOD"],
        },
    }


def run_rootfs(
    rootfs: Path | str,
    config: ImageConfig,
    options: RunOptions,
    flavor: Flavor,
    injection: Injection = Injection(),
    *,
    cache: Cache | None = None,
    notify: Callable[[str], None] | None = None,
) -> int:
    """Run the image whose root is unpacked at ``rootfs``; returns the command's exit status."""
    require_root()
    check_ports(options.ports)
    for v in options.volumes:
        if not os.path.exists(v.source):
            raise GpushipError(f"volume source {v.source} does not exist", "create it, or fix the -v path")
    cache = cache or Cache()
    ldconfig = host_ldconfig()
    process = container_process(rootfs, config, options, injection, ldconfig is not None)
    runc = tools.require("runc") if flavor == "runc" else None
    ulimits = possible_ulimits(options.ulimits, notify)

    with cache.temp_dir("run-") as rundir:
        cid = f"gpuship-{uuid.uuid4().hex[:12]}"
        root = rundir / "rootfs"
        tmpfs = list(READ_ONLY_TMPFS) if options.read_only else []
        etc = {p: c for p in ("/etc/hosts", "/etc/resolv.conf") if (c := _host_file(p)) is not None}
        spec: dict[str, object] = {
            "mode": flavor,
            "lower": str(Path(rootfs).resolve()),
            "rundir": str(rundir),
            "root": str(root),
            "errfile": str(rundir / "error"),
            "readonly": options.read_only,
            "etc_files": etc,
            "dirs": [process.cwd],
            "tmpfs": tmpfs,
            "gpu": injection.to_json(),
            "ldconfig": ldconfig,
            "shm_size": options.shm_size,
            "verbose": options.verbose,
        }
        if runc is not None:
            spec["runc"] = _runc_bundle(rundir, runc, cid, process, options, injection, ulimits, tmpfs)
        else:
            spec.update(_direct_spec(process, options, ulimits))
        spec_path = rundir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        if notify and options.verbose:
            notify(f"running with the built-in runner ({flavor}) in {rundir}")
            if injection.summary:
                notify(injection.summary)
        try:
            code = run_forwarding([sys.executable, "-I", "-S", str(Path(launcher.__file__).resolve()), str(spec_path)])
            err = rundir / "error"
            if code == launcher.SETUP_FAILED and err.exists():
                raise GpushipError(
                    f"the container did not start: {err.read_text().strip()}",
                    "run with -v for details; --runtime docker/podman is the alternative",
                )
            return code
        finally:
            if runc is not None:
                subprocess.run([runc, "delete", "--force", cid], capture_output=True, check=False)
