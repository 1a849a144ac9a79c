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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .build import BuildResult, build
from .cache import Cache
from .errors import GpushipError
from .oci import Image, Index, Platform
from .plan import BuildOptions
from .plan.build_plan import load_config
from .progress import NO_PROGRESS, Progress
from .project import load_project
from .registry.options import RegistryOptions
from .run import RunOptions, Volume, run_image
from .sources.editable import source_dir


@dataclass(frozen=True)
class DevImage:
    """What ``gpuship dev`` runs: the image, where the project goes, and how many layers had to be made."""

    image: Image | Index | str
    digest: str
    workdir: str
    source: str  # the mounted source directory inside the container
    new_layers: int
    built: BuildResult | None = None  # when gpuship built it


def dev_image(
    project_dir: Path,
    *,
    image: str | None = None,
    base: str | None = None,
    extras: Sequence[str] = (),
    cache: Cache | None = None,
    progress: Progress = NO_PROGRESS,
    registry: RegistryOptions = RegistryOptions(),
) -> DevImage:
    """Build the dev image of ``project_dir`` for this machine's platform (or take ``image`` as it is);
    ``registry``: how a registry base is read."""

    project_dir = Path(project_dir).resolve()
    if not project_dir.is_dir():
        raise GpushipError(f"{project_dir} is not a directory", "give the path of a Python project")
    if image is not None:
        project = load_project(project_dir, extras=tuple(extras))
        cfg = load_config(project_dir, project.tool, project.settings)
        return DevImage(image, "", cfg.workdir, source_dir(project_dir, cfg.workdir), 0)

    opts = BuildOptions(
        project_dir=project_dir,
        platforms=(str(Platform.host()),),
        extras=tuple(extras),
        base=base,
        dev=True,
        registry=registry,
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
