"""``gpuship dev``: seed 002's developer loop — run the project's image with the project directory mounted over
the app directory and the project installed in editable mode, so a code change needs no rebuild.

The dev image is the project's image without the two layers that change with every edit (the project's wheel
and the app files); in their place, one small *editable* layer whose content depends only on the project's
name, version, scripts and layout:

* a ``.pth`` file in the venv's site-packages naming the mounted source directory (``/app/src`` for a
  src-layout project, else ``/app``), and a ``<name>-<version>.dist-info`` (``direct_url.json`` says editable,
  ``entry_points.txt`` the scripts), so ``import pkg`` and ``importlib.metadata`` see the mounted code;
* one launcher in ``/opt/venv/bin`` per ``[project.scripts]`` entry, importing from the mounted code;
* the app directory itself (the mount point).

So the second ``gpuship dev`` after an edit finds every layer in the cache, gets the same image digest, and
(through Docker) finds the image already loaded: it just starts the container.

With ``--image`` a prebuilt image is run instead; the mounted source is then put first on ``PYTHONPATH`` so it
wins over an installed copy of the project.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .cache import Cache
from .errors import ConfigError, GpushipError
from .oci import Entry, Image, Index, Layer, cached_layer
from .progress import NO_PROGRESS, Progress
from .run import RunOptions, Volume, run_image

EDITABLE_FORMAT = 1


def source_dir(project_dir: Path, workdir: str) -> str:
    """Where the project's importable code is once mounted: ``<workdir>/src`` for a src layout, else ``<workdir>``."""
    return posixpath.join(workdir, "src") if (project_dir / "src").is_dir() else workdir


def _script_launcher(python: str, spec: str) -> bytes:
    """A console script that imports ``module:attr`` (from the mounted code) and exits with its result."""
    target = spec.split("[", 1)[0].strip()
    module, _, attr = target.partition(":")
    if not module:
        raise ConfigError(f"[project.scripts] entry {spec!r} is not 'module:function'")
    return (
        f"#!{python}\n"
        "# gpuship dev: an editable install's launcher; the code comes from the mounted project\n"
        "import importlib\nimport sys\n\n"
        f"obj = importlib.import_module({module!r})\n"
        f"for name in {attr!r}.split('.') if {attr!r} else ():\n"
        "    obj = getattr(obj, name)\n"
        "if __name__ == '__main__':\n"
        "    sys.exit(obj())\n"
    ).encode()


