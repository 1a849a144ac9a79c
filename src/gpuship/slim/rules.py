"""What a slimmed image keeps: the traced files, and the rules that keep what a trace cannot see.

Everything is decided on the image's final filesystem (the unpacked root the built-in runner uses), in *real*
paths (relative to the root, with directory symlinks resolved). :func:`keep_set` applies, in order:

1. **the trace** — every path any view recorded (:mod:`.trace`); each symlink on the way is kept too, and for a
   path that does not exist, its existing parent directories (the workload wrote or looked there);
2. **the image's own command** — the Entrypoint/Cmd program (looked up on the image's ``PATH``), the working
   directory *whole* (the application's own files; unless it is ``/`` or a system directory) and the user's home;
3. **the safety list** (:data:`SAFETY`) — users and name service, the loader's cache and configuration, time zone,
   TLS certificates, OS release, licenses, dpkg's status, gpuship's own check; per Python installation: its
   landmark ``os.py``, ``lib-dynload``, the start-up codecs, every ``*.dist-info`` / ``*.egg-info``, ``*.pth``
   and ``pyvenv.cfg``; the locales named by ``LANG``/``LC_*`` (and ``C.utf8``), the zone named by ``TZ``;
4. **the GPU rule** (a CPU probe run never touches what GPU code loads lazily — cuDNN's sub-libraries, NVRTC and
   its builtins, nvJitLink, libNVVM and libdevice — so these are kept without being seen):

   * every file under ``site-packages/nvidia/`` (the CUDA wheels), always;
   * every CUDA-family library (:data:`CUDA_LIBRARY`) anywhere in the image, and ``/usr/local/cuda*/`` libraries,
     ``nvvm`` and ``bin``;
   * every ``lib*.so*`` in the ``lib``/``lib64``/``.libs``/``*.libs`` folders of a Python distribution the trace
     touched (``torch/lib``, ``numpy.libs``, …);
   * GPU frameworks *whole* (:data:`GPU_DISTRIBUTIONS`: torch, triton, numba-cuda, numba, llvmlite, cupy, jax, …)
     when the trace touched them, ``/etc/gpuship/gpu.json`` lists them, or a kept one requires them: their GPU
     code paths import modules a CPU run never imports;
5. **user patterns** (``--keep``);
6. **closures**, to a fixed point: every kept ELF's ``PT_INTERP`` and ``DT_NEEDED`` libraries, found the way
   glibc's loader finds them (``DT_RPATH`` unless ``DT_RUNPATH``, ``LD_LIBRARY_PATH``, ``DT_RUNPATH`` with
   ``$ORIGIN``, ``/etc/ld.so.conf``, the default folders; else a file of that name anywhere in the image, as wheels
   preload each other's libraries); every kept script's ``#!`` interpreter; a ``.pyc`` brings its ``.py``
   (the import system needs the source file beside a ``__pycache__`` entry) and a ``.py`` its ``.pyc``;
7. every symlink that resolves to something kept, every parent directory of something kept, and every directory
   that was empty in the image (mount points, ``/tmp``).
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..elf import dynamic_links
from ..errors import GpushipError
from ..inspect.owners import (
    MAX_DATABASE,
    Opener,
    Package,
    debian_packages,
    is_owner_database,
    python_distributions,
)
from ..sources.debian.libdeps import TRIPLETS, default_dirs, driver_provided
from ..streams import open_file
from .trace import PSEUDO, Trace

#: Kept in every image when present (globs over real paths; ``**`` crosses folders, a folder match keeps it whole).
SAFETY: tuple[str, ...] = (
    # users, name service, network configuration the C library reads
    "etc/passwd",
    "etc/group",
    "etc/shadow",
    "etc/gshadow",
    "etc/nsswitch.conf",
    "etc/hosts",
    "etc/host.conf",
    "etc/hostname",
    "etc/resolv.conf",
    "etc/gai.conf",
    "etc/services",
    "etc/protocols",
    "etc/mime.types",
    # the dynamic loader's cache and configuration
    "etc/ld.so.cache",
    "etc/ld.so.conf",
    "etc/ld.so.conf.d/**",
    # time zone, release, TLS trust
    "etc/localtime",
    "etc/timezone",
    "etc/os-release",
    "usr/lib/os-release",
    "etc/debian_version",
    "etc/ssl/**",
    "usr/lib/ssl/**",
    "usr/share/ca-certificates/**",
    "etc/ca-certificates.conf",
    "etc/pki/**",
    # gpuship's own GPU self-test and manifest
    "etc/gpuship/**",
    "usr/local/bin/gpuship-check",
    # package metadata and licenses
    "var/lib/dpkg/status",
    "var/lib/dpkg/status.d/**",
    "usr/share/doc/*/copyright",
    "usr/share/common-licenses/**",
    "**/*.dist-info/**",
    "**/*.egg-info/**",
    "**/site-packages/*.pth",
    "**/dist-packages/*.pth",
    "**/pyvenv.cfg",
    # each Python installation's landmark, extension modules and start-up codecs
    "**/lib/python3.*/os.py",
    "**/lib/python3.*/lib-dynload/**",
    "**/lib/python3.*/encodings/__init__.py",
    "**/lib/python3.*/encodings/aliases.py",
    "**/lib/python3.*/encodings/utf_8.py",
    # glibc's charset-conversion configuration (the modules themselves are traced when loaded)
    "usr/lib/*/gconv/gconv-modules",
    "usr/lib/*/gconv/gconv-modules.cache",
    "usr/lib/*/gconv/gconv-modules.d/**",
    # the C.UTF-8 locale Python coerces to (PEP 538)
    "usr/lib/locale/C.utf8/**",
    "usr/lib/locale/C.UTF-8/**",
)

#: The CUDA wheels and system CUDA: kept whole, touched or not (see the module doc, rule 4).
GPU_PATHS: tuple[str, ...] = (
    "**/site-packages/nvidia/**",
    "**/dist-packages/nvidia/**",
    "usr/local/cuda*/**/lib*.so*",
    "usr/local/cuda*/nvvm/**",
    "usr/local/cuda*/bin/**",
)

#: CUDA-family libraries (by file name), kept wherever they are: loaded lazily, often by ``dlopen`` from C.
CUDA_LIBRARY = re.compile(
    r"^lib(cudart|cublas|cublasLt|cudnn\w*|nvrtc[\w-]*|nvJitLink|nvjitlink|cufft\w*|curand|cusolver\w*|cusparse\w*"
    r"|nccl|nvToolsExt|nvtx\w*|cupti|nvperf\w*|nvjpeg|npp\w*|cufile\w*|nvshmem\w*|cudss\w*|cutensor\w*|nvblas"
    r"|nvvm|nvinfer\w*|nvonnxparser|nvparsers|nvfatbin|nvptxcompiler\w*|cudla)\.so(\.|$)"
)

#: Python distributions kept whole once kept at all (normalised names; globs).
GPU_DISTRIBUTIONS: tuple[str, ...] = (
    "torch",
    "torchvision",
    "torchaudio",
    "triton",
    "pytorch-triton*",
    "numba-cuda",
    "numba",
    "llvmlite",
    "cupy*",
    "jax",
    "jaxlib",
    "jax-cuda*",
    "cuda-python",
    "cuda-bindings",
    "cuda-core",
    "cuda-pathfinder",
    "cuda-toolkit",
    "nvidia-*",
    "tensorrt*",
    "onnxruntime-gpu",
    "pycuda",
    "xformers",
    "flash-attn",
    "bitsandbytes",
    "tensorflow*",
    "tf-keras",
    "paddlepaddle-gpu",
    "cuda-cccl",
    "nvmath-python",
)

#: A working directory kept whole unless it is one of these.
SYSTEM_DIRS = frozenset({"", "usr", "usr/local", "opt", "etc", "var", "srv", "home", "root", "tmp", "bin", "lib"})

_LIB_DIR = re.compile(r"(^|/)(lib|lib64|\.libs|[^/]+\.libs)$")
_SO_NAME = re.compile(r"^lib.*\.so(\.|$)")
_PYC = re.compile(r"^(.*)/__pycache__/([^/.]+)\.[^/]+\.pyc$")


def normalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def glob_regex(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One regex for path globs: ``**`` any depth (``**/x`` also matches ``x``), ``*`` and ``?`` within a name."""
    parts = []
    for pat in patterns:
        pat = pat.strip().strip("/")
        if not pat:
            continue
        out = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pat.startswith("**", i):
                out += ".*"
                i += 2
            elif pat[i] == "*":
                out += "[^/]*"
                i += 1
            elif pat[i] == "?":
                out += "[^/]"
                i += 1
            elif pat[i] == "[":
                j = pat.find("]", i)
                if j < 0:
                    out += re.escape(pat[i])
                    i += 1
                else:
                    out += "[" + pat[i + 1 : j].replace("\\", "\\\\") + "]"
                    i = j + 1
            else:
                out += re.escape(pat[i])
                i += 1
        parts.append(out)
    return re.compile("^(?:" + "|".join(parts) + ")$") if parts else None


