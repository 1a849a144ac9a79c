"""A ``debian:<codename>-slim`` equivalent, made from the Debian mirror and imported into the Docker Engine.

Where no registry base can be pulled (an air-gapped host, a proxy without Docker Hub), ``docker build`` of an
exported Dockerfile needs a Debian base from somewhere. This makes the same thing Docker's official image is
made of, the same way (debuerreotype): ``debootstrap --variant=minbase``, then its minimizing config and
"slimify" step, then ``tar | docker import``:

* dpkg excludes docs, man and info pages and locales (keeping copyright files), and they are removed;
* apt keeps no package caches and downloads no translations (``/etc/apt/apt.conf.d/docker-*``);
* ``/usr/sbin/policy-rc.d`` stops services from starting during ``apt-get install``;
* apt's sources are the mirror the base came from (the host's apt sources or ``mirror``), as deb822
  ``/etc/apt/sources.list.d/debian.sources``; package lists and logs are removed;
* the image config is the official one's: ``PATH`` and ``CMD ["bash"]``.

Only the Debian archive is needed (no registry). Needs root and ``debootstrap`` (``apt-get install debootstrap``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .. import tools
from ..errors import GpushipError, ToolMissing
from ..progress import NO_PROGRESS, Progress
from ..sources.debian.aptsources import suites_for

#: The image name tests and the benchmark use for the imported base.
DEFAULT_TAG = "gpuship-local/debian:bookworm-slim"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
#: Label on the imported image: the suites it was made from (mirror and suite names).
SOURCE_LABEL = "dev.gpuship.debian-base"

#: debuerreotype's slimify excludes (dpkg path-exclude / path-include lines).
SLIMIFY = """\
# gpuship: as debuerreotype-slimify (Docker's debian:*-slim): no docs, man pages or locales
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
"""

#: debuerreotype-minimizing-config: apt keeps no caches in image layers.
APT_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""
APT_FILES = {
    "etc/apt/apt.conf.d/docker-clean": APT_CLEAN,
    "etc/apt/apt.conf.d/docker-no-languages": 'Acquire::Languages "none";\n',
    "etc/apt/apt.conf.d/docker-gzip-indexes": 'Acquire::GzipIndexes "true";\nAcquire::CompressionTypes::Order:: "gz";\n',
    "etc/apt/apt.conf.d/docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
    "etc/dpkg/dpkg.cfg.d/docker-apt-speedup": "force-unsafe-io\n",
    "etc/dpkg/dpkg.cfg.d/docker": SLIMIFY,
}


def engine_has_image(tag: str, engine: str = "docker") -> bool:
    exe = tools.require(engine)
    return subprocess.run([exe, "image", "inspect", tag], capture_output=True).returncode == 0


def debian_sources(codename: str, mirror: str | None = None) -> str:
    """deb822 sources for ``codename`` (main, -updates, -security) from the host's apt sources or ``mirror``."""

    suites = suites_for(codename, mirror=mirror)
    by_uri: dict[str, list[str]] = {}
    comps: dict[str, tuple[str, ...]] = {}
    for s in suites:
        by_uri.setdefault(s.uri, []).append(s.name)
        comps[s.uri] = s.components
    stanzas = []
    for uri, names in by_uri.items():
        stanzas.append(
            f"Types: deb\nURIs: {uri}\nSuites: {' '.join(names)}\nComponents: {' '.join(comps[uri])}\n"
            f"Signed-By: {KEYRING}\n"
        )
    return "\n".join(stanzas)


