"""The ``[tool.gpuship]`` table: schema, defaults and validation messages.

Every key is documented in the README ("Configuration"). Unknown keys are an error that names the closest
known one, so a typo never silently does nothing.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

KNOWN_KEYS = {
    "base": "base image: a profile (debian-bookworm, debian-trixie) or a registry reference",
    "python": "Python version of the image (must match the base)",
    "platforms": "target platforms, e.g. ['linux/amd64', 'linux/arm64']",
    "entrypoint": "command list, a string, or { function = 'pkg.module:func' } for the function runtime",
    "cmd": "default arguments after the entrypoint",
    "env": "extra environment variables",
    "ports": "ports to expose",
    "system-packages": "extra Debian packages (apt-install without apt)",
    "keep": "globs of files pruning must keep",
    "drop": "globs of extra files to prune from the environment",
    "include": "project files to include even though they look like secrets or are ignored",
    "exclude": "extra globs of project files to leave out of the app layer",
    "user": "user the container runs as (default: the non-root user 65532)",
    "workdir": "working directory and app location (default /app)",
    "labels": "extra image labels",
    "compression": "layer compression: gzip (default) or zstd",
    "find-libdeps": "add Debian packages for shared libraries the wheels need (default true)",
    "bytecode": "precompile .pyc at build time: 'unchecked-hash' (default, reproducible) or 'none'",
    "gpu": "GPU settings table ([tool.gpuship.gpu])",
    "debian": "Debian repository settings table ([tool.gpuship.debian])",
    "index-url": "Python package index to use instead of uv's default",
    "extra-index-url": "additional Python package indexes",
    "find-links": "directories or pages of wheels to use besides the index",
    "replace-base-packages": "Python packages of a registry base image the project may install over (default: none)",
}

DEFAULT_USER = "65532:65532"
DEFAULT_WORKDIR = "/app"


def _check_keys(table: Mapping[str, Any], known: Mapping[str, str] | set[str], where: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(sorted(known))}"
            raise ConfigError(f"unknown key '{key}' in {where}", hint)


def _str_list(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return tuple(str(v) for v in value)
    raise ConfigError(f"[tool.gpuship] {key} must be a list of strings", f'e.g. {key} = ["..."]')


@dataclass(frozen=True)
class Entrypoint:
    """What the container runs: an argv, or a function served by the gpuship function runtime."""

    argv: tuple[str, ...] = ()
    function: str = ""

    @classmethod
    def parse(cls, value: Any) -> Entrypoint | None:
        if value is None:
            return None
        if isinstance(value, str):
            import shlex

            return cls(argv=tuple(shlex.split(value)))
        if isinstance(value, list):
            return cls(argv=_str_list(value, "entrypoint"))
        if isinstance(value, dict) and set(value) == {"function"} and isinstance(value["function"], str):
            fn = value["function"]
            if ":" not in fn:
                raise ConfigError(f"entrypoint function '{fn}' must be 'package.module:function'")
            return cls(function=fn)
        raise ConfigError('[tool.gpuship] entrypoint must be a list, a string, or { function = "pkg.module:func" }')


@dataclass(frozen=True)
class GpushipConfig:
    base: str = "debian-bookworm"
    python: str = ""
    platforms: tuple[str, ...] = ()
    entrypoint: Entrypoint | None = None
    cmd: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[str, ...] = ()
    system_packages: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    user: str = DEFAULT_USER
    workdir: str = DEFAULT_WORKDIR
    labels: Mapping[str, str] = field(default_factory=dict)
    compression: str = "gzip"
    find_libdeps: bool = True
    bytecode: str = "unchecked-hash"
    gpu: Mapping[str, Any] = field(default_factory=dict)
    debian: Mapping[str, Any] = field(default_factory=dict)
    index_url: str = ""
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    replace_base_packages: tuple[str, ...] = ()

    @classmethod
    def from_table(cls, table: Mapping[str, Any] | None) -> GpushipConfig:
        table = dict(table or {})
        _check_keys(table, KNOWN_KEYS, "[tool.gpuship]")

        def mapping(key: str) -> dict[str, str]:
            v = table.get(key) or {}
            if not isinstance(v, dict):
                raise ConfigError(f"[tool.gpuship] {key} must be a table", f'e.g. {key} = {{ KEY = "value" }}')
            return {str(k): str(val) for k, val in v.items()}

        compression = str(table.get("compression", "gzip"))
        if compression not in ("gzip", "zstd"):
            raise ConfigError(f"[tool.gpuship] compression must be gzip or zstd, not {compression!r}")
        bytecode = str(table.get("bytecode", "unchecked-hash"))
        if bytecode not in ("none", "unchecked-hash"):
            raise ConfigError(f"[tool.gpuship] bytecode must be 'none' or 'unchecked-hash', not {bytecode!r}")
        user = str(table.get("user", DEFAULT_USER))
        workdir = str(table.get("workdir", DEFAULT_WORKDIR))
        if not workdir.startswith("/"):
            raise ConfigError(f"[tool.gpuship] workdir must be an absolute path, not {workdir!r}")
        for sub in ("gpu", "debian"):
            if sub in table and not isinstance(table[sub], dict):
                raise ConfigError(f"[tool.gpuship.{sub}] must be a table")
        debian = dict(table.get("debian") or {})
        _check_keys(debian, {"mirror", "security-mirror"}, "[tool.gpuship.debian]")
        extra_idx = table.get("extra-index-url")
        return cls(
            base=str(table.get("base", "debian-bookworm")),
            python=str(table.get("python", "")),
            platforms=_str_list(table.get("platforms"), "platforms"),
            entrypoint=Entrypoint.parse(table.get("entrypoint")),
            cmd=_str_list(table.get("cmd"), "cmd"),
            env=mapping("env"),
            ports=_str_list(table.get("ports"), "ports"),
            system_packages=_str_list(table.get("system-packages"), "system-packages"),
            keep=_str_list(table.get("keep"), "keep"),
            drop=_str_list(table.get("drop"), "drop"),
            include=_str_list(table.get("include"), "include"),
            exclude=_str_list(table.get("exclude"), "exclude"),
            user=user,
            workdir=workdir,
            labels=mapping("labels"),
            compression=compression,
            find_libdeps=bool(table.get("find-libdeps", True)),
            bytecode=bytecode,
            gpu=dict(table.get("gpu") or {}),
            debian=debian,
            index_url=str(table.get("index-url", "")),
            extra_index_urls=_str_list(extra_idx, "extra-index-url"),
            find_links=_str_list(table.get("find-links"), "find-links"),
            replace_base_packages=_str_list(table.get("replace-base-packages"), "replace-base-packages"),
        )

    def debian_mirror(self) -> str | None:
        """The Debian mirror from config or ``GPUSHIP_DEBIAN_MIRROR``; None means the host's apt sources."""
        return os.environ.get("GPUSHIP_DEBIAN_MIRROR") or self.debian.get("mirror") or None
