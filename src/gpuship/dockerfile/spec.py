"""``DockerfileSpec``: every decision of ``gpuship build``, gathered for a Dockerfile instead of layers.

:func:`plan_dockerfile` runs gpuship's own planner (:func:`gpuship.plan.make_plan`), lock
(:func:`gpuship.sources.python.lock_project`), app-file selection, entrypoint choice and (optionally) find-libdeps,
so the exported Dockerfile installs the same packages, in the same layer order, with the same config. It builds
no layers except where find-libdeps must read the wheels' shared libraries (cached, like a build).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

from .. import tools
from ..build import image_env, index_options, lock_for_plan
from ..cache import Cache
from ..check import check_entries
from ..config import DEFAULT_USER
from ..errors import ConfigError
from ..oci import Entry, Platform, cached_layer
from ..plan import BuildOptions, BuildPlan, make_plan
from ..progress import NO_PROGRESS, Progress
from ..project.entrypoint import VENV, choose_entrypoint
from ..redact import strip_userinfo
from ..registry.options import RegistryOptions
from ..serve import runtime_entries, runtime_entrypoint, runtime_requirements
from ..sources.app import ALWAYS_EXCLUDED, NOT_SECRETS, SECRET_PATTERNS, AppFiles, app_layer, select_app_files
from ..sources.base import Base
from ..sources.debian.profiles import PROFILES
from ..sources.python import JIT_PACKAGES, PruneRules, python_layers
from ..sources.python.lock import Lock
from .requirements import REQUIREMENTS_NAME, has_sdists, render_requirements

Variant = Literal["pip", "micromamba"]
VARIANTS: dict[str, Variant] = {"pip": "pip", "micromamba": "micromamba"}

#: Build inputs that are not the app's (a CA bundle, files of gpuship's extra layers) live here in the context.
WORK_DIR = ".gpuship/docker"
CA_NAME = "build-ca.crt"
#: A registry base's own distributions, written beside the CA for the builder's ``uv pip install -c``.
CONSTRAINTS_NAME = "base-constraints.txt"
#: Packages every Debian base already has (never worth an apt-get install line).
ALWAYS_IN_DEBIAN = frozenset({"base-files", "libc6", "zlib1g"})
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The official micromamba image: its static binary is copied out (only the micromamba variant needs it).
MICROMAMBA_IMAGE = "mambaorg/micromamba:2.0.5"


@dataclass(frozen=True)
class ExtraLayer:
    """A layer of gpuship's own files (gpuship-check, the function runtime): written under ``WORK_DIR`` and COPYed."""

    group: str
    comment: str
    entries: tuple[Entry, ...]

    @property
    def context_dir(self) -> str:
        return f"{WORK_DIR}/layers/{self.group}"


@dataclass(frozen=True)
class LibDepNote:
    package: str
    soname: str
    needed_by: str


