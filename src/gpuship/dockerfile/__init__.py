"""``gpuship dockerfile``: the build plan of ``gpuship build`` written as a multi-stage Dockerfile.

Public API::

    export_dockerfile(project_dir, *, dockerfile_name="Dockerfile", platforms=(), extras=(), base=None,
                      variant="pip", libdeps=True, locked=False, ca_bundle=None, force=False, cache=None,
                      progress=None) -> ExportResult
    plan_dockerfile(project_dir, ...) -> DockerfileSpec          # the decisions, nothing written
    render_dockerfile(spec) -> str; render_dockerignore(spec) -> str
    render_requirements(lock, platforms, index_options=()) -> str  # gpuship.lock -> requirements.lock.txt
    import_debian_base(tag=DEFAULT_TAG, codename="bookworm", *, mirror=None, rebuild=False) -> str

See docs/benchmarks.md for how the exported Dockerfile compares with ``gpuship build``.
"""

from .debian_base import DEFAULT_TAG, import_debian_base
from .export import ExportResult, export_dockerfile
from .render import render_dockerfile, render_dockerignore
from .requirements import REQUIREMENTS_NAME, render_requirements, requirement_lines
from .spec import CA_NAME, WORK_DIR, DockerfileSpec, plan_dockerfile

__all__ = [
    "CA_NAME",
    "DEFAULT_TAG",
    "REQUIREMENTS_NAME",
    "WORK_DIR",
    "DockerfileSpec",
    "ExportResult",
    "export_dockerfile",
    "import_debian_base",
    "plan_dockerfile",
    "render_dockerfile",
    "render_dockerignore",
    "render_requirements",
    "requirement_lines",
]
