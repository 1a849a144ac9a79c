"""Deploy writers: ready-to-apply files for Kubernetes, Docker Compose, Slurm (pyxis/enroot) and NGC Base
Command, made from an image's config and a few options (:class:`DeploySpec`), plus the squashfs export
enroot runs. Each writer turns a spec into text; :func:`write_files` puts the texts in place atomically.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ..errors import GpushipError
from .compose import ComposeOptions, compose_file, compose_yaml
from .k8s import K8sOptions, Keda, Toleration, kubernetes_manifests, to_yaml
from .ngc import NgcOptions, ngc_script
from .slurm import SlurmOptions, slurm_script
from .spec import DeploySpec, parse_quantity, spec_from_image
from .squashfs import export_squashfs, write_enroot_config


def write_files(files: Mapping[str, str], out_dir: Path | str, *, executable: tuple[str, ...] = ()) -> list[Path]:
    """Write each ``name -> text`` into ``out_dir`` (made if missing), each file under a temp name first and
    renamed into place once written; ``executable`` names get mode 0755."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise GpushipError(f"--out {out} is a file", "give a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GpushipError(f"cannot create {out}: {exc.strerror}", "check the path and its permissions") from exc
    written: list[Path] = []
    temps: list[tuple[Path, Path]] = []
    try:
        for name, text in files.items():
            fd, tmp_name = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.chmod(tmp_name, 0o755 if name in executable else 0o644)
            temps.append((Path(tmp_name), out / name))
        for tmp, dest in temps:  # all written: now put them in place
            os.replace(tmp, dest)
            written.append(dest)
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
    return written


__all__ = [
    "ComposeOptions",
    "DeploySpec",
    "K8sOptions",
    "Keda",
    "NgcOptions",
    "SlurmOptions",
    "Toleration",
    "compose_file",
    "compose_yaml",
    "export_squashfs",
    "kubernetes_manifests",
    "ngc_script",
    "parse_quantity",
    "slurm_script",
    "spec_from_image",
    "to_yaml",
    "write_enroot_config",
    "write_files",
]
