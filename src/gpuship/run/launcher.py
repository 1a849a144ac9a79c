"""The built-in runner's launcher: standard library only, run as ``python3 -I -S launcher.py SPEC.json`` as root.

``builtin.py`` writes the spec (a JSON object) and starts this file as a script, so it imports nothing from
gpuship and works from a bare bootstrap. It enters a new mount namespace (and, for the ``chroot`` mode, new PID
and IPC namespaces; the network stays the host's), then:

1. prepares the container's root at ``root``: an overlay of the cached, read-only image root (``lower``) with a
   per-run upper directory — falling back to a tmpfs-backed upper, then to a plain copy — so the cache is never
   written; host ``/etc/hosts`` and ``/etc/resolv.conf``; the working directory; the GPU injection (read-only
   binds of the driver's libraries and programs, their soname links, an ``ld.so.conf.d`` file and the ld cache
   rebuilt by the host's ``ldconfig -r``);
2. ``runc`` mode: execs ``runc run`` on the bundle whose ``config.json`` points at that root (runc makes the
   other namespaces, /proc, /dev, /dev/shm, the device nodes and the rlimits);
   ``chroot`` mode: forks PID 1 of the new PID namespace, which mounts /proc, /sys, a tmpfs /dev with the basic
   nodes and the GPU nodes (bind mounts of the host's), /dev/pts, /dev/shm (its size from the spec) and the
   user's volumes, then starts the command: chroot, working directory, rlimits, groups, gid, uid, exec.
   PID 1 forwards signals, reaps orphans and exits with the command's status (128+N for signal N).

A failure before the command starts is written as one line to ``errfile`` (the caller raises it) and the
launcher exits 125.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import posixpath
import resource
import signal
import subprocess
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_STRICTATIME = 1 << 24

PR_CAPBSET_DROP = 24
#: Capability numbers (linux/capability.h) of the set the chroot flavour keeps (Docker's defaults).
CAPABILITIES = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13,
    "CAP_SYS_CHROOT": 18,
    "CAP_MKNOD": 27,
    "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}

SETUP_FAILED = 125
EXEC_FAILED = 127
FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """A failure while preparing the container: one line for the user."""


# -- system calls -------------------------------------------------------------------------------------------
def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    res = _libc.mount(
        source.encode() if source is not None else None,
        target.encode(),
        fstype.encode() if fstype is not None else None,
        ctypes.c_ulong(flags),
        data.encode() if data is not None else None,
    )
    if res != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or 'bind'} {source or ''} on {target}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")


def bind(source: str, target: str, readonly: bool = False, recursive: bool = False) -> None:
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if readonly:
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


# -- paths inside the root ----------------------------------------------------------------------------------
def resolve_in_root(root: str, path: str, follow_last: bool = True) -> str:
    """The host path of ``path`` inside ``root``, following symlinks as if ``root`` were ``/``.

    An absolute link target restarts at ``root`` and ``..`` stops at it, so nothing resolves outside.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    current = ""
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = posixpath.dirname(current)
            continue
        candidate = f"{current}/{part}" if current else part
        full = os.path.join(root, candidate)
        if (parts or follow_last) and os.path.islink(full):
            hops += 1
            if hops > 40:
                raise OSError(errno.ELOOP, f"too many symbolic links in {path}")
            target = os.readlink(full)
            if target.startswith("/"):
                current = ""
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        current = candidate
    return os.path.join(root, current) if current else root


def makedirs_in_root(root: str, path: str, mode: int = 0o755) -> str:
    full = resolve_in_root(root, path)
    os.makedirs(full, mode=mode, exist_ok=True)
    return full


