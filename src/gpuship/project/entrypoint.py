"""Choose what the container runs, and refuse an entrypoint that would not be found at run time.

Order: ``[tool.gpuship] entrypoint``; else the project's single ``[project.scripts]`` entry; else
``python -m <package>`` for a package with ``__main__.py``; else ``python main.py`` / ``python app.py``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import Entrypoint
from ..errors import ConfigError

#: Where gpuship installs the environment in every image (one home: sources, plan and build import it).
VENV = "/opt/venv"


def choose_entrypoint(
    configured: Entrypoint | None,
    scripts: Mapping[str, str],
    app_files: Sequence[str],
    *,
    runtime_argv: Sequence[str] = (),
    where: str = "[tool.gpuship] in pyproject.toml",
) -> tuple[str, ...]:
    """The argv the image runs. ``runtime_argv`` is the function runtime's command when one is configured;
    ``where`` names the place the user sets ``entrypoint`` (``gpuship.toml`` for a requirements.txt project)."""
    if configured is not None and configured.function:
        return tuple(runtime_argv)
    if configured is not None and configured.argv:
        check_entrypoint(configured.argv, scripts, app_files)
        return configured.argv
    if len(scripts) == 1:
        return (next(iter(scripts)),)
    if len(scripts) > 1:
        names = ", ".join(sorted(scripts))
        raise ConfigError(
            f"the project has several scripts ({names}); gpuship cannot tell which one the image should run",
            f'add entrypoint = ["<script>"] to {where}',
        )
    packages = sorted({f.split("/")[-2] for f in app_files if f.endswith("/__main__.py") and f.count("/") <= 2})
    if len(packages) == 1:
        return ("python", "-m", packages[0])
    for candidate in ("main.py", "app.py"):
        if candidate in app_files:
            return ("python", candidate)
    raise ConfigError(
        "no entrypoint: the image would not know what to run (no entrypoint setting, no [project.scripts], "
        "no __main__.py, main.py or app.py)",
        f'add entrypoint = ["python", "your_script.py"] to {where}',
    )


def check_entrypoint(argv: Sequence[str], scripts: Mapping[str, str], app_files: Sequence[str]) -> None:
    """Refuse an entrypoint whose program or script will not exist in the image."""
    prog = argv[0]
    if prog in ("python", "python3") or prog.startswith(("/usr/", "/bin/", f"{VENV}/")):
        if prog in ("python", "python3") and len(argv) > 1 and argv[1].endswith(".py"):
            script = argv[1].removeprefix("./")
            if script not in app_files and not Path(script).is_absolute():
                raise ConfigError(
                    f"entrypoint script {argv[1]} is not among the project's files",
                    "check the path (relative to the project root) and that it is not ignored",
                )
        return
    if prog in scripts or prog.removeprefix("./") in app_files:
        return
    # A console script of a dependency also lands in the venv's bin; accept names we cannot prove wrong here,
    # the build checks them again against the installed environment.
    return


# -- interpreters: what a Dockerfile user takes for granted and a minimal image does not have --------------------

#: Debian's Essential packages that provide an interpreter: never pulled in as a dependency, so present in a
#: Debian-profile image exactly when asked for (``system-packages``, or ``shell = true``).
ESSENTIAL_PROVIDERS = {"env": "coreutils", "sh": "dash", "dash": "dash", "bash": "bash"}
SHELLS = ("sh", "bash", "dash")


@dataclass(frozen=True)
class BaseContents:
    """What a base is known to hold, for the interpreter lint: ``None`` from :meth:`has` means "cannot tell"."""

    debian_packages: frozenset[str] | None  # None: a registry base (its contents are not listed here)
    python: str = ""  # "3.11"

    def has(self, path: str) -> bool | None:
        """Whether the absolute ``path`` (merged /usr: ``/bin/x`` is ``/usr/bin/x``) is in the base."""
        if self.debian_packages is None:
            return None
        p = "/usr" + path if path.startswith(("/bin/", "/sbin/")) else path
        name = p.rsplit("/", 1)[-1]
        if p in ("/usr/bin/python3", f"/usr/bin/python{self.python}"):
            return True
        if p.startswith("/usr/local/"):
            return False  # nothing in a Debian-profile base lives there (a python:* image's Python does)
        if p.startswith(("/usr/bin/", "/usr/sbin/")) and name in ESSENTIAL_PROVIDERS:
            return ESSENTIAL_PROVIDERS[name] in self.debian_packages
        return None


def _on_path(name: str, facts: BaseContents) -> bool | None:
    """Whether ``name`` is found on the image's PATH (the venv's bin first, then the system's)."""
    if name in ("python", "python3") or re.fullmatch(r"python3\.\d+", name):
        return True
    if name in ESSENTIAL_PROVIDERS:
        return facts.has(f"/usr/bin/{name}")
    return None  # a console script of some distribution: the venv may well have it


