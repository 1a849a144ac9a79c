"""The function runtime: what ``entrypoint = { function = "pkg.module:func" }`` puts into an image.

:mod:`gpuship.serve.runtime` is the server itself (standard library + Starlette + Uvicorn only); it is
copied alone into the image. This module says where it goes and how the image runs it:

* :func:`runtime_entries` — the file(s) for a layer (``/opt/gpuship/gpuship_runtime.py``);
* :func:`runtime_requirements` — the pinned Starlette/Uvicorn to install into the image's environment;
* :func:`runtime_entrypoint` — the ENTRYPOINT argv;
* :func:`with_runtime` — an :class:`~gpuship.oci.ImageConfig` set up to run it (entrypoint, default env,
  exposed port, stop signal, label).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError
from ..oci import Entry, ImageConfig
from . import runtime as _runtime

#: Where the runtime lives inside images.
RUNTIME_DIR = "/opt/gpuship"
RUNTIME_PATH = f"{RUNTIME_DIR}/gpuship_runtime.py"
#: The port it listens on unless PORT says otherwise.
DEFAULT_PORT = _runtime.DEFAULT_PORT
#: Label on images whose entrypoint is the function runtime (deploy writers read it to add probes).
RUNTIME_LABEL = "dev.gpuship.runtime"
FUNCTION_LABEL = "dev.gpuship.function"

#: Pinned like pyproject's ``serve`` extra (a test keeps the two equal).
STARLETTE = "starlette==1.10.0"
UVICORN = "uvicorn==0.54.0"


def runtime_source() -> bytes:
    """The runtime's source, as copied into images."""
    return Path(_runtime.__file__).read_bytes()


def runtime_entries() -> list[Entry]:
    """Layer entries placing the runtime at :data:`RUNTIME_PATH` (with its parent directories)."""
    data = runtime_source()
    return [Entry.dir("opt"), Entry.dir("opt/gpuship"), Entry.file(RUNTIME_PATH, data, mode=0o644)]


def runtime_requirements() -> list[str]:
    """What the image's Python environment needs for the runtime (pinned)."""
    return [STARLETTE, UVICORN]


def check_function_ref(function: str) -> str:
    """``pkg.module:func`` or a :class:`ConfigError` that says how to write it."""
    module, sep, attr = function.partition(":")
    ok = sep and module and attr and all(p.isidentifier() for p in module.split(".") + attr.split("."))
    if not ok:
        raise ConfigError(
            f"entrypoint function {function!r} is not of the form pkg.module:func",
            'write entrypoint = { function = "mypkg.handler:predict" } in [tool.gpuship]',
        )
    return function


def runtime_entrypoint(function: str, python: str = "python3") -> list[str]:
    """The ENTRYPOINT argv that serves ``function`` with the image's ``python``."""
    return [python, RUNTIME_PATH, check_function_ref(function)]


def runtime_env(port: int = DEFAULT_PORT) -> dict[str, str]:
    """Default environment of a function image (the image's own ENV values win over these)."""
    return {
        "PORT": str(port),
        "MAX_WORKERS": "4",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }


def with_runtime(config: ImageConfig, function: str, python: str = "python3", port: int = DEFAULT_PORT) -> ImageConfig:
    """``config`` made to serve ``function``: entrypoint, default env, exposed port, SIGTERM, labels."""
    env = runtime_env(port)
    env.update(config.env_dict())
    labels = dict(config.labels)
    labels.update({RUNTIME_LABEL: "function", FUNCTION_LABEL: function})
    port_text = f"{env['PORT']}/tcp"
    ports = tuple(sorted(set(config.exposed_ports) | {port_text}))
    return replace(
        config,
        entrypoint=tuple(runtime_entrypoint(function, python)),
        cmd=(),
        env=tuple(f"{k}={v}" for k, v in env.items()),
        labels=labels,
        exposed_ports=ports,
        stop_signal="SIGTERM",
    )


def is_runtime_image(config: ImageConfig) -> bool:
    """Whether an image runs the function runtime (by its label, or its entrypoint)."""
    return config.labels.get(RUNTIME_LABEL) == "function" or RUNTIME_PATH in config.entrypoint


__all__ = [
    "DEFAULT_PORT",
    "FUNCTION_LABEL",
    "RUNTIME_DIR",
    "RUNTIME_LABEL",
    "RUNTIME_PATH",
    "check_function_ref",
    "is_runtime_image",
    "runtime_entries",
    "runtime_entrypoint",
    "runtime_env",
    "runtime_requirements",
    "runtime_source",
    "with_runtime",
]
