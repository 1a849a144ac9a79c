"""Write the exported Dockerfile and its build inputs into the project (the build context).

Files written (each to a temp file, then renamed, so a failure never leaves half of one):

* ``Dockerfile`` (or the name given) and ``.dockerignore`` — a project's own .dockerignore lines are kept in it;
* ``requirements.lock.txt`` — ``gpuship.lock`` for the chosen platforms, with hashes;
* ``.gpuship/docker/`` — ``README.md`` (what the folder is), the files of gpuship's extra layers (``layers/``:
  the function runtime, gpuship-check), a registry base's ``base-constraints.txt`` and, when asked for,
  ``build-ca.crt`` (git-ignored there).

A Dockerfile or requirements file that gpuship did not write is never replaced without ``force``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..cache import Cache
from ..errors import GpushipError
from ..progress import NO_PROGRESS, Progress
from ..registry.options import RegistryOptions
from .render import MARK, README_NAME, render_dockerfile, render_dockerignore
from .requirements import HEADER as REQ_HEADER
from .requirements import REQUIREMENTS_NAME
from .spec import CA_NAME, CONSTRAINTS_NAME, WORK_DIR, DockerfileSpec, Variant, plan_dockerfile

README = f"""# .gpuship/docker: inputs of the Dockerfile {MARK}

- `layers/<group>/`: files of gpuship's own layers (the function runtime, gpuship-check), COPYed to `/`.
- `{CA_NAME}` (optional, git-ignored): a CA bundle for a TLS-intercepting proxy. The Dockerfile's build stages
  trust it; the image never contains it.

Written by `gpuship dockerfile`; run it again rather than editing these files.
"""


@dataclass(frozen=True)
class ExportResult:
    spec: DockerfileSpec
    dockerfile: Path
    written: tuple[Path, ...]

    def build_command(self, tag: str | None = None, base: str | None = None) -> list[str]:
        """The ``docker build`` command line for the exported Dockerfile."""
        argv = ["docker", "build", "-t", tag or f"{self.spec.name}:{self.spec.version}"]
        if self.dockerfile.name != "Dockerfile":
            argv += ["-f", str(self.dockerfile)]
        if base:
            argv += ["--build-arg", f"BASE={base}"]
        return [*argv, str(self.spec.project_dir)]


def export_dockerfile(
    project_dir: Path,
    *,
    dockerfile_name: str = "Dockerfile",
    platforms: Sequence[str] = (),
    extras: Sequence[str] = (),
    base: str | None = None,
    variant: Variant = "pip",
    libdeps: bool = True,
    locked: bool = False,
    ca_bundle: Path | None = None,
    force: bool = False,
    cache: Cache | None = None,
    progress: Progress = NO_PROGRESS,
    registry: RegistryOptions = RegistryOptions(),
) -> ExportResult:
    """Plan and write the Dockerfile of ``project_dir`` (see the module doc for the files)."""
    root = Path(project_dir).resolve()
    if "/" in dockerfile_name or dockerfile_name in ("", ".", ".."):
        raise GpushipError(
            f"--file {dockerfile_name!r} must be a file name", "the Dockerfile goes in the project folder"
        )
    dockerfile = root / dockerfile_name
    req = root / REQUIREMENTS_NAME
    if not force:
        _refuse_foreign(dockerfile, lambda t: MARK in "\n".join(t.splitlines()[:3]))
        _refuse_foreign(req, lambda t: t.startswith(REQ_HEADER))
    if ca_bundle is not None and not Path(ca_bundle).is_file():
        raise GpushipError(f"CA bundle {ca_bundle} does not exist", "give a PEM file, or --no-ca-bundle")

    spec = plan_dockerfile(
        root,
        registry=registry,
        platforms=platforms,
        extras=extras,
        base=base,
        variant=variant,
        libdeps=libdeps,
        locked=locked,
        dockerfile_name=dockerfile_name,
        cache=cache,
        progress=progress,
    )
    written: list[Path] = []
    work = root / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    _write(work / README_NAME, README.encode(), written)
    _write(work / ".gitignore", f"{CA_NAME}\n".encode(), written)
    _write_layers(work / "layers", spec, written)
    if spec.registry_base:
        _write(work / CONSTRAINTS_NAME, ("\n".join(spec.base_constraints) + "\n").encode(), written)
    elif (work / CONSTRAINTS_NAME).exists():
        (work / CONSTRAINTS_NAME).unlink()
    if ca_bundle is not None:
        _write(work / CA_NAME, Path(ca_bundle).read_bytes(), written)
    elif (work / CA_NAME).exists():
        (work / CA_NAME).unlink()
    if spec.variant == "pip":
        _write(req, spec.requirements_text.encode(), written)
    _write(root / ".dockerignore", render_dockerignore(spec).encode(), written)
    _write(dockerfile, render_dockerfile(spec).encode(), written)
    return ExportResult(spec, dockerfile, tuple(written))


def _refuse_foreign(path: Path, ours: Callable[[str], bool]) -> None:
    if path.is_file() and not ours(path.read_text(errors="replace")):
        raise GpushipError(
            f"{path} exists and was not written by gpuship",
            "use --file NAME to write the Dockerfile elsewhere, or --force to replace it",
        )


def _write(path: Path, data: bytes, written: list[Path], mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    written.append(path)


def _write_layers(dest: Path, spec: DockerfileSpec, written: list[Path]) -> None:
    """gpuship's extra layers as files: built in a temp folder, then swapped in for the old one."""
    if not spec.extra_layers:
        if dest.exists():
            shutil.rmtree(dest)
        return
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".layers."))
    try:
        for layer in spec.extra_layers:
            top = tmp / layer.group
            top.mkdir(parents=True, exist_ok=True)
            for e in layer.entries:
                target = top / e.path
                if e.kind == "dir":
                    target.mkdir(parents=True, exist_ok=True)
                    os.chmod(target, e.mode & 0o7777)
                elif e.kind == "symlink":
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(e.target, target)
                elif e.kind == "file":
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(e.read())
                    os.chmod(target, e.mode & 0o7777)
                else:
                    raise GpushipError(f"cannot export {e.kind} {e.path} of gpuship's {layer.group} layer")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    written.extend(sorted(p for p in dest.rglob("*") if p.is_file()))