def shebang(path: Path) -> list[str] | None:
    """The interpreter line of a script (``#!/usr/bin/env python3`` -> ``["/usr/bin/env", "python3"]``)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    return head[2:].split(b"\n", 1)[0].decode(errors="replace").split()


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def _shebang_problem(words: Sequence[str], facts: BaseContents, workdir: str, app_files: Sequence[str]) -> str:
    """Why the interpreter of a ``#!`` line is not in the image ("" when it is, or when gpuship cannot tell)."""
    if not words:
        return ""
    interp = words[0]
    if interp.rsplit("/", 1)[-1] == "env" and interp.startswith("/"):
        if facts.has(interp) is False:
            return f"the image has no {interp} (the Debian base has no coreutils)"
        args = [w for w in words[1:] if not w.startswith("-")]
        if args and _on_path(args[0], facts) is False:
            return f"the image has no {args[0]} on its PATH"
        return ""
    if interp.startswith((f"{VENV}/", f"{workdir.rstrip('/')}/")):
        rel = interp[len(workdir.rstrip("/")) + 1 :]
        return "" if interp.startswith(VENV) or rel in app_files else f"the image has no {interp}"
    if interp.startswith("/") and facts.has(interp) is False:
        return f"the image has no {interp}"
    return ""


SHELL_FIX = "set shell = true in {where} (adds dash as /bin/sh and coreutils' /usr/bin/env)"


def lint_interpreters(
    argv: Sequence[str],
    root: Path,
    app_files: Sequence[str],
    facts: BaseContents,
    *,
    workdir: str,
    where: str,
) -> list[str]:
    """Refuse an entrypoint whose program or ``#!`` interpreter the image lacks (a Dockerfile habit that fails
    only at run time: ``no such file or directory``), naming the fix; warn about the project's other executable
    scripts with the same problem."""
    fix = SHELL_FIX.format(where=where)
    prog = argv[0] if argv else ""
    rel = prog.removeprefix("./")
    if prog.startswith(f"{workdir.rstrip('/')}/"):
        rel = prog[len(workdir.rstrip("/")) + 1 :]
    entry_script = rel if rel in app_files and ("/" in prog or prog.startswith(".")) else ""
    if entry_script:
        words = shebang(root / entry_script)
        if words is None and not _is_elf(root / entry_script):
            raise ConfigError(
                f"entrypoint {prog} is a file without a #! line: the kernel cannot run it",
                f'run it with its interpreter: entrypoint = ["python", "{entry_script}"] in {where}',
            )
        why = _shebang_problem(words or [], facts, workdir, app_files)
        if why and words:
            raise ConfigError(
                f"entrypoint {prog} starts with #!{' '.join(words)}, but {why}: the container would fail with "
                "'no such file or directory'",
                f'use entrypoint = ["python", "{entry_script}"] (the venv\'s Python is on PATH), or {fix}',
            )
        if not os.access(root / entry_script, os.X_OK):
            raise ConfigError(
                f"entrypoint {prog} is not executable: the container would fail with 'permission denied'",
                f'chmod +x {entry_script}, or use entrypoint = ["python", "{entry_script}"]',
            )
    elif prog.startswith("/") and not prog.startswith((f"{VENV}/", f"{workdir.rstrip('/')}/")):
        if facts.has(prog) is False:
            name = prog.rsplit("/", 1)[-1]
            if name in SHELLS or name == "env":
                hint = fix
            elif name.startswith("python"):
                hint = f'use "python" (the venv\'s, on PATH at {VENV}/bin/python)'
            else:
                hint = f"add the Debian package that provides it to system-packages in {where}"
            raise ConfigError(f"entrypoint program {prog} is not in the image", hint)
    elif prog in SHELLS or prog == "env":
        if _on_path(prog, facts) is False:
            raise ConfigError(
                f"entrypoint runs {prog}, but the image has no shell ({prog} is not on its PATH)",
                f'{fix}; or run the program itself (entrypoint = ["python", ...]) and pass settings with env',
            )
    named = {a.removeprefix("./") for a in argv}
    bad = []
    for f in app_files:
        if f in named or (root / f).is_symlink() or not os.access(root / f, os.X_OK):
            continue
        words = shebang(root / f)
        why = _shebang_problem(words or [], facts, workdir, app_files)
        if why:
            bad.append(f"{f} (#!{' '.join(words or [])}: {why})")
    if not bad:
        return []
    shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
    return [f"executable scripts whose interpreter the image lacks: {shown}; run them with python, or {fix}"]