# -- the image's final filesystem --------------------------------------------------------------------------------
@dataclass
class RootView:
    """The unpacked root: every path's kind, size and link target, and the names in each directory."""

    root: Path
    kind: dict[str, str] = field(default_factory=dict)  # "file" | "dir" | "symlink"
    size: dict[str, int] = field(default_factory=dict)
    mode: dict[str, int] = field(default_factory=dict)
    target: dict[str, str] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    by_name: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def scan(cls, root: Path | str) -> RootView:
        view = cls(Path(root))
        view.kind[""] = "dir"
        todo = [""]
        while todo:
            rel = todo.pop()
            names: list[str] = []
            try:
                it = os.scandir(view.root / rel if rel else view.root)
            except OSError:
                continue
            with it:
                for de in it:
                    path = f"{rel}/{de.name}" if rel else de.name
                    st = de.stat(follow_symlinks=False)
                    if not rel and de.name in PSEUDO:  # mount points: kept as (empty) folders, never read
                        if stat.S_ISDIR(st.st_mode):
                            names.append(de.name)
                            view.kind[path] = "dir"
                            view.mode[path] = st.st_mode
                        continue
                    names.append(de.name)
                    view.mode[path] = st.st_mode
                    if stat.S_ISLNK(st.st_mode):
                        view.kind[path] = "symlink"
                        view.target[path] = os.readlink(de.path)
                    elif stat.S_ISDIR(st.st_mode):
                        view.kind[path] = "dir"
                        todo.append(path)
                    elif stat.S_ISREG(st.st_mode):
                        view.kind[path] = "file"
                        view.size[path] = st.st_size
                    else:
                        continue
                    view.by_name.setdefault(de.name, []).append(path)
            view.children[rel] = sorted(names)
        return view

    def host(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def resolve(self, path: str, follow_last: bool = True) -> tuple[str | None, list[str], str]:
        """``(real path or None, symlinks passed, deepest existing real directory)`` of ``path`` in the image.

        Symlinks resolve inside the image (an absolute target restarts at its root; ``..`` stops there).
        """
        parts = [p for p in path.split("/") if p not in ("", ".")]
        cur: list[str] = []
        links: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if cur:
                    cur.pop()
                continue
            cand = "/".join([*cur, part])
            k = self.kind.get(cand)
            if k is None:
                return None, links, "/".join(cur)
            if k == "symlink" and (parts or follow_last):
                hops += 1
                if hops > 40:
                    return None, links, "/".join(cur)
                links.append(cand)
                t = self.target[cand]
                if t.startswith("/"):
                    cur = []
                parts = [p for p in t.split("/") if p not in ("", ".")] + parts
                continue
            if k != "dir" and parts:
                return None, links, "/".join(cur)
            cur.append(part)
        return "/".join(cur), links, "/".join(cur)

    def walk(self, top: str) -> Iterator[str]:
        """Every path under directory ``top`` (not following symlinks), ``top`` excluded."""
        todo = [top]
        while todo:
            d = todo.pop()
            for name in self.children.get(d, ()):
                p = f"{d}/{name}" if d else name
                yield p
                if self.kind.get(p) == "dir":
                    todo.append(p)

    def read_head(self, rel: str, n: int = 256) -> bytes:
        try:
            with open(self.host(rel), "rb") as fh:
                return fh.read(n)
        except OSError:
            return b""

    def read_text(self, rel: str) -> str | None:
        real, _, _ = self.resolve(rel)
        if real is None or self.kind.get(real) != "file":
            return None
        try:
            return self.host(real).read_text(errors="replace")
        except OSError:
            return None

    def links_map(self) -> dict[str, str]:
        """Symlink -> normalised target (relative to the root), for :func:`rebase_through_links`."""
        out: dict[str, str] = {}
        for p, t in self.target.items():
            base = "" if t.startswith("/") else posixpath.dirname(p)
            out[p] = posixpath.normpath(posixpath.join("/", base, t)).lstrip("/")
        return out


# -- ELF facts -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ElfLinks:
    """What the loader reads from an ELF file to load it: its interpreter, needed libraries and search paths."""

    interp: str = ""
    needed: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()
    runpath: tuple[str, ...] = ()


def elf_links(path: Path | str) -> ElfLinks | None:
    """The loader's view of ``path``, or None when it is not an ELF file (or one pyelftools cannot read)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"\x7fELF":
                return None
            fh.seek(0)
            links = dynamic_links(ELFFile(fh))
            return ElfLinks(links.interp, links.needed, links.rpath, links.runpath)
    except (ELFError, OSError):
        return None
    except Exception:  # noqa: BLE001 - pyelftools raises many kinds on malformed input; such a file is skipped
        return None


# -- the keep set ----------------------------------------------------------------------------------------------
@dataclass
class KeepSet:
    """Real paths kept, each with the first rule that kept it."""

    files: dict[str, str] = field(default_factory=dict)  # files and symlinks
    dirs: dict[str, str] = field(default_factory=dict)

    def __contains__(self, path: str) -> bool:
        return path in self.files or path in self.dirs

    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.files.values():
            out[r] = out.get(r, 0) + 1
        return dict(sorted(out.items()))


@dataclass(frozen=True)
class Context:
    """What the rules need to know about the image besides its files."""

    arch: str = "amd64"
    env: Mapping[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    keep: tuple[str, ...] = ()


class Keeper:
    """Applies the rules (module doc) to a :class:`RootView`; :meth:`run` returns the :class:`KeepSet`."""

    def __init__(self, view: RootView, ctx: Context) -> None:
        self.view = view
        self.ctx = ctx
        self.kept = KeepSet()
        self._todo: list[str] = []
        self._elf_cache: dict[str, ElfLinks | None] = {}
        self._ld_dirs: list[str] | None = None
        self.distributions: list[Package] = []
        self.debian: list[Package] = []
        self.owner: dict[str, tuple[str, str, str]] = {}  # real path -> (kind, name, version)
        self.whole_distributions: list[str] = []
        self.touched_distributions: list[str] = []

    # -- primitives ------------------------------------------------------------------------------------------
    def keep(self, path: str, reason: str, *, whole: bool = False) -> bool:
        """Keep ``path`` (image path, absolute or relative) and the symlinks on its way; True if it exists."""
        real, links, existing = self.view.resolve(path)
        for link in links:
            self._add_file(link, reason)
        if real is None:
            self.kept.dirs.setdefault(existing, reason)
            return False
        kind = self.view.kind.get(real)
        if kind == "dir":
            self.kept.dirs.setdefault(real, reason)
            if whole:
                for p in self.view.walk(real):
                    k = self.view.kind.get(p)
                    if k == "dir":
                        self.kept.dirs.setdefault(p, reason)
                    elif k == "symlink":
                        self.keep(p, reason)
                    else:
                        self._add_file(p, reason)
        else:
            self._add_file(real, reason)
        return True

    def _add_file(self, real: str, reason: str) -> None:
        if real not in self.kept.files:
            self.kept.files[real] = reason
            if self.view.kind.get(real) == "file":
                self._todo.append(real)

    def keep_glob(self, patterns: Sequence[str], reason: str) -> int:
        rx = glob_regex(patterns)
        if rx is None:
            return 0
        n = 0
        for p, k in list(self.view.kind.items()):
            if p and rx.match(p):
                self.keep(p, reason, whole=(k == "dir"))
                n += 1
        return n

    # -- lookups ---------------------------------------------------------------------------------------------
    def search_path(self) -> list[str]:
        path = self.ctx.env.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return [d for d in path.split(":") if d]

    def which(self, name: str) -> str | None:
        if "/" in name:
            base = self.ctx.working_dir or "/"
            path = name if name.startswith("/") else posixpath.join(base, name)
            return path if self.view.resolve(path)[0] is not None else None
        for d in self.search_path():
            real, _, _ = self.view.resolve(f"{d}/{name}")
            if real is not None and self.view.kind.get(real) == "file":
                return f"{d}/{name}"
        return None

    def ld_dirs(self) -> list[str]:
        """The folders the loader's cache covers (``/etc/ld.so.conf``, with includes) and its defaults."""
        if self._ld_dirs is None:
            dirs: list[str] = []
            seen: set[str] = set()

            def read_conf(rel: str, depth: int = 0) -> None:
                if depth > 8 or rel in seen:
                    return
                seen.add(rel)
                text = self.view.read_text(rel)
                if text is None:
                    return
                for line in text.splitlines():
                    line = line.split("#", 1)[0].strip()
                    if not line:
                        continue
                    if line.startswith("include"):
                        pattern = line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else ""
                        pattern = pattern if pattern.startswith("/") else "/etc/" + pattern
                        folder = posixpath.dirname(pattern)
                        real, _, _ = self.view.resolve(folder)
                        if real is not None:
                            for n in self.view.children.get(real, ()):
                                if fnmatch.fnmatchcase(n, posixpath.basename(pattern)):
                                    read_conf(f"{real}/{n}", depth + 1)
                    else:
                        dirs.append(line.strip("/"))

            read_conf("etc/ld.so.conf")
            conf_d, _, _ = self.view.resolve("etc/ld.so.conf.d")
            if conf_d is not None and not dirs:
                for n in self.view.children.get(conf_d, ()):
                    if n.endswith(".conf"):
                        read_conf(f"{conf_d}/{n}")
            self._ld_dirs = dirs + [d for d in default_dirs(self.ctx.arch) if d not in dirs]
        return self._ld_dirs

    def _expand(self, d: str, origin: str) -> str:
        t = TRIPLETS.get(self.ctx.arch, "")
        d = d.replace("${ORIGIN}", "$ORIGIN").replace("$ORIGIN", "/" + origin)
        d = d.replace("${LIB}", "$LIB").replace("$LIB", f"lib/{t}")
        d = d.replace("${PLATFORM}", "$PLATFORM").replace(
            "$PLATFORM", {"amd64": "x86_64", "arm64": "aarch64"}.get(self.ctx.arch, self.ctx.arch)
        )
        return d

    def find_library(self, name: str, dirs: Iterable[str]) -> str | None:
        for d in dirs:
            real, _, _ = self.view.resolve(f"{d}/{name}")
            if real is not None and self.view.kind.get(real) == "file":
                return f"{d}/{name}"
        return None

    def library_dirs(self, origin: str, links: ElfLinks | None) -> list[str]:
        env_dirs = [d for d in self.ctx.env.get("LD_LIBRARY_PATH", "").split(":") if d]
        dirs: list[str] = []
        if links is not None and not links.runpath:
            dirs += [self._expand(d, origin) for d in links.rpath]
        dirs += env_dirs
        if links is not None:
            dirs += [self._expand(d, origin) for d in links.runpath]
        return dirs + self.ld_dirs()

    def keep_library(self, name: str, reason: str, origin: str = "", links: ElfLinks | None = None) -> None:
        if "/" in name:
            self.keep(name if name.startswith("/") else f"{origin}/{name}", reason)
            return
        if driver_provided(name):
            return
        found = self.find_library(name, self.library_dirs(origin, links))
        if found is not None:
            self.keep(found, reason)
            return
        for p in self.view.by_name.get(name, ()):  # shipped elsewhere: wheels preload each other's libraries
            self.keep(p, reason)

    # -- the rules -------------------------------------------------------------------------------------------
    def apply_trace(self, trace: Trace) -> None:
        for kind in ("open", "module", "map", "exe", "ld", "touch"):
            for p in trace.all(kind):
                if p.startswith("/"):
                    self.keep(p, "trace")
        for p in trace.all("ld-try"):
            if p.startswith("/") and self.view.resolve(p)[0] is not None:
                self.keep(p, "trace")
        for p in trace.all("list", "dir"):
            if p.startswith("/"):
                self.keep(p, "trace")
        for name in trace.all("dlopen"):
            self.keep_library(name, "trace", origin=self.ctx.working_dir.strip("/"))
        for name in trace.all("exec"):
            found = self.which(name) if not name.startswith("/") else name
            if found:
                self.keep(found, "trace")

    def apply_command(self) -> None:
        if self.ctx.command:
            found = self.which(self.ctx.command[0])
            if found:
                self.keep(found, "command")
        wd = self.ctx.working_dir.strip("/")
        if wd:
            real, _, _ = self.view.resolve(wd)
            self.keep(wd, "app", whole=real is not None and real not in SYSTEM_DIRS)
        home = self._home()
        if home:
            self.keep(home, "command")

    def _home(self) -> str | None:
        user = (self.ctx.user or "root").split(":", 1)[0]
        text = self.view.read_text("etc/passwd") or ""
        for line in text.splitlines():
            f = line.split(":")
            if len(f) >= 6 and (f[0] == user or f[2] == user):
                return f[5]
        return None

    def apply_safety(self) -> None:
        self.keep_glob(SAFETY, "safety")
        names: set[str] = set()
        for var in ("LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "LC_NUMERIC", "LC_TIME", "LC_COLLATE", "LC_MONETARY"):
            v = self.ctx.env.get(var, "")
            if v and v not in ("C", "POSIX"):
                names.add(v)
                lang, dot, codeset = v.partition(".")
                if dot:
                    names.add(f"{lang}.{codeset.lower().replace('-', '')}")
        for n in sorted(names):
            self.keep_glob(
                [f"usr/lib/locale/{n}/**", "usr/lib/locale/locale-archive", f"usr/share/locale/{n}/**"], "safety"
            )
        tz = self.ctx.env.get("TZ", "").lstrip(":")
        if tz:
            self.keep(tz if tz.startswith("/") else f"usr/share/zoneinfo/{tz}", "safety")

    def apply_gpu(self) -> None:
        self.keep_glob(GPU_PATHS, "gpu")
        for name, paths in self.view.by_name.items():
            if CUDA_LIBRARY.match(name):
                for p in paths:
                    self.keep(p, "gpu")

    def apply_python(self) -> None:
        """The lib-folder rule and GPU frameworks kept whole (needs the trace applied first)."""
        traced = {p for p, r in self.kept.files.items() if r in ("trace", "command")}
        by_name = {normalize_name(d.name): d for d in self.distributions}
        touched = [d for d in self.distributions if any(self._real(p) in traced for p in d.paths)]
        self.touched_distributions = sorted(normalize_name(d.name) for d in touched)
        for d in touched:
            for p in d.paths:
                if _LIB_DIR.search(posixpath.dirname(p)) and _SO_NAME.match(posixpath.basename(p)):
                    self.keep(p, "python-libs")
        gpu_rx = glob_regex(GPU_DISTRIBUTIONS)
        assert gpu_rx is not None
        wanted = [normalize_name(d.name) for d in touched]
        wanted += [normalize_name(f) for f in self._manifest_frameworks()]
        done: set[str] = set()
        while wanted:
            n = wanted.pop()
            if n in done or not gpu_rx.match(n):
                continue
            done.add(n)
            matches = [d for k, d in by_name.items() if k == n or (n == "cupy" and k.startswith("cupy"))]
            for d in matches:
                for p in d.paths:
                    self.keep(p, "gpu")
                wanted += [r for r in self._requires(d) if r in by_name]
        self.whole_distributions = sorted(k for k in by_name if k in done)

    def _real(self, path: str) -> str:
        real, _, _ = self.view.resolve(path)
        return real if real is not None else path

    def _manifest_frameworks(self) -> list[str]:

        text = self.view.read_text("etc/gpuship/gpu.json")
        if not text:
            return []
        try:
            return [str(f) for f in json.loads(text).get("frameworks") or []]
        except (ValueError, AttributeError):
            return []

    def _requires(self, dist: Package) -> list[str]:
        meta = next((p for p in dist.paths if p.endswith(".dist-info/METADATA")), None)
        text = self.view.read_text(meta) if meta else None
        out = []
        for line in (text or "").splitlines():
            if not line.strip():
                break  # the headers end at the first blank line
            if line.startswith("Requires-Dist:"):
                m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line[len("Requires-Dist:") :])
                if m:
                    out.append(normalize_name(m.group(1)))
        return out

    def close(self) -> None:
        """ELF interpreters and libraries, script interpreters, .py/.pyc pairs — until nothing new is kept."""
        while self._todo:
            real = self._todo.pop()
            origin = posixpath.dirname(real)
            head = self.view.read_head(real, 128)
            if head.startswith(b"\x7fELF"):
                links = self._elf(real)
                if links is not None:
                    if links.interp:
                        self.keep(links.interp, "elf")
                    for so in links.needed:
                        self.keep_library(so, "elf", origin, links)
            elif head.startswith(b"#!") and self.view.mode.get(real, 0) & 0o111:
                self._keep_interpreter(head)
            m = _PYC.match(real)
            if m:
                self.keep(f"{m.group(1)}/{m.group(2)}.py", "python")
            elif real.endswith(".py"):
                cache = f"{origin}/__pycache__"
                stem = posixpath.basename(real)[:-3]
                for n in self.view.children.get(cache, ()):
                    if n.startswith(stem + ".") and n.endswith(".pyc"):
                        self.keep(f"{cache}/{n}", "python")

    def _elf(self, real: str) -> ElfLinks | None:
        if real not in self._elf_cache:
            self._elf_cache[real] = elf_links(self.view.host(real))
        return self._elf_cache[real]

    def _keep_interpreter(self, head: bytes) -> None:
        line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
        words = line.split()
        if not words:
            return
        prog = words[0]
        if posixpath.basename(prog) == "env":
            self.keep(prog, "script")
            rest = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
            if rest:
                found = self.which(rest[0])
                if found:
                    self.keep(found, "script")
            return
        self.keep(prog, "script")

    def finish(self) -> None:
        """Symlinks to kept things, parent directories, directories that were empty."""
        for _ in range(3):  # links to links to kept things settle in a couple of rounds
            ancestors = self._ancestors()
            added = False
            for p in list(self.view.target):
                if p in self.kept.files:
                    continue
                real, links, _ = self.view.resolve(p)
                if real is not None and (real in self.kept.files or real in self.kept.dirs or real in ancestors):
                    for link in [p, *links]:
                        if link not in self.kept.files:
                            self.kept.files[link] = "link"
                            added = True
            if not added:
                break
        for p, k in self.view.kind.items():
            if k == "dir" and p and not self.view.children.get(p):
                self.kept.dirs.setdefault(p, "empty-dir")
        for a in self._ancestors():
            self.kept.dirs.setdefault(a, "parent")

    def _ancestors(self) -> set[str]:
        out: set[str] = set()
        for p in [*self.kept.files, *self.kept.dirs]:
            d = posixpath.dirname(p)
            while d and d not in out:
                out.add(d)
                d = posixpath.dirname(d)
        out.add("")
        return out

    def load_owners(self) -> None:
        """Python distributions (``RECORD``) and Debian packages (dpkg) of the image, and who owns each path."""
        records: dict[str, Opener] = {}
        dpkg: dict[str, Opener] = {}
        for p, k in self.view.kind.items():
            if k != "file" or not is_owner_database(p):
                continue
            host = self.view.host(p)
            try:
                if host.stat().st_size > MAX_DATABASE:
                    continue  # not a real package database; its files count as nobody's
            except OSError:
                continue
            (records if p.endswith("/RECORD") else dpkg)[p] = partial(open_file, host)
        links = self.view.links_map()
        self.distributions = python_distributions(records, links)
        self.debian = debian_packages(dpkg, links)
        for pkg in [*self.distributions, *self.debian]:
            for p in pkg.paths:
                self.owner.setdefault(self._real(p), (pkg.kind, pkg.name, pkg.version))

    def run(self, trace: Trace) -> KeepSet:
        self.load_owners()
        self.apply_trace(trace)
        self.apply_command()
        self.apply_safety()
        self.apply_gpu()
        self.apply_python()
        if self.ctx.keep:
            self.keep_glob(self.ctx.keep, "user")
        self.close()
        self.finish()
        return self.kept


def keep_set(view: RootView, trace: Trace, ctx: Context) -> tuple[KeepSet, Keeper]:
    """What the slimmed image keeps (see the module doc); the :class:`Keeper` has the owners for the report."""
    keeper = Keeper(view, ctx)
    return keeper.run(trace), keeper


def check_patterns(patterns: Sequence[str]) -> tuple[str, ...]:
    """``--keep`` patterns, checked: relative or absolute image paths, globs allowed."""
    out = []
    for p in patterns:
        q = p.strip()
        if not q or q.strip("/") in ("", "**"):
            raise GpushipError(
                f"--keep {p!r} keeps everything", "give a folder or a glob, e.g. --keep '/usr/share/zoneinfo/**'"
            )
        out.append(q.lstrip("/"))
    return tuple(out)


def describe_rules() -> dict[str, object]:
    """The fixed rule lists (for the report)."""
    return {"safety": list(SAFETY), "gpu_paths": list(GPU_PATHS), "gpu_distributions": list(GPU_DISTRIBUTIONS)}
