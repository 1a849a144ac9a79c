"""The tracer that ``gpuship slim`` puts into every Python process of a traced run (standard library only).

A ``.pth`` file bind-mounted into each site-packages directory of the image executes this file while ``site``
starts up, so every Python process of the workload (the main one, subprocesses, multiprocessing workers) records
what it touches — without changing the image, ``PYTHONPATH`` or the command line:

* audit hooks (PEP 578): ``open`` (``open()``, ``io.open_code`` — every module and ``.pyc`` the import system
  reads —, ``os.open``), ``os.listdir`` / ``os.scandir``, ``ctypes.dlopen``, ``os.chdir``, ``os.mkdir`` and other
  writes (their directories must exist), ``subprocess.Popen`` / ``os.exec*`` / ``os.posix_spawn`` / ``os.system``
  (the programs started);
* at exit: the ``__file__`` of every module in ``sys.modules`` (extension modules are loaded with ``dlopen``,
  which raises no ``open`` event) and every file mapped into the process (``/proc/self/maps``: the kernel's view
  of the shared libraries and data files it has loaded).

Each process appends ``KIND<TAB>PATH`` lines to ``$GPUSHIP_SLIM_TRACE/py.<pid>`` with unbuffered ``os.write``
calls, each path once, so a process killed by a signal leaves what it had recorded. Nothing here may ever raise
into the workload: every failure is swallowed.
"""

import os as _os
import sys as _sys


def _gpuship_slim_install():  # noqa: C901 - one closure over the few names the hook needs
    out = _os.environ.get("GPUSHIP_SLIM_TRACE")
    if not out or getattr(_sys, "_gpuship_slim_traced", False):
        return
    try:
        fd = _os.open(
            out + "/py." + str(_os.getpid()), _os.O_WRONLY | _os.O_CREAT | _os.O_APPEND | _os.O_CLOEXEC, 0o666
        )
    except OSError:
        return
    _sys._gpuship_slim_traced = True
    seen = set()
    fsdecode, fspath, getcwd, write = _os.fsdecode, _os.fspath, _os.getcwd, _os.write

    def note(kind, path, relative_ok=False):
        try:
            if path is None or isinstance(path, int):
                return
            p = fsdecode(fspath(path))
            if not p or "\n" in p or "\t" in p:
                return
            if not p.startswith("/") and not relative_ok:
                p = getcwd() + "/" + p
            key = kind + "\t" + p
            if key in seen:
                return
            seen.add(key)
            write(fd, (key + "\n").encode("utf-8", "surrogateescape"))
        except Exception:  # noqa: BLE001 - never into the workload
            pass

    def program(executable, args):
        if executable is not None and not isinstance(executable, int):
            note("exec", executable, relative_ok=True)
            return
        try:
            if isinstance(args, (str, bytes)):
                first = args.split()[0] if args.split() else None
            else:
                first = list(args)[0] if args else None
            note("exec", first, relative_ok=True)
        except Exception:  # noqa: BLE001
            pass

    def hook(event, args):
        try:
            if event == "open":
                note("open", args[0])
            elif event in ("os.listdir", "os.scandir"):
                note("list", args[0] if args and args[0] is not None else ".")
            elif event == "ctypes.dlopen":
                note("dlopen", args[0], relative_ok=True)
            elif event == "os.chdir":
                note("dir", args[0])
            elif event in (
                "os.mkdir",
                "os.rmdir",
                "os.remove",
                "os.truncate",
                "os.utime",
                "os.chmod",
                "os.chown",
                "os.symlink",
                "os.link",
                "shutil.rmtree",
                "tempfile.mkstemp",
                "tempfile.mkdtemp",
                "sqlite3.connect",
            ):
                note("touch", args[0])
            elif event in ("os.rename", "shutil.copyfile", "shutil.copymode", "shutil.copystat", "shutil.move"):
                note("touch", args[0])
                note("touch", args[1])
            elif event == "subprocess.Popen":
                program(args[0], args[1])
            elif event in ("os.exec", "os.posix_spawn"):
                program(args[0], None)
            elif event == "os.spawn":
                program(args[1], None)
            elif event == "os.system":
                note("exec", "/bin/sh")
        except Exception:  # noqa: BLE001
            pass

    def at_exit():
        try:
            for m in list(_sys.modules.values()):
                note("module", getattr(m, "__file__", None))
        except Exception:  # noqa: BLE001
            pass
        try:
            mfd = _os.open("/proc/self/maps", _os.O_RDONLY)
            chunks = []
            while True:
                b = _os.read(mfd, 1 << 16)
                if not b:
                    break
                chunks.append(b)
            _os.close(mfd)
            for line in b"".join(chunks).decode("utf-8", "surrogateescape").splitlines():
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    path = parts[5]
                    if path.endswith(" (deleted)"):  # (no str.removesuffix before Python 3.9)
                        path = path[: -len(" (deleted)")]
                    note("map", path)
        except Exception:  # noqa: BLE001
            pass

    note("exe", _sys.executable)
    try:
        import atexit

        atexit.register(at_exit)
        _sys.addaudithook(hook)
    except Exception:  # noqa: BLE001
        pass


_gpuship_slim_install()
