"""``gpuship explain [PATH]`` (the CUDA plan for a project) and ``gpuship doctor`` (this host's GPU support)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any  # Any: [tool.gpuship] tables as read from TOML

import typer

from ..errors import ConfigError
from .app import app
from .console import handles_errors, out

EXPLAIN_EPILOG = (
    "Examples: gpuship explain examples/torch-status | gpuship explain -r torch -r cupy --target V100 | "
    "gpuship explain -r requirements.txt --min-driver 535"
)


def _requirements_from(values: list[str]) -> list[str]:
    """``-r`` values: a requirements file when the path exists, else one requirement."""
    reqs: list[str] = []
    for v in values:
        p = Path(v)
        if p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.split(" #", 1)[0].strip()
                if line and not line.startswith("#"):
                    reqs.append(line)
        else:
            reqs.append(v)
    return reqs


def _project_inputs(path: Path) -> tuple[list[str], dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    """Requirements, the merged [tool.gpuship] table (pyproject.toml, gpuship.toml, cog.yaml), the platforms and
    the notes of the project at ``path``."""
    from ..plan.build_plan import config_table  # when the command runs, not for --help
    from ..project import load_project  # when the command runs, not for --help

    root = path if path.is_dir() else path.parent
    project = load_project(path)
    tool = config_table(root.resolve(), project.tool, project.settings)
    plats = tool.get("platforms") or ()
    plats = (plats,) if isinstance(plats, str) else tuple(str(p) for p in plats)
    return list(project.requirements), tool, plats, tuple(project.notes)


@app.command("explain", epilog=EXPLAIN_EPILOG)
@handles_errors
def explain(
    path: Path | None = typer.Argument(
        None,
        help="The project folder (pyproject.toml, requirements.txt, environment.yml). Default: the current "
        "folder, unless --requirement is given.",
    ),
    requirement: list[str] = typer.Option(
        [],
        "--requirement",
        "-r",
        help='A requirement ("torch>=2.6") or a requirements file; repeatable. '
        "Added to the project's, or used alone when no PATH is given.",
    ),
    cuda: str | None = typer.Option(None, "--cuda", help="Override the cuda setting: auto, 12.8, 13, ..."),
    target: list[str] = typer.Option([], "--target", "-t", help="Override targets: H100, L4, sm_80, ...; repeatable."),
    min_driver: str | None = typer.Option(None, "--min-driver", help="Override min-driver: 535, 570.124.06, ..."),  # noqa: UP007
    torch_index: str | None = typer.Option(None, "--torch-index", help="Override torch-index (a URL; {tag} -> cu128)."),  # noqa: UP007
    platform: str | None = typer.Option(
        None, "--platform", help="linux/amd64 (default: the project's first) or linux/arm64."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Show the CUDA plan for a project: the CUDA line and why, the rewritten requirements, the constraints that
    keep every CUDA library on that line, the GPU environment and labels of the image."""
    from ..cuda import GpuSettings, plan_gpu  # when the command runs, not for --help

    reqs: list[str] = []
    tool: dict[str, Any] = {}
    plats: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    if path is not None or not requirement:
        reqs, tool, plats, notes = _project_inputs(path or Path("."))
    reqs += _requirements_from(requirement)
    gpu_table = tool.get("gpu") or {}
    if not isinstance(gpu_table, dict):
        raise ConfigError("[tool.gpuship.gpu] must be a table")
    settings = GpuSettings.from_table(gpu_table).with_overrides(cuda, target or None, min_driver, torch_index)
    plat = platform or (plats[0] if plats else "linux/amd64")
    root = (path or Path(".")).resolve()
    root = root if root.is_dir() else root.parent
    from ..plan.build_plan import local_wheels  # when the command runs, not for --help

    links = tool.get("find-links") or []
    wheels = local_wheels(root, [links] if isinstance(links, str) else [str(x) for x in links])
    plan = plan_gpu(reqs, settings, plat, local_wheels=wheels)
    if as_json:
        from ..check import manifest_data  # when the command runs, not for --help

        doc: dict[str, Any] = {
            "is_gpu": plan.is_gpu,
            "platform": plan.platform,
            "requirements": list(plan.requirements),
            "explain": [*notes, *plan.explain()],
        }
        if plan.is_gpu or plan.index_urls:  # a CPU image's index: torch's CPU build
            doc["index_urls"] = list(plan.index_urls)
        if plan.is_gpu:
            doc |= {
                "cuda": plan.cuda,
                "constraints": list(plan.constraints),
                "env": dict(plan.env),
                "labels": dict(plan.labels),
                "manifest": manifest_data(plan),
            }
        out.print_json(json.dumps(doc))
        return
    for line in (*notes, *plan.explain()):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    if not plan.is_gpu and list(plan.requirements) == reqs and not plan.index_urls:
        return
    out.print("requirements:", markup=False)
    for r in plan.requirements:
        out.print(f"  {r}", markup=False, soft_wrap=True)
    if plan.index_urls:
        out.print("extra index URLs (uv --extra-index-url):", markup=False)
        for u in plan.index_urls:
            out.print(f"  {u}", markup=False)
    if not plan.is_gpu:
        return
    out.print("constraints:", markup=False)
    for c in plan.constraints:
        out.print(f"  {c}", markup=False)
    out.print("env:", markup=False)
    for k, v in plan.env.items():
        out.print(f"  {k}={v}", markup=False)
    out.print("labels:", markup=False)
    for k, v in plan.labels.items():
        out.print(f"  {k}={v}", markup=False)


@app.command("doctor")
@handles_errors
def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Check this host for GPU containers: the NVIDIA driver and its CUDA version, the GPUs, Docker/Podman and
    their NVIDIA runtime, CDI specs (/etc/cdi, /var/run/cdi), runc and the NVIDIA container tools, and what
    `gpuship run` will use. Works without a GPU (it says so). Exit 0 either way: it reports, it does not judge."""
    from ..check.host import probe_host  # when the command runs, not for --help

    report = probe_host()
    if as_json:
        out.print_json(json.dumps(report.to_json()))
        return
    for line in report.lines():
        out.print(line, markup=False, highlight=False, soft_wrap=True)