def import_debian_base(
    tag: str = DEFAULT_TAG,
    codename: str = "bookworm",
    *,
    mirror: str | None = None,
    engine: str = "docker",
    rebuild: bool = False,
    progress: Progress = NO_PROGRESS,
) -> str:
    """Make a ``debian:<codename>-slim`` equivalent with debootstrap and import it as ``tag``; return ``tag``.

    An image already called ``tag`` is kept (``rebuild=True`` makes it again). Raises :class:`GpushipError` when
    debootstrap is missing, not run as root, or fails.
    """
    if not rebuild and engine_has_image(tag, engine):
        return tag
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ToolMissing("debootstrap is not installed", "apt-get install debootstrap")
    if os.geteuid() != 0:
        raise GpushipError(
            "making a Debian base with debootstrap needs root", "run as root, or pull debian:bookworm-slim"
        )
    sources = debian_sources(codename, mirror)
    uri = sources.split("URIs: ", 1)[1].split("\n", 1)[0]
    with tempfile.TemporaryDirectory(prefix="gpuship-debootstrap-") as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        progress.step(f"debootstrap --variant=minbase {codename} (from {uri})")
        argv = [debootstrap, "--variant=minbase"]
        if Path(KEYRING).is_file():
            argv.append(f"--keyring={KEYRING}")
        # The slimify excludes are in place before any package unpacks (as debuerreotype does).
        dpkg_cfg = root / "etc/dpkg/dpkg.cfg.d"
        dpkg_cfg.mkdir(parents=True)
        (dpkg_cfg / "docker").write_text(SLIMIFY)
        proc = subprocess.run([*argv, codename, str(root), uri], capture_output=True, text=True)
        if proc.returncode != 0:
            log = root / "debootstrap/debootstrap.log"
            detail = tools.last_line(log.read_text(errors="replace")) if log.is_file() else tools.last_line(proc.stderr)
            raise GpushipError(f"debootstrap failed: {detail}", "check the Debian mirror in the host's apt sources")
        progress.step("minimizing (apt/dpkg config, docs, caches, lists)")
        _minimize(root, sources)
        progress.step(f"importing into {engine} as {tag}")
        exe = tools.require(engine)
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-c", "."], stdout=subprocess.PIPE
        )
        imp = subprocess.run(
            [
                exe,
                "import",
                "--change",
                f"ENV PATH={PATH}",
                "--change",
                'CMD ["bash"]',
                "--change",
                f"LABEL {SOURCE_LABEL}={codename}",
                "-",
                tag,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise GpushipError(f"{engine} import failed: {tools.last_line(imp.stderr or imp.stdout)}")
    return tag


def _minimize(root: Path, sources: str) -> None:
    for rel, text in APT_FILES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    rc = root / "usr/sbin/policy-rc.d"
    rc.write_text("#!/bin/sh\nexit 101\n")
    rc.chmod(0o755)
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    src = root / "etc/apt/sources.list.d/debian.sources"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(sources)
    # What slimify removes from packages already unpacked, and the caches debootstrap leaves.
    share = root / "usr/share"
    for d in ("doc",):
        for pkg in (share / d).iterdir() if (share / d).is_dir() else ():
            for item in pkg.iterdir() if pkg.is_dir() and not pkg.is_symlink() else ():
                if item.name != "copyright":
                    _remove(item)
    for d in ("groff", "info", "linda", "lintian/overrides", "man"):
        for item in (share / d).iterdir() if (share / d).is_dir() else ():
            _remove(item)
    for item in (share / "locale").iterdir() if (share / "locale").is_dir() else ():
        if item.name != "locale.alias":
            _remove(item)
    for d in ("var/cache/apt/archives", "var/lib/apt/lists", "var/cache/apt"):
        for item in (root / d).glob("*") if (root / d).is_dir() else ():
            if item.name not in ("partial", "archives", "lock", "auxfiles"):
                _remove(item)
    for item in (root / "var/cache/apt/archives/partial").glob("*"):
        _remove(item)
    for item in (root / "var/log").rglob("*") if (root / "var/log").is_dir() else ():
        if item.is_file():
            item.write_bytes(b"")
    _remove(root / "debootstrap")
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").write_text("")
    resolv = root / "etc/resolv.conf"
    if resolv.is_file() and not resolv.is_symlink():
        resolv.write_text("")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()
