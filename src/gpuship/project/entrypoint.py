"""Choose what the container runs, and refuse an entrypoint that would not be found at run time.

Order: ``[tool.gpuship] entrypoint``; else the project's single ``[project.scripts]`` entry; else
``python -m <package>`` for a package with ``__main__.py``; else ``python main.py`` / ``python app.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..config import Entrypoint
from ..errors import ConfigError

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
