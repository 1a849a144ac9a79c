"""Run a workload in the built-in runner and record which files it opens and loads.

Three views, all merged into one :class:`Trace` (paths as the container sees them):

1. **Python audit hooks** (:mod:`.trace_hook`): a ``.pth`` file bind-mounted into every site-packages directory of
   the image installs them in every Python process — ``open`` (every module, ``.pyc`` and data file), directory
   listings, ``ctypes.dlopen``, programs started, directories written to; at exit, the ``__file__`` of every
   module and every file mapped into the process (``/proc/self/maps``).
2. **The dynamic loader**: ``LD_DEBUG=files,libs`` with ``LD_DEBUG_OUTPUT`` in the trace directory makes glibc's
   ``ld.so`` log, for every dynamically linked process (Python or not, and libraries ``dlopen``\\ ed from C code),
   each library it tried and loaded, and each program it started. glibc honours it for programs that are not
   set-uid, which is every program a container normally runs.
3. **The kernel's view from the host**: while the workload runs, a sampler thread reads ``/proc/<pid>/maps``,
   ``/proc/<pid>/fd``, ``exe`` and ``cwd`` of every process of the container (the descendants of this process that
   are not the runner itself) every :data:`SAMPLE_SECONDS`; a chroot's prefix is cut off. It sees non-Python
   programs and the files they hold open, but only those that live through a sample.

Not used: fanotify (needs ``CAP_SYS_ADMIN`` in the host's namespace and reports the overlay's lower files
unreliably) and strace (it would have to wrap the runner's own process). What no view sees: a file only
``stat``\\ ed, never opened (audit hooks have no ``os.stat`` event) — the keep rules in :mod:`.rules` cover the
ones that matter (package metadata, landmarks, the loader's cache).

The trace directory, hook and ``.pth`` file live in a host temporary directory mounted at :data:`MOUNT`; the image
is never changed for tracing.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..cache import Cache
from ..errors import GpushipError
from ..oci.image import Image
from ..run import RunOptions, run_image
from ..run.options import Runtime, Volume

#: Where the tracer's directory is mounted in the container.
MOUNT = "/.gpuship-slim"
TRACE_DIR = f"{MOUNT}/trace"
HOOK_PATH = f"{MOUNT}/hook.py"
#: The .pth file's name in each site-packages directory: sorts first, so the hook is in place before other .pth
#: files import anything.
PTH_NAME = "00000-gpuship-slim-trace.pth"
SAMPLE_SECONDS = 0.1
#: Container paths that are never image files.
PSEUDO = ("proc", "sys", "dev", MOUNT.lstrip("/"))


@dataclass(frozen=True)
class Probe:
    """How the workload is run: the command (Docker's rules: ``command`` replaces the image's Cmd, ``entrypoint``
    its Entrypoint), extra environment, and for a server, the HTTP path to ask once it is up."""

    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    http: str | None = None
    port: int | None = None
    timeout: float = 600.0
    runtime: Runtime = "builtin"

    def describe(self, image: Image) -> list[str]:
        ep = list(image.config.entrypoint if self.entrypoint is None else self.entrypoint)
        cmd = list(self.command) if self.command else (list(image.config.cmd) if self.entrypoint is None else [])
        return ep + cmd


@dataclass(frozen=True)
class RunOutcome:
    """What one run of the workload did."""

    exit_code: int | None
    stdout: bytes
    seconds: float
    http_status: int | None = None
    http_body: bytes = b""

    def to_json(self) -> dict[str, object]:
        d: dict[str, object] = {"exit_code": self.exit_code, "seconds": round(self.seconds, 2)}
        if self.http_status is not None:
            d["http_status"] = self.http_status
            d["http_body"] = self.http_body.decode("utf-8", "replace")[:2000]
        return d


@dataclass(frozen=True)
class Trace:
    """Paths (absolute, as the container saw them) by what touched them.

    Kinds: ``open`` (opened or read), ``module`` (a module's file), ``map`` (mapped into a process), ``exe``
    (a running program), ``exec`` (a program started: a path, or a name looked up on PATH), ``dlopen`` (a library
    asked for by name or path), ``ld`` (loaded by the dynamic loader), ``ld-try`` (a path the loader tried),
    ``list`` (a directory listed), ``dir`` (a working directory), ``touch`` (written, made or removed).
    """

    paths: Mapping[str, frozenset[str]]
    python_processes: int = 0
    loader_logs: int = 0
    sampled_processes: int = 0

    def all(self, *kinds: str) -> set[str]:
        out: set[str] = set()
        for k in kinds or tuple(self.paths):
            out |= self.paths.get(k, frozenset())
        return out

    def summary(self) -> dict[str, object]:
        return {
            "python_processes": self.python_processes,
            "loader_logs": self.loader_logs,
            "sampled_processes": self.sampled_processes,
            "paths": {k: len(v) for k, v in sorted(self.paths.items())},
        }


# -- where Python looks for .pth files ---------------------------------------------------------------------------
_SITE = re.compile(r"(^|/)lib/python3(\.\d+)?/(site|dist)-packages$")


def site_dirs(rootfs: Path) -> list[str]:
    """Every site-packages / dist-packages directory of the image (real paths, relative to the root)."""
    found: list[str] = []
    root = str(rootfs)
    for dirpath, dirnames, _ in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel
        depth = rel.count("/") + 1 if rel else 0
        if rel.split("/", 1)[0] in PSEUDO:
            dirnames[:] = []
            continue
        if _SITE.search(rel):
            found.append(rel)
            dirnames[:] = []
            continue
        if depth >= 6:
            dirnames[:] = []
        dirnames.sort()
    return found


# -- the process sampler (the kernel's view) ---------------------------------------------------------------------
def _ppids() -> dict[int, int]:
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
            out[int(name)] = int(stat[stat.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return out


def _children(pid: int, ppids: Mapping[int, int]) -> set[int]:
    return {p for p, pp in ppids.items() if pp == pid}


def _descendants(pid: int, ppids: Mapping[int, int]) -> set[int]:
    out: set[int] = set()
    todo = [pid]
    kids: dict[int, list[int]] = {}
    for p, pp in ppids.items():
        kids.setdefault(pp, []).append(p)
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _is_runner(pid: int) -> bool:
    """The runner's own processes (the launcher, runc): their files are the host's, not the image's."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return True
    if not argv or not argv[0]:
        return True
    if os.path.basename(argv[0]) == b"runc":
        return True
    return any(a.endswith(b"/run/launcher.py") for a in argv[:4])


class ProcSampler(threading.Thread):
    """Samples the files the container's processes have mapped, hold open, run from and work in."""

    def __init__(self, parent: int, interval: float = SAMPLE_SECONDS) -> None:
        super().__init__(name="gpuship-slim-sampler", daemon=True)
        self.parent = parent
        self.interval = interval
        self.paths: dict[str, set[str]] = {"map": set(), "open": set(), "exe": set(), "dir": set()}
        self.pids: set[int] = set()
        self._halt = threading.Event()
        self._maps_seen: dict[int, int] = {}

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - sampling is best effort; the other views remain
                pass
            self._halt.wait(self.interval)

    def sample(self) -> None:
        for pid in _descendants(self.parent, _ppids()):
            if _is_runner(pid):
                continue
            try:
                root = os.readlink(f"/proc/{pid}/root")
            except OSError:
                continue
            self.pids.add(pid)
            prefix = "" if root == "/" else root.rstrip("/")

            def add(kind: str, path: str, prefix: str = prefix) -> None:
                path = path.removesuffix(" (deleted)")
                if not path.startswith("/"):
                    return
                if prefix:
                    if not (path == prefix or path.startswith(prefix + "/")):
                        return
                    path = path[len(prefix) :] or "/"
                self.paths[kind].add(path)

            for kind, link in (("exe", "exe"), ("dir", "cwd")):
                with contextlib.suppress(OSError):
                    add(kind, os.readlink(f"/proc/{pid}/{link}"))
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        add("open", os.readlink(f"/proc/{pid}/fd/{fd}"))
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/maps", "rb") as fh:
                    data = fh.read()
                if self._maps_seen.get(pid) == hash(data):
                    continue
                self._maps_seen[pid] = hash(data)
                for line in data.decode("utf-8", "surrogateescape").splitlines():
                    parts = line.split(None, 5)
                    if len(parts) == 6:
                        add("map", parts[5])


# -- running ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def captured_stdout() -> Iterator[list[bytes]]:
    """Send this process's file descriptor 1 (and so the container's stdout) to a file; the list gets its bytes."""
    box: list[bytes] = []
    sys.stdout.flush()
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(1)
        os.dup2(tmp.fileno(), 1)
        try:
            yield box
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            box.append(tmp.read())


def probe_port(image: Image, probe: Probe) -> int:
    """The port a server workload listens on: ``--port``, else ``PORT`` (given, then the image's), else the
    image's first exposed port, else 8080 (the gpuship function runtime's default)."""
    if probe.port:
        return probe.port
    for env in (probe.env, image.config.env_dict()):
        if str(env.get("PORT", "")).isdigit():
            return int(env["PORT"])
    for p in image.config.exposed_ports:
        num = p.split("/", 1)[0]
        if num.isdigit():
            return int(num)
    return 8080


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _http_get(port: int, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "gpuship-slim"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def run_workload(
    image: Image,
    probe: Probe,
    *,
    cache: Cache,
    volumes: Sequence[Volume] = (),
    extra_env: Mapping[str, str] | None = None,
    sampler: ProcSampler | None = None,
    notify: Callable[[str], None] | None = None,
    echo: Callable[[bytes], None] | None = None,
) -> RunOutcome:
    """Run the workload once in the built-in runner: to its end, or (``probe.http``) until the server answers.

    The container's stdout is captured (``echo`` gets it afterwards; its stderr passes through). A run that
    outlives ``probe.timeout`` is stopped (SIGTERM, then SIGKILL) and is an error.
    """
    options = RunOptions(
        command=tuple(probe.command),
        entrypoint=probe.entrypoint,
        env={**probe.env, **(extra_env or {})},
        volumes=tuple(volumes),
        runtime=probe.runtime,
    )
    port = probe_port(image, probe) if probe.http else None
    if port is not None and _port_in_use(port):
        raise GpushipError(
            f"port {port} is already in use on this host (the built-in runner shares the host's network)",
            "stop what listens there, or run the server on another port: -e PORT=N --port N",
        )
    codes: list[int] = []
    errors: list[BaseException] = []
    before = _children(os.getpid(), _ppids())

    def target() -> None:
        try:
            codes.append(run_image(image, options, cache=cache, notify=notify or (lambda _m: None)))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            errors.append(exc)

    started = time.monotonic()
    deadline = started + probe.timeout
    status: int | None = None
    body = b""
    timed_out = False
    with captured_stdout() as out:
        thread = threading.Thread(target=target, name="gpuship-slim-run", daemon=True)
        thread.start()
        if sampler is not None:
            sampler.start()
        try:
            if port is not None:
                status, body, timed_out = _wait_for_http(thread, port, probe.http or "/", deadline)
                ours = _children(os.getpid(), _ppids()) - before
                _signal_all(ours, signal.SIGTERM)
                thread.join(max(5.0, min(60.0, deadline - time.monotonic())))
            else:
                thread.join(max(0.0, deadline - time.monotonic()))
                timed_out = thread.is_alive()
            if thread.is_alive():
                _stop(thread, before)
        finally:
            if sampler is not None:
                sampler.stop()
    stdout = out[0] if out else b""
    if stdout and echo is not None:
        echo(stdout)
    if errors:
        raise errors[0]
    if timed_out:
        what = f"answered GET {probe.http} on port {port}" if port is not None else "finished"
        raise GpushipError(
            f"the workload had not {what} after {probe.timeout:.0f}s; it was stopped",
            "give a command that finishes, or a longer --timeout",
        )
    code = codes[0] if codes else None
    return RunOutcome(code, stdout, time.monotonic() - started, status, body)


def _stop(thread: threading.Thread, before: set[int]) -> None:
    """Stop what the run started since ``before`` (SIGTERM, then SIGKILL to every descendant) and wait for its thread."""
    _signal_all(_children(os.getpid(), _ppids()) - before, signal.SIGTERM)
    thread.join(10)
    if thread.is_alive():
        _signal_all(_descendants(os.getpid(), _ppids()) - before, signal.SIGKILL)
        thread.join(10)


def _wait_for_http(thread: threading.Thread, port: int, path: str, deadline: float) -> tuple[int | None, bytes, bool]:
    """Ask ``GET path`` until the server answers with a status below 500 (or stops, or time runs out)."""
    last: tuple[int | None, bytes] = (None, b"")
    while time.monotonic() < deadline:
        if not thread.is_alive():
            return last[0], last[1], False
        try:
            status, body = _http_get(port, path)
            last = (status, body)
            if status < 500:
                return status, body, False
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.25)
    return last[0], last[1], True


# -- tracing ----------------------------------------------------------------------------------------------------
@dataclass
class TraceSetup:
    """The host side of one traced run: the mounted directory, the volumes and the environment."""

    host_dir: Path
    volumes: tuple[Volume, ...]
    env: dict[str, str]

    @property
    def trace_dir(self) -> Path:
        return self.host_dir / "trace"


@contextlib.contextmanager
def trace_setup(rootfs: Path, cache: Cache) -> Iterator[TraceSetup]:
    """Prepare the hook, the ``.pth`` mounts and the trace directory; removed afterwards, whatever happens."""
    with cache.temp_dir("slim-trace-") as host:
        os.chmod(host, 0o755)
        shutil.copyfile(Path(__file__).with_name("trace_hook.py"), host / "hook.py")
        os.chmod(host / "hook.py", 0o644)
        pth = host / PTH_NAME
        pth.write_text(
            "import os; exec(compile(open("
            + repr(HOOK_PATH)
            + ").read(), "
            + repr(HOOK_PATH)
            + ", 'exec'), {'__name__': 'gpuship_slim_trace'}) if os.environ.get('GPUSHIP_SLIM_TRACE') else None\n"
        )
        os.chmod(pth, 0o644)
        (host / "trace").mkdir()
        os.chmod(host / "trace", 0o1777)
        volumes = [Volume(str(host), MOUNT, readonly=False)]
        volumes += [Volume(str(pth), f"/{d}/{PTH_NAME}", readonly=True) for d in site_dirs(rootfs)]
        env = {
            "GPUSHIP_SLIM_TRACE": TRACE_DIR,
            "LD_DEBUG": "files,libs",
            "LD_DEBUG_OUTPUT": f"{TRACE_DIR}/ld",
        }
        yield TraceSetup(host, tuple(volumes), env)


def traced_run(
    image: Image,
    rootfs: Path,
    probe: Probe,
    *,
    cache: Cache,
    notify: Callable[[str], None] | None = None,
    echo: Callable[[bytes], None] | None = None,
) -> tuple[RunOutcome, Trace]:
    """Run the workload with every view recording; returns how it went and what it touched."""
    with trace_setup(rootfs, cache) as setup:
        sampler = ProcSampler(os.getpid())
        outcome = run_workload(
            image,
            probe,
            cache=cache,
            volumes=setup.volumes,
            extra_env=setup.env,
            sampler=sampler,
            notify=notify,
            echo=echo,
        )
        trace = read_trace(setup.trace_dir, sampler)
    return outcome, trace


_LD_LINE = re.compile(r"^\s*\d+:\s?(.*)$")
_LD_PATTERNS = (
    (re.compile(r"trying file=(\S+)"), "ld-try"),
    (re.compile(r"calling (?:init|fini): (/\S+)"), "ld"),
    (re.compile(r"^file=(/\S+) \[\d+\];"), "ld"),
    (re.compile(r"(?:needed|dynamically loaded) by (\S+) \["), "ld-by"),
    (re.compile(r"(?:initialize program|transferring control): (\S+)"), "ld-by"),
)


def read_trace(trace_dir: Path, sampler: ProcSampler | None = None) -> Trace:
    """Merge the hook's files (``py.<pid>``), the loader's logs (``ld.<pid>``) and the sampler's findings."""
    paths: dict[str, set[str]] = {}
    py = ld = 0

    def add(kind: str, path: str) -> None:
        paths.setdefault(kind, set()).add(path)

    for f in sorted(trace_dir.iterdir()) if trace_dir.is_dir() else []:
        try:
            text = f.read_bytes().decode("utf-8", "surrogateescape")
        except OSError:
            continue
        if f.name.startswith("py."):
            py += 1
            for line in text.splitlines():
                kind, sep, path = line.partition("\t")
                if sep and path:
                    add(kind, path)
        elif f.name.startswith("ld."):
            ld += 1
            for line in text.splitlines():
                m = _LD_LINE.match(line)
                msg = m.group(1) if m else line
                for pat, kind in _LD_PATTERNS:
                    for hit in pat.findall(msg):
                        if kind == "ld-by":
                            add("ld" if hit.startswith("/") else "exec", hit)
                        else:
                            add(kind, hit)
    if sampler is not None:
        for kind, found in sampler.paths.items():
            for p in found:
                add(kind, p)
    frozen = {k: frozenset(p for p in v if _image_path(p)) for k, v in paths.items()}
    return Trace(frozen, py, ld, len(sampler.pids) if sampler else 0)


def _image_path(path: str) -> bool:
    if not path.startswith("/"):
        return "/" not in path  # a bare name (a soname, a program on PATH)
    first = path.lstrip("/").split("/", 1)[0]
    return first not in PSEUDO


def without_trace_env(probe: Probe) -> Probe:
    """``probe`` with nothing of the tracer in its environment (for the verification run)."""
    env = {k: v for k, v in probe.env.items() if k not in ("GPUSHIP_SLIM_TRACE", "LD_DEBUG", "LD_DEBUG_OUTPUT")}
    return replace(probe, env=env)