def mount_target(root: str, path: str, is_dir: bool) -> str:
    """Make (in ``root``) the directory or empty file a bind mount of ``path`` lands on."""
    if is_dir:
        return makedirs_in_root(root, path)
    parent = makedirs_in_root(root, posixpath.dirname(path) or "/")
    full = os.path.join(parent, posixpath.basename(path))
    if os.path.islink(full):
        full = resolve_in_root(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
    if os.path.isdir(full) and not os.path.islink(full):
        raise SetupError(f"cannot mount a file on {path}: the image has a directory there")
    if not os.path.exists(full):
        with open(full, "wb"):
            pass
    return full


def write_in_root(root: str, path: str, content: str) -> None:
    parent = makedirs_in_root(root, posixpath.dirname(path))
    full = os.path.join(parent, posixpath.basename(path))
    if os.path.islink(full) or os.path.isdir(full):
        if os.path.isdir(full) and not os.path.islink(full):
            return
        os.unlink(full)
    with open(full, "w") as fh:
        fh.write(content)
    os.chmod(full, 0o644)


def symlink_in_root(root: str, path: str, target: str) -> None:
    parent = makedirs_in_root(root, posixpath.dirname(path))
    full = os.path.join(parent, posixpath.basename(path))
    if os.path.lexists(full):
        if os.path.isdir(full) and not os.path.islink(full):
            return
        os.unlink(full)
    os.symlink(target, full)


def note(text: str) -> None:
    sys.stderr.write(f"gpuship: {text}\n")
    sys.stderr.flush()


# -- the root -----------------------------------------------------------------------------------------------
def _overlay(lower: str, upper: str, work: str, root: str) -> None:
    os.makedirs(upper, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    mount("overlay", root, "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}")


def make_root(spec: dict) -> str:
    """Mount a writable, throw-away view of the image root at ``spec['root']``; returns how."""
    lower, rundir, root = spec["lower"], spec["rundir"], spec["root"]
    os.makedirs(root, exist_ok=True)
    try:
        _overlay(lower, os.path.join(rundir, "upper"), os.path.join(rundir, "work"), root)
        return "overlay"
    except OSError as first:
        scratch = os.path.join(rundir, "scratch")
        try:
            os.makedirs(scratch, exist_ok=True)
            mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=700")
            _overlay(lower, os.path.join(scratch, "upper"), os.path.join(scratch, "work"), root)
            return "overlay-tmpfs"
        except OSError:
            note(f"overlayfs is not usable here ({first.strerror}); copying the image root for this run")
    proc = subprocess.run(["cp", "-a", "--reflink=auto", lower + "/.", root + "/"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SetupError(f"cannot copy the image root: {proc.stderr.strip().splitlines()[-1:]}")
    bind(root, root)
    return "copy"


def prepare_root(spec: dict) -> None:
    """Everything both modes need in the root before the container starts."""
    root = spec["root"]
    make_root(spec)
    for path, content in sorted(spec.get("etc_files", {}).items()):
        write_in_root(root, path, content)
    for d in spec.get("dirs", []):
        makedirs_in_root(root, d)
    gpu = spec.get("gpu") or {}
    for host, path in gpu.get("mounts", []):
        bind(host, mount_target(root, path, os.path.isdir(host)), readonly=True)
    for path, target in gpu.get("symlinks", []):
        symlink_in_root(root, path, target)
    ld_dirs = gpu.get("ld_dirs", [])
    if ld_dirs:
        write_in_root(root, "/etc/ld.so.conf.d/000-gpuship-nvidia.conf", "".join(d + "\n" for d in ld_dirs))
        ldconfig = spec.get("ldconfig")
        if ldconfig:
            proc = subprocess.run([ldconfig, "-X", "-r", root, *ld_dirs], capture_output=True, text=True)
            if proc.returncode != 0 and spec.get("verbose"):
                note(f"ldconfig in the container root failed: {proc.stderr.strip()[-300:]}")
    for d in spec.get("tmpfs", []):
        makedirs_in_root(root, d)


def dev_setup(spec: dict) -> None:
    """A private /dev: tmpfs, the basic nodes and the GPU nodes bound from the host, pts, shm, mqueue."""
    root = spec["root"]
    dev = makedirs_in_root(root, "/dev")
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        target = os.path.join(dev, name)
        open(target, "wb").close()
        bind(f"/dev/{name}", target)
    gpu = spec.get("gpu") or {}
    for node in gpu.get("devices", []):
        target = mount_target(root, node["path"], False)
        bind(node["host_path"], target)
    pts = os.path.join(dev, "pts")
    os.makedirs(pts, exist_ok=True)
    try:
        mount("devpts", pts, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")
        os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    except OSError:
        pass
    shm = os.path.join(dev, "shm")
    os.makedirs(shm, exist_ok=True)
    mount("shm", shm, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"mode=1777,size={int(spec['shm_size'])}")
    mq = os.path.join(dev, "mqueue")
    os.makedirs(mq, exist_ok=True)
    try:
        mount("mqueue", mq, "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        os.rmdir(mq)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ):
        os.symlink(target, os.path.join(dev, name))


def chroot_mounts(spec: dict) -> None:
    """The kernel filesystems and the user's volumes (PID 1 of the new PID namespace does this)."""
    root = spec["root"]
    mount("proc", makedirs_in_root(root, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    sys_dir = makedirs_in_root(root, "/sys")
    try:
        mount("sysfs", sys_dir, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        bind("/sys", sys_dir, recursive=True)
        mount(None, sys_dir, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    dev_setup(spec)
    for vol in spec.get("volumes", []):
        source = vol["source"]
        if not os.path.exists(source):
            raise SetupError(f"volume source {source} does not exist on the host")
        target = mount_target(root, vol["destination"], os.path.isdir(source))
        bind(source, target, readonly=bool(vol.get("readonly")), recursive=True)
    if spec.get("readonly"):
        mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    for d in spec.get("tmpfs", []):
        mount("tmpfs", resolve_in_root(root, d), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")


# -- processes ----------------------------------------------------------------------------------------------
def limit_capabilities(keep: list[str]) -> None:
    """Drop every capability not in ``keep`` from the bounding set, so root in the container gets only those
    after exec (as with Docker's default set). Without CAP_MKNOD a process cannot make device nodes for GPUs it
    was not given (there is no device cgroup in the chroot flavour to stop it)."""
    wanted = {CAPABILITIES[c] for c in keep if c in CAPABILITIES}
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            last = int(fh.read().strip())
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):
        if cap not in wanted and _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            err = ctypes.get_errno()
            if err != errno.EINVAL:
                raise OSError(err, f"cannot drop capability {cap}: {os.strerror(err)}")


def _forward_to(pid_box: list[int]) -> None:
    def handler(signum: int, _frame: object) -> None:
        if pid_box and pid_box[0] > 0:
            try:
                os.kill(pid_box[0], signum)
            except ProcessLookupError:
                pass

    sigs = list(FORWARDED)
    if not os.isatty(0):  # from a terminal, ^C already reaches the whole foreground group
        sigs.append(signal.SIGINT)
    else:
        signal.signal(signal.SIGINT, lambda *_: None)
    for s in sigs:
        signal.signal(s, handler)


def _status_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def start_payload(spec: dict, report_fd: int) -> None:
    """In the child: enter the root, drop to the image's user and exec the command. Never returns."""
    proc = spec["process"]
    try:
        for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, *FORWARDED):
            signal.signal(s, signal.SIG_DFL)
        os.chroot(spec["root"])
        os.chdir(proc.get("cwd") or "/")
        for name, soft, hard in proc.get("rlimits", []):
            res = getattr(resource, f"RLIMIT_{name.upper()}")
            inf = resource.RLIM_INFINITY
            resource.setrlimit(res, (inf if soft < 0 else soft, inf if hard < 0 else hard))
        if "capabilities" in proc:
            limit_capabilities(proc["capabilities"])
        os.setgroups(proc.get("groups", []))
        os.setgid(proc["gid"])
        os.setuid(proc["uid"])
        os.umask(0o022)
        args = proc["args"]
        os.execvpe(args[0], args, proc["env"])
    except BaseException as exc:  # noqa: BLE001 - anything here means the command did not start
        msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        try:
            os.write(report_fd, f"cannot start {proc['args'][0]!r} in the image: {msg}".encode())
        finally:
            os._exit(EXEC_FAILED)


def init(spec: dict) -> int:
    """PID 1 of the container: set up the mounts, start the command, forward signals, reap, report."""
    prepare_root(spec)
    chroot_mounts(spec)
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        os.close(rfd)
        start_payload(spec, wfd)
    os.close(wfd)
    box = [child]
    _forward_to(box)
    report = b""
    while chunk := os.read(rfd, 4096):
        report += chunk
    os.close(rfd)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return EXEC_FAILED
        if pid == child:
            if report:
                raise SetupError(report.decode(errors="replace"))
            return _status_code(status)


def fail(spec: dict, message: str) -> int:
    try:
        with open(spec["errfile"], "w") as fh:
            fh.write(message)
    except (OSError, KeyError):
        note(message)
    return SETUP_FAILED


def main(argv: list[str]) -> int:
    with open(argv[1]) as fh:
        spec = json.load(fh)
    mode = spec["mode"]
    try:
        unshare(CLONE_NEWNS | ((CLONE_NEWPID | CLONE_NEWIPC) if mode == "chroot" else 0))
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        if mode == "runc":
            prepare_root(spec)
            argv_runc = spec["runc"]["argv"]
            sys.stdout.flush()
            os.execv(argv_runc[0], argv_runc)
        pid = os.fork()
        if pid == 0:
            try:
                code = init(spec)
            except SetupError as exc:
                code = fail(spec, str(exc))
            except OSError as exc:
                code = fail(spec, exc.strerror or str(exc))
            except BaseException as exc:  # noqa: BLE001
                code = fail(spec, f"{type(exc).__name__}: {exc}")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        box = [pid]
        _forward_to(box)
        while True:
            wpid, status = os.waitpid(pid, 0)
            if wpid == pid:
                return _status_code(status)
    except SetupError as exc:
        return fail(spec, str(exc))
    except OSError as exc:
        return fail(spec, exc.strerror or str(exc))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
