"""``gpuship export --format squashfs``: an image as one squashfs file that enroot and pyxis run directly
(``srun --container-image=./image.sqsh``, ``enroot create image.sqsh``).

What ``enroot import`` produces, made without enroot: the layers applied into one root filesystem, the
image config written where enroot's runtime reads it (enroot's ``docker::configure``):

* ``/etc/environment`` — the ``Env`` lines;
* ``/etc/rc`` — the labels as comments, ``cd WORKDIR``, source ``/etc/rc.local``, then
  ``exec ENTRYPOINT "$@"`` (arguments given) or ``exec ENTRYPOINT CMD``;
* ``/etc/rc.local`` — empty hook; ``/etc/fstab`` — empty (the config's volumes are not modelled);

then the owner's read (and directories' search) bits are added like enroot's ``fixperms`` (enroot runs
unprivileged), and ``mksquashfs`` packs it with ``-all-root`` (as enroot does) and fixed timestamps
(``SOURCE_DATE_EPOCH``, else 0), no xattrs, ``-reproducible``: the same image gives the same bytes.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from .. import tools
from ..errors import GpushipError, IntegrityError
from ..oci import Image, ImageConfig
from ..oci.tarball import source_date_epoch
from ..oci.unpack import unpack
from ..progress import NO_PROGRESS, Progress

Compression = Literal["gzip", "zstd", "xz", "lzo", "lz4", "none"]
COMPRESSIONS: tuple[str, ...] = ("gzip", "zstd", "xz", "lzo", "lz4", "none")


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def enroot_files(config: ImageConfig) -> dict[str, bytes]:
    """The files enroot's runtime reads, for ``config`` (paths relative to the root)."""
    environment = "".join(f"{_one_line(e)}\n" for e in config.env)
    rc: list[str] = [f"# {_one_line(k)} {_one_line(v)}" for k, v in sorted(config.labels.items())]
    if rc:
        rc.append("")
    workdir = config.working_dir or "/"
    entrypoint = " ".join(shlex.quote(a) for a in config.entrypoint)
    cmd = list(config.cmd)
    if not config.entrypoint and not cmd:
        cmd = ["/bin/sh"]
    cmd_text = " ".join(shlex.quote(a) for a in cmd)
    rc += [
        f"mkdir -p {shlex.quote(workdir)} 2> /dev/null",
        f"cd {shlex.quote(workdir)} && unset OLDPWD || exit 1",
        "",
        "if [ -s /etc/rc.local ]; then",
        "    . /etc/rc.local",
        "fi",
        "",
        "if [ $# -gt 0 ]; then",
        f'    exec {entrypoint} "$@"' if entrypoint else '    exec "$@"',
        "else",
        f"    exec {' '.join(p for p in (entrypoint, cmd_text) if p)}",
        "fi",
    ]
    rc_local = (
        "# This file is sourced by /etc/rc when the container starts.\n"
        "# It can be used to manipulate the entrypoint or the command of the container.\n"
    )
    return {
        "etc/environment": environment.encode(),
        "etc/rc": ("\n".join(rc) + "\n").encode(),
        "etc/rc.local": rc_local.encode(),
        "etc/fstab": b"",
    }


def _real_dir(root: Path, rel: str) -> Path:
    """``root/rel`` as a real directory inside ``root`` (made if missing); never through a symlink."""
    path = root
    for part in Path(rel).parts:
        path = path / part
        if path.is_symlink():
            raise IntegrityError(
                f"/{rel} is a symlink in the image", "enroot's config files cannot be written through it"
            )
        if not path.exists():
            path.mkdir(mode=0o755)
        elif not path.is_dir():
            raise IntegrityError(f"/{rel} is not a directory in the image")
    return path


def write_enroot_config(rootfs: Path | str, config: ImageConfig) -> None:
    """Write :func:`enroot_files` into an unpacked root filesystem (replacing what the image had there)."""
    root = Path(rootfs)
    for rel, data in enroot_files(config).items():
        parent = _real_dir(root, os.path.dirname(rel))
        target = parent / os.path.basename(rel)
        if target.is_symlink() or target.exists():
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(target, 0o644)
    # like enroot: the working directory exists in the image
    workdir = (config.working_dir or "/").strip("/")
    if workdir:
        try:
            _real_dir(root, workdir)
        except IntegrityError:
            pass  # a symlinked workdir: /etc/rc's `mkdir -p` handles it at start