@dataclass(frozen=True)
class DockerfileSpec:
    """What the Dockerfile says; :func:`gpuship.dockerfile.render_dockerfile` turns it into text."""

    project_dir: Path
    name: str
    version: str
    variant: Variant
    codename: str
    python_version: str
    platforms: tuple[Platform, ...]
    #: apt packages of the runtime stage: the interpreter, the profile's libraries, system-packages, libdeps
    runtime_packages: tuple[str, ...]
    #: apt packages of the builder stage
    builder_packages: tuple[str, ...]
    uv_version: str
    requirements_text: str
    package_count: int
    index_args: tuple[str, ...]
    is_package: bool
    extra_layers: tuple[ExtraLayer, ...]
    app_files: tuple[str, ...]
    app_dirs: tuple[str, ...]
    workdir: str
    user: str
    create_user: bool
    env: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    revision: str
    ports: tuple[str, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    prune_commands: tuple[str, ...]
    bytecode: str
    dockerignore: tuple[str, ...]
    libdeps: tuple[LibDepNote, ...] = ()
    environment_file: str = ""
    #: a registry base (``base = "nvcr.io/..."``): its reference pinned by digest, its interpreter, and the
    #: distributions the build must not replace (seed 002's constraints, made from the base at build time)
    registry_base: str = ""
    registry_tag: str = ""
    base_python: str = ""
    replace_base_packages: tuple[str, ...] = ()
    base_constraints: tuple[str, ...] = ()
    venv: str = VENV
    dockerfile_name: str = "Dockerfile"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def base_default(self) -> str:
        return self.registry_base or f"debian:{self.codename}-slim"

    @property
    def python(self) -> str:
        return self.base_python or f"/usr/bin/python{self.python_version}"

    @property
    def site_packages(self) -> str:
        return f"{self.venv}/lib/python{self.python_version}/site-packages"


def _environment_file(root: Path) -> str:
    """The conda environment file the micromamba variant installs from."""
    env_file = next((n for n in ("environment.yml", "environment.yaml") if (root / n).is_file()), "")
    if not env_file:
        raise ConfigError("the micromamba variant needs an environment.yml", "use the default pip variant")
    return env_file


def _extra_layers(plan: BuildPlan) -> tuple[list[ExtraLayer], tuple[str, ...], tuple[str, ...]]:
    """gpuship's own layers (the GPU check, the function runtime), the runtime's requirements and its argv."""
    extra_layers: list[ExtraLayer] = []
    if plan.gpu is not None:
        entries = tuple(check_entries(plan.gpu, python=f"{VENV}/bin/python"))
        extra_layers.append(ExtraLayer("gpu-check", "gpuship-check and /etc/gpuship/gpu.json", entries))
    entrypoint = plan.config.entrypoint
    if entrypoint is None or not entrypoint.function:
        return extra_layers, (), ()
    extra_layers.append(ExtraLayer("runtime", "gpuship function runtime", tuple(runtime_entries())))
    return extra_layers, tuple(runtime_requirements()), tuple(runtime_entrypoint(entrypoint.function))


def _builder_packages(py: str, variant: Variant, *, sdists: bool) -> list[str]:
    """The builder stage's Debian packages: a compiler and headers only when an sdist is built."""
    if variant == "micromamba":
        return ["ca-certificates"]
    return [f"python{py}-venv", "ca-certificates", *(["build-essential", f"python{py}-dev"] if sdists else [])]


def plan_dockerfile(
    project_dir: Path,
    *,
    platforms: Sequence[str] = (),
    extras: Sequence[str] = (),
    base: str | None = None,
    variant: Variant = "pip",
    libdeps: bool = True,
    locked: bool = False,
    dockerfile_name: str = "Dockerfile",
    cache: Cache | None = None,
    progress: Progress = NO_PROGRESS,
    registry: RegistryOptions = RegistryOptions(),
) -> DockerfileSpec:
    """Plan the Dockerfile of the project at ``project_dir`` the way ``gpuship build`` plans its image
    (``registry``: how a registry base is read)."""

    cache = cache or Cache()
    opts = BuildOptions(
        project_dir=Path(project_dir),
        platforms=tuple(platforms),
        extras=tuple(extras),
        locked=locked,
        base=base,
        registry=registry,
    )
    plan = make_plan(opts, cache=cache, progress=progress)
    cfg = plan.config
    below = plan.first_base()
    start = _from(below, variant, tuple(cfg.replace_base_packages))
    root = Path(plan.project.root)
    env_file = _environment_file(root) if variant == "micromamba" else ""
    extra_layers, runtime_reqs, runtime_argv = _extra_layers(plan)

    progress.step("locking dependencies")
    lock = lock_as_build(plan, runtime_reqs, locked=locked, cache=cache, progress=progress)
    installed = below.installed(lock, tuple(cfg.replace_base_packages))  # a registry base keeps its own

    # chosen after locking, so a gpuship.lock written just now is among the app's files (as in later builds)
    app = select_app_files(root, include=cfg.include, exclude=cfg.exclude)
    deps: list[LibDepNote] = []
    if variant == "pip" and cfg.find_libdeps and libdeps and start.libdeps:
        deps = _find_libdeps(plan, lock, app, extra_layers, cache, progress)
    entrypoint = choose_entrypoint(cfg.entrypoint, plan.project.scripts or {}, app.files, runtime_argv=runtime_argv)
    parts = _Parts(
        plan, start, variant, lock, installed, app, deps, extra_layers, entrypoint, env_file, dockerfile_name
    )
    return _spec(parts, image_env(plan, below.config))


@dataclass(frozen=True)
class _Parts:
    """What :func:`plan_dockerfile` gathered (the plan, its lock, the app's files) for :func:`_spec` to lay out."""

    plan: BuildPlan
    start: _From
    variant: Variant
    lock: Lock
    installed: Lock
    app: AppFiles
    deps: list[LibDepNote]
    extra_layers: list[ExtraLayer]
    entrypoint: tuple[str, ...]
    env_file: str
    dockerfile_name: str


def _spec(parts: _Parts, env: Mapping[str, str]) -> DockerfileSpec:
    """The Dockerfile's stages as the build would make its layers: packages, requirements, app files, config."""
    plan, start, variant, installed, app = parts.plan, parts.start, parts.variant, parts.installed, parts.app
    cfg = plan.config
    root = Path(plan.project.root)
    runtime_packages = tuple(
        dict.fromkeys([*start.system_packages, *cfg.system_packages, *sorted({d.package for d in parts.deps})])
    )
    py = ".".join(plan.python_version.split(".")[:2])
    builder = _builder_packages(py, variant, sdists=has_sdists(parts.lock, plan.platforms))
    labels = {**plan.labels, **(plan.gpu.labels if plan.gpu is not None else {})}
    labels.pop("org.opencontainers.image.created", None)  # the engine records when it built the image
    revision = labels.pop("org.opencontainers.image.revision", "")
    index_args = _index_args(plan)
    files, dirs = _top_level(app)
    if REQUIREMENTS_NAME not in files and variant == "pip":
        files = tuple(sorted({*files, REQUIREMENTS_NAME}))
    ignored = dockerignore_lines(root, cfg.include, cfg.exclude, parts.dockerfile_name, app.secrets_by_content)
    return DockerfileSpec(
        project_dir=root,
        name=plan.name,
        version=plan.version,
        variant=variant,
        codename=start.codename,
        python_version=py,
        platforms=plan.platforms,
        runtime_packages=runtime_packages,
        builder_packages=tuple(dict.fromkeys(builder)),
        uv_version=uv_version(),
        requirements_text=render_requirements(installed, plan.platforms, index_args),
        package_count=len({p.key for t in installed.targets if t.platform in plan.platforms for p in t.packages}),
        index_args=index_args,
        is_package=bool(plan.project.is_package),
        extra_layers=tuple(parts.extra_layers),
        app_files=files,
        app_dirs=dirs,
        workdir=cfg.workdir,
        user=cfg.user,
        create_user=cfg.user == DEFAULT_USER and start.create_user,
        env=tuple(env.items()),
        labels=tuple(sorted(labels.items())),
        revision=revision,
        ports=tuple(cfg.ports),
        entrypoint=tuple(parts.entrypoint),
        cmd=tuple(cfg.cmd),
        prune_commands=tuple(prune_commands(VENV, py, cfg.keep, cfg.drop, lock_names(installed, plan.platforms))),
        bytecode=cfg.bytecode,
        dockerignore=tuple(ignored),
        libdeps=tuple(parts.deps),
        environment_file=parts.env_file,
        registry_base=start.registry_base,
        registry_tag=start.registry_tag,
        base_python=start.base_python,
        replace_base_packages=tuple(cfg.replace_base_packages),
        base_constraints=start.constraints,
        dockerfile_name=parts.dockerfile_name,
        notes=tuple(app.secret_warnings()),
    )


def lock_as_build(
    plan: BuildPlan, extra_requirements: Sequence[str], *, locked: bool, cache: Cache, progress: Progress
) -> Lock:
    """``gpuship.lock`` exactly as ``gpuship build`` asks for it, so an export and a build share one lock."""

    return lock_for_plan(plan, extra_requirements, locked=locked, cache=cache, progress=progress)


@dataclass(frozen=True)
class _From:
    """What the Dockerfile takes from the base: a Debian profile's ``debian:<codename>-slim`` and the packages its
    runtime stage installs (find-libdeps adds to them, a user is made), or a registry image as it is."""

    codename: str = ""
    system_packages: tuple[str, ...] = ()
    libdeps: bool = True
    create_user: bool = True
    registry_base: str = ""
    registry_tag: str = ""
    base_python: str = ""
    constraints: tuple[str, ...] = ()


def _from(base: Base, variant: Variant, replace: tuple[str, ...]) -> _From:
    """The one place the Dockerfile tells the two kinds of base apart (their stages differ)."""
    if base.remote:
        from ..sources.registry_base import RegistryBase  # the registry client (httpx) only for a registry base

        assert isinstance(base, RegistryBase)
        if variant == "micromamba":
            raise ConfigError("the micromamba variant needs a Debian profile base", "use the default pip variant")
        # its packages are its own (gpuship refuses system-packages on it), and so are its users
        return _From(
            libdeps=False,
            create_user=False,
            registry_base=base.pinned,
            registry_tag=base.reference,
            base_python=base.python.executable,
            constraints=tuple(base.constraints(replace)),
        )
    profile = PROFILES[base.name]
    if variant == "micromamba":  # conda brings its own Python
        system = [p for p in profile.core_packages if p not in ALWAYS_IN_DEBIAN]
    else:
        system = [p for p in (*profile.core_packages, *profile.python_packages) if p not in ALWAYS_IN_DEBIAN]
    return _From(codename=profile.codename, system_packages=tuple(system))


def uv_version() -> str:
    """The uv version gpuship itself runs (pinned in its dependencies), installed in the builder stage too."""

    try:
        return version("uv")
    except PackageNotFoundError:  # pragma: no cover - uv is a dependency of gpuship
        out = tools.run(["uv", "--version"]).stdout.decode().split()
        return out[1] if len(out) > 1 else "0.13.9"


def lock_names(lock: Lock, platforms: Sequence[Platform]) -> tuple[str, ...]:
    return tuple(sorted({p.key for plat in platforms for p in lock.packages(plat)}))


def _find_libdeps(
    plan: BuildPlan, lock: Lock, app: AppFiles, extra: Sequence[ExtraLayer], cache: Cache, progress: Progress
) -> list[LibDepNote]:
    """gpuship's find-libdeps over the environment, gpuship's own files and the app, for every platform."""

    cfg = plan.config
    prune = PruneRules(keep=tuple(cfg.keep), drop=tuple(cfg.drop), bytecode=cfg.bytecode)
    found: dict[str, LibDepNote] = {}
    for platform in plan.platforms:
        base = plan.bases[platform]
        progress.step(f"[{platform}] find-libdeps: installing the environment to scan it")
        env = python_layers(lock, platform, base.python, cache, prune=prune, progress=progress)
        layers = [layer for _, layer in env.layers]
        for x in extra:
            entries = x.entries
            layers.append(
                cached_layer(
                    cache,
                    f"dockerfile-extra:{x.group}:" + _entries_key(entries),
                    partial(iter, entries),
                    comment=x.comment,
                )
            )
        layers.append(app_layer(app, cfg.workdir, cache))
        env_of = partial(image_env, plan)
        for d in base.system_libraries(layers, tuple(cfg.system_packages), cache, env_of, progress):
            found.setdefault(d.package, LibDepNote(d.package, d.soname, d.needed_by[0] if d.needed_by else ""))
    return [found[k] for k in sorted(found)]


def _entries_key(entries: Sequence[Entry]) -> str:

    h = hashlib.sha256()
    for e in entries:
        h.update(f"{e.path}\0{e.kind}\0{e.mode}\0{e.target}\0".encode())
        h.update(hashlib.sha256(e.read()).digest() if e.kind == "file" else b"")
    return h.hexdigest()


def _index_args(plan: BuildPlan) -> tuple[str, ...]:
    """Index options for the requirements file: the ones the lock was resolved with (project, config, GPU plan),
    without their logins. Local ``--find-links`` folders are left out: a Docker build cannot see them."""

    idx = index_options(plan)
    out: list[str] = []
    if idx.index_url:
        out.append(f"--index-url {strip_userinfo(idx.index_url)}")
    out += [f"--extra-index-url {strip_userinfo(u)}" for u in dict.fromkeys(idx.extra_index_urls)]
    out += [f"--find-links {strip_userinfo(f)}" for f in idx.find_links if re.match(r"^https?://", f)]
    return tuple(out)  # never a login: the Docker build gets it from a netrc secret (docs/security.md)


def _top_level(app: AppFiles) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The app's top-level files and folders (each folder is one COPY; .dockerignore filters inside it)."""
    files: set[str] = set()
    dirs: set[str] = set()
    for rel in app.files:
        head = rel.split("/", 1)[0]
        if head == ".gpuship":
            continue
        (dirs if "/" in rel else files).add(head)
    return tuple(sorted(files)), tuple(sorted(dirs))


# -- .dockerignore ---------------------------------------------------------------------------------------------


def gitignore_to_dockerignore(pattern: str) -> str | None:
    """One .gitignore line in .dockerignore syntax (Docker's patterns are anchored at the context root)."""
    line = pattern.rstrip()
    if not line or line.startswith("#"):
        return None
    neg = line.startswith("!")
    body = line[1:] if neg else line
    body = body.rstrip("/") if body.endswith("/") else body
    if not body:
        return None
    if body.startswith("/"):
        out = body.lstrip("/")
    elif "/" in body and not body.startswith("**/"):
        out = body  # a slash in the middle anchors it at the root in gitignore too
    else:
        out = body if body.startswith("**/") else f"**/{body}"
    return ("!" if neg else "") + out


def dockerignore_lines(
    root: Path,
    include: Sequence[str],
    exclude: Sequence[str],
    dockerfile_name: str,
    private_keys: Sequence[str] = (),
) -> list[str]:
    """The .dockerignore that leaves out what gpuship's app layer leaves out (see :mod:`gpuship.sources.app`);
    ``private_keys``: project files found holding a private key (whatever their names)."""
    out = [
        "# Written by `gpuship dockerfile`: the files gpuship leaves out of its app layer, left out of the",
        "# build context too (run `gpuship dockerfile` again after changing .gitignore or [tool.gpuship]).",
        dockerfile_name,
        ".dockerignore",
        "",
        "# always left out: VCS data, caches, local environments, outputs",
    ]
    out += [x for p in ALWAYS_EXCLUDED if (x := gitignore_to_dockerignore(p))]
    out += ["", "# look like secrets (name them in [tool.gpuship] include to ship them)"]
    forced = set(include)
    # gpuship matches these names at any depth (slash or not), so they all get **/
    out += [f"**/{p}" for p in SECRET_PATTERNS if p not in forced]
    out += [f"!**/{p}" for p in NOT_SECRETS]
    if private_keys:
        out += ["", "# hold a private key"] + [x for p in private_keys if (x := gitignore_to_dockerignore("/" + p))]
    gi = root / ".gitignore"
    if gi.is_file():
        lines = [x for p in gi.read_text(errors="replace").splitlines() if (x := gitignore_to_dockerignore(p))]
        if lines:
            out += ["", "# from .gitignore"] + lines
    user = _user_dockerignore(root)
    if user:
        out += ["", "# from the project's own .dockerignore (kept as written)"] + user
    if exclude:
        out += ["", "# [tool.gpuship] exclude"] + [x for p in exclude if (x := gitignore_to_dockerignore(p))]
    if include:
        out += ["", "# [tool.gpuship] include"] + [x for p in include if (x := gitignore_to_dockerignore("!" + p))]
    out += ["", "# the build's own inputs", f"!{REQUIREMENTS_NAME}", f"!{WORK_DIR}"]
    return out


DOCKERIGNORE_MARK = "# Written by `gpuship dockerfile`"


def _user_dockerignore(root: Path) -> list[str]:
    """Lines of a .dockerignore the user wrote (not one gpuship wrote, whose user section is kept instead)."""
    p = root / ".dockerignore"
    if not p.is_file():
        return []
    text = p.read_text(errors="replace")
    if not text.startswith(DOCKERIGNORE_MARK):
        return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    marker = "# from the project's own .dockerignore (kept as written)"
    if marker not in text:
        return []
    section = text.split(marker, 1)[1].split("\n\n", 1)[0]
    return [ln for ln in section.splitlines() if ln.strip()]


# -- pruning -------------------------------------------------------------------------------------------------


def prune_commands(
    venv: str, python: str, keep: Sequence[str], drop: Sequence[str], packages: Sequence[str]
) -> list[str]:
    """gpuship's default prune rules (:mod:`gpuship.sources.python.prune`) as ``find`` commands.

    Packages that compile code at run time keep their headers, static libraries and Cython sources; only the
    ones that may be in this lock are named, so the command stays short. ``keep``/``drop`` globs are applied
    as ``find -path`` globs relative to site-packages (close to, not exactly, their .gitignore meaning).
    """

    site = f"{venv}/lib/python{python}/site-packages"
    dists = {p.replace("-", "_").lower() for p in packages}
    jit = [j for j in JIT_PACKAGES if any(d == j.lower() or d.startswith(j.lower() + "_") for d in dists)]
    kept_user = [f"{site}/{k.strip('/')}" for k in keep]
    kept = [f"{site}/{j}" for j in jit] + kept_user
    if "numpy" in dists:
        kept += [f"{site}/numpy/_core/include", f"{site}/numpy/core/include", f"{site}/numpy/f2py/src"]

    def unless(paths: Sequence[str]) -> str:
        if not paths:
            return ""
        return "\\( " + " -o ".join(f"-path '{p}'" for p in paths) + " \\) -prune -o "

    names = lambda globs: "\\( " + " -o ".join(f"-name '{g}'" for g in globs) + " \\)"  # noqa: E731
    cmds = [
        f"find {venv} -depth -type d -name __pycache__ -exec rm -rf {{}} +",
        f"find {site} -mindepth 2 {unless([f'{site}/astropy/tests', f'{site}/sunpy/tests', *kept_user])}"
        "-type d \\( -name tests -o -name test \\) -prune -exec rm -rf {} +",
        f"find {site} {unless(kept)}-type f "
        + names(("*.h", "*.hh", "*.hpp", "*.hxx", "*.cuh", "*.a", "*.pyx", "*.pxd", "*.pxi"))
        + " -exec rm -f {} +",
        f"rm -rf {venv}/share/doc {venv}/share/man {venv}/share/info {venv}/share/gtk-doc {venv}/include",
        f"rm -f {venv}/.lock {site}/*.dist-info/REQUESTED",
    ]
    for d in drop:
        glob = posixpath.join(site, d.strip("/"))
        cmds.append(f"find {site} {unless(kept)}-path '{glob}' -prune -exec rm -rf {{}} +")
    return cmds


__all__ = [
    "CA_NAME",
    "DockerfileSpec",
    "ExtraLayer",
    "LibDepNote",
    "WORK_DIR",
    "dockerignore_lines",
    "gitignore_to_dockerignore",
    "plan_dockerfile",
    "prune_commands",
    "uv_version",
]