def editable_entries(
    *,
    name: str,
    version: str,
    scripts: Mapping[str, str],
    is_package: bool,
    venv: str,
    python_minor: str,
    workdir: str,
    src: str,
) -> list[Entry]:
    """The editable layer's files (see the module docstring)."""
    entries = [Entry.dir(workdir.lstrip("/"))]
    if not is_package:
        return entries
    site = f"{venv}/lib/python{python_minor}/site-packages".lstrip("/")
    dist = f"{_dist_name(name)}-{version}"
    info = f"{site}/{dist}.dist-info"
    files: dict[str, bytes] = {
        f"{site}/__editable__.{dist}.pth": f"{src}\n".encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/INSTALLER": b"gpuship\n",
        f"{info}/direct_url.json": json.dumps(
            {"url": f"file://{workdir}", "dir_info": {"editable": True}}, sort_keys=True
        ).encode()
        + b"\n",
    }
    if scripts:
        files[f"{info}/entry_points.txt"] = (
            "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(scripts.items()))
        ).encode()
    record = [f"{p.removeprefix(site + '/')},," for p in sorted(files)] + [f"{dist}.dist-info/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    entries += [Entry.file(p, data) for p, data in sorted(files.items())]
    python = f"{venv}/bin/python"
    entries += [
        Entry.file(f"{venv}/bin/{script}".lstrip("/"), _script_launcher(python, spec), mode=0o755)
        for script, spec in sorted(scripts.items())
    ]
    return entries


def _dist_name(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "_", name).lower() or "app"


def editable_layer(plan: Any, python: Any, cache: Cache) -> Layer:
    """The dev image's top layer for ``plan`` (a :class:`gpuship.plan.BuildPlan`), cached by what it holds."""
    from .project.entrypoint import VENV
    from .sources.python.platforms import python_minor

    project = plan.project
    workdir = plan.config.workdir
    args = dict(
        name=str(getattr(project, "name", "") or plan.name),
        version=str(getattr(project, "version", "") or "0.0.0"),
        scripts=dict(getattr(project, "scripts", {}) or {}),
        is_package=bool(getattr(project, "is_package", False)),
        venv=VENV,
        python_minor=python_minor(python.version),
        workdir=workdir,
        src=source_dir(plan.options.project_dir, workdir),
    )
    key = "editable:" + hashlib.sha256(json.dumps([EDITABLE_FORMAT, args], sort_keys=True).encode()).hexdigest()
    what = f"editable install of {args['name']} from {args['src']}" if args["is_package"] else f"mount point {workdir}"
    return cached_layer(
        cache,
        key,
        lambda: editable_entries(**args),
        comment=f"gpuship dev: {what}",
    )


@dataclass(frozen=True)
class DevImage:
    """What ``gpuship dev`` runs: the image, where the project goes, and how many layers had to be made."""

    image: Image | Index | str
    digest: str
    workdir: str
    source: str  # the mounted source directory inside the container
    new_layers: int
    built: Any = None  # the BuildResult, when gpuship built it


def dev_image(
    project_dir: Path,
    *,
    image: str | None = None,
    base: str | None = None,
    extras: Sequence[str] = (),
    cache: Cache | None = None,
    progress: Progress = NO_PROGRESS,
) -> DevImage:
    """Build the dev image of ``project_dir`` for this machine's platform (or take ``image`` as it is)."""
    from .plan import BuildOptions
    from .plan.build_plan import load_config

    project_dir = Path(project_dir).resolve()
    if not project_dir.is_dir():
        raise GpushipError(f"{project_dir} is not a directory", "give the path of a Python project")
    if image is not None:
        from .project import load_project

        project = load_project(project_dir, extras=tuple(extras))
        cfg = load_config(project_dir, getattr(project, "tool", None), getattr(project, "settings", None))
        return DevImage(image, "", cfg.workdir, source_dir(project_dir, cfg.workdir), 0)
    from .build import build
    from .sources.python.platforms import host_platform

    opts = BuildOptions(
        project_dir=project_dir, platforms=(str(host_platform()),), extras=tuple(extras), base=base, dev=True
    )
    result = build(opts, cache=cache or Cache(), progress=progress)
    new = sum(1 for p in result.platforms for r in p.rows if not r.reused)
    workdir = result.plan.config.workdir
    return DevImage(result.result, result.digest, workdir, source_dir(project_dir, workdir), new, result)


def dev_run_options(dev: DevImage, project_dir: Path, options: RunOptions) -> RunOptions:
    """``options`` plus the project mounted over the app directory (and, for a prebuilt image, PYTHONPATH)."""
    env = dict(options.env)
    if dev.built is None:  # a prebuilt image: its installed copy of the project must not win over the mounted one
        env["PYTHONPATH"] = dev.source + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    mount = Volume(str(Path(project_dir).resolve()), dev.workdir)
    return replace(options, env=env, volumes=(mount, *options.volumes))


def dev(
    project_dir: Path,
    options: RunOptions = RunOptions(),
    *,
    image: str | None = None,
    base: str | None = None,
    extras: Sequence[str] = (),
    cache: Cache | None = None,
    progress: Progress = NO_PROGRESS,
    notify: Callable[[str], None] | None = None,
    run_progress: Progress = NO_PROGRESS,
) -> tuple[DevImage, int]:
    """Build (or take) the dev image and run it with the project mounted; returns it and the command's exit code."""
    cache = cache or Cache()
    made = dev_image(project_dir, image=image, base=base, extras=extras, cache=cache, progress=progress)
    if notify is not None and made.digest:
        notify(f"dev image {made.digest} ({made.new_layers} new layers); {project_dir} mounted at {made.workdir}")
    code = run_image(
        made.image, dev_run_options(made, project_dir, options), cache=cache, notify=notify, progress=run_progress
    )
    return made, code