def fix_permissions(rootfs: Path | str) -> None:
    """Owner read on everything, owner search on directories and executables, owner write on directories
    up to depth 5 (what enroot's ``fixperms`` does, since its containers run as the calling user)."""
    root = str(rootfs)
    base_depth = root.rstrip("/").count("/")
    for dirpath, _dirnames, filenames in os.walk(root):
        depth = dirpath.rstrip("/").count("/") - base_depth
        st = os.lstat(dirpath)
        mode = stat.S_IMODE(st.st_mode) | stat.S_IRUSR | stat.S_IXUSR
        if depth <= 5:
            mode |= stat.S_IWUSR
        os.chmod(dirpath, mode)
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                continue
            mode = stat.S_IMODE(st.st_mode) | stat.S_IRUSR
            if mode & 0o111:
                mode |= stat.S_IXUSR
            os.chmod(p, mode)


def set_times(rootfs: Path | str, epoch: int) -> None:
    """Every entry's mtime (links' own) to ``epoch``, so the packed times never depend on when we ran."""
    for dirpath, dirnames, filenames in os.walk(rootfs, topdown=False):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (epoch, epoch), follow_symlinks=False)
    os.utime(rootfs, (epoch, epoch))


def mksquashfs_argv(
    rootfs: Path | str, out: Path | str, compression: str = "gzip", epoch: int | None = None
) -> list[str]:
    """The reproducible mksquashfs command line (squashfs-tools >= 4.4)."""
    if compression not in COMPRESSIONS:
        raise GpushipError(f"unknown squashfs compression {compression!r}", "use " + ", ".join(COMPRESSIONS))
    argv = [
        "mksquashfs",
        str(rootfs),
        str(out),
        "-noappend",
        "-reproducible",
        "-all-root",
        "-no-xattrs",
        "-no-progress",
        "-quiet",
    ]
    if "SOURCE_DATE_EPOCH" not in os.environ:
        # with SOURCE_DATE_EPOCH set, mksquashfs takes it for the filesystem time and clamps file times to it
        # (and refuses these flags); the tree's own times are set to it by set_times() beforehand
        t = str(0 if epoch is None else epoch)
        argv += ["-mkfs-time", t, "-all-time", t]
    if compression == "none":
        argv += ["-noI", "-noD", "-noF", "-noX"]
    else:
        argv += ["-comp", compression]
    return argv


def squashfs_from_rootfs(rootfs: Path | str, out: Path | str, compression: str = "gzip") -> Path:
    """Pack a prepared root filesystem; the file appears at ``out`` only when complete."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tools.run(mksquashfs_argv(rootfs, tmp, compression), what="mksquashfs")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _force_rmtree(path: Path) -> None:
    def onerror(func: Callable[..., object], p: str, exc: object) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=onerror)
    else:
        shutil.rmtree(path, onerror=onerror)


def export_squashfs(
    image: Image,
    out: Path | str,
    *,
    compression: str = "gzip",
    progress: Progress = NO_PROGRESS,
) -> Path:
    """Write ``image`` as a squashfs file enroot/pyxis can run. Nothing is left at ``out`` on failure."""

    tools.require("mksquashfs")
    out = Path(out)
    if out.is_dir():
        raise GpushipError(f"cannot write {out}: it is a directory", "give a file name, e.g. -o image.sqsh")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".d"))
    except OSError as exc:
        raise GpushipError(f"cannot write {out}: {exc.strerror}", "check that its directory is writable") from exc
    try:
        rootfs = work / "rootfs"
        progress.step(f"unpacking {len(image.layers)} layers")
        unpack(image, rootfs)
        write_enroot_config(rootfs, image.config)
        fix_permissions(rootfs)
        set_times(rootfs, source_date_epoch())
        progress.step("packing squashfs")
        return squashfs_from_rootfs(rootfs, out, compression)
    finally:
        _force_rmtree(work)
