"""Render a :class:`DockerfileSpec` as a multi-stage Dockerfile (and its .dockerignore).

The shape is the one the field reports recommend (seed 001's multi-stage venv, seed 002's constraints):

* ``builder`` — the base plus ``python3.X-venv``; uv (pinned) in its own venv; ``/opt/venv`` created with the
  base's interpreter and filled by ``uv pip install --require-hashes --no-deps -r requirements.lock.txt``; then
  gpuship's prune rules. Outbound TLS trusts an extra CA only here, and only when one is in the context.
* ``project`` (packages only) — the project built into a wheel and installed with ``--prefix`` into its own tree.
* the image — the base, then one ``apt-get install`` of the interpreter, libraries, system packages and libdeps
  (lists removed in the same RUN), ``COPY --from`` of the venv and the project, gpuship's own files, the app;
  then ENV, LABEL, EXPOSE, USER, ENTRYPOINT/CMD — gpuship's layer order and image config.

Only instructions Docker's classic builder knows are used (no ``RUN --mount``, no heredocs), so it builds with
``docker build`` on any engine, BuildKit or not.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Sequence

from ..tls import SYSTEM_CA_BUNDLE
from .requirements import REQUIREMENTS_NAME
from .spec import CA_NAME, CONSTRAINTS_NAME, MICROMAMBA_IMAGE, WORK_DIR, DockerfileSpec

MARK = "written by `gpuship dockerfile`"
README_NAME = "README.md"
SYSTEM_CA = SYSTEM_CA_BUNDLE  # the image's (Debian's) bundle, extended in the build stages
BUILD_DIR = "/tmp/build"
LAYERS = "/layers"


def render_dockerfile(spec: DockerfileSpec) -> str:
    """The Dockerfile text for ``spec`` (pip variant or micromamba variant)."""
    parts = _header(spec)
    parts += _builder_micromamba(spec) if spec.variant == "micromamba" else _builder_pip(spec)
    if spec.is_package and not spec.registry_base:
        parts += _project_stage(spec)
    parts += _runtime(spec)
    return "\n".join(parts).rstrip() + "\n"


def render_dockerignore(spec: DockerfileSpec) -> str:
    return "\n".join(spec.dockerignore) + "\n"


# -- stages ------------------------------------------------------------------------------------------------


def _header(spec: DockerfileSpec) -> list[str]:
    plats = ",".join(str(p) for p in spec.platforms)
    lines = [
        f"# {spec.name} {spec.version}: Dockerfile {MARK} from the plan of `gpuship build`:",
        "# the same locked packages (requirements.lock.txt, hash-checked), base packages, layer order and config.",
        "# Run `gpuship dockerfile` again after changing dependencies or [tool.gpuship]; do not edit by hand.",
        "#",
        f"#   docker build -t {spec.name}:{spec.version} .",
    ]
    if len(spec.platforms) > 1 or spec.platforms[0].architecture != "amd64":
        lines.append(f"#   docker buildx build --platform {plats} -t {spec.name}:{spec.version} .")
    lines += [
        "#",
        "# BASE: where Docker Hub cannot be reached, give a local Debian image (--build-arg BASE=...);",
        "#   `gpuship dockerfile --import-base TAG` makes a debian:*-slim equivalent from the Debian mirror.",
        f"# A TLS-intercepting proxy: its CA bundle at {WORK_DIR}/{CA_NAME} is trusted by the build stages only",
        "#   (`gpuship dockerfile --ca-bundle FILE` puts it there); it never reaches the image.",
    ]
    if spec.variant == "micromamba":
        lines += [
            f"# Variant: micromamba creates the environment from {spec.environment_file} with conda packages (needs",
            "#   the conda channels and the micromamba image; the default variant installs PyPI wheels instead).",
        ]
    for note in spec.notes:
        lines.append(f"# note: {note}")
    lines += [""]
    if spec.registry_base:
        lines.append(f"# the base image gpuship read, pinned by digest ({spec.registry_tag} when it was exported)")
    lines.append(f"ARG BASE={spec.base_default}")
    if spec.registry_base:
        lines.append("# where uv comes from (any Debian with python3-venv)")
        lines.append("ARG UV_BASE=debian:bookworm-slim")
    if spec.variant == "micromamba":
        lines += [f"ARG MICROMAMBA_IMAGE={MICROMAMBA_IMAGE}", "", "FROM ${MICROMAMBA_IMAGE} AS micromamba"]
    return lines + [""]


def _ca_steps(packages: Sequence[str]) -> list[str]:
    """COPY of the optional CA, apt-get of the builder's packages, and the CA appended to the system bundle."""
    return [
        f"COPY {WORK_DIR}/{README_NAME} {WORK_DIR}/{CA_NAME[:-1]}[{CA_NAME[-1]}] {BUILD_DIR}/",
        *_run(
            [
                "apt-get update",
                "apt-get install -y --no-install-recommends " + " ".join(packages),
                "rm -rf /var/lib/apt/lists/*",
                f"if [ -f {BUILD_DIR}/{CA_NAME} ]; then cat {BUILD_DIR}/{CA_NAME} >> {SYSTEM_CA}; fi",
            ]
        ),
    ]


def _builder_pip(spec: DockerfileSpec) -> list[str]:
    venv = spec.venv
    install = f"/opt/uv/bin/uv pip install --python {venv}/bin/python --require-hashes --no-deps" + (
        " --index-strategy unsafe-best-match" if any("--extra-index-url" in a for a in spec.index_args) else ""
    )
    count = f"# {spec.package_count} package{'s' if spec.package_count != 1 else ''}, each pinned to the file gpuship locked (any other file fails its hash)"
    if spec.registry_base:
        return _builder_registry(spec, install, count)
    py = f"python{spec.python_version}"
    lines = [
        "# ---- builder: the venv, made with uv from the locked, hash-checked files ------------------------------",
        "FROM ${BASE} AS builder",
        *_ca_steps(spec.builder_packages),
        f"ENV SSL_CERT_FILE={SYSTEM_CA} PIP_CERT={SYSTEM_CA} \\",
        "    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 UV_NO_CACHE=1 UV_PYTHON_DOWNLOADS=never",
        f"ARG UV_VERSION={spec.uv_version}",
        *_run(
            [
                f"{py} -m venv /opt/uv",
                '/opt/uv/bin/pip install --quiet "uv==${UV_VERSION}"',
                f"{py} -m venv --without-pip {venv}",
                f"rm -f {venv}/bin/[Aa]ctivate*",
            ]
        ),
        f"COPY {REQUIREMENTS_NAME} {BUILD_DIR}/",
        count,
        *_run([f"{install} -r {BUILD_DIR}/{REQUIREMENTS_NAME}"]),
    ]
    return lines + _after_install(spec)


def _builder_registry(spec: DockerfileSpec, install: str, count: str) -> list[str]:
    """A registry base: its own Python; the venv sees its packages, and its packages are constraints (seed 002).

    The base may have no shell and no pip (gpuship's own bases have neither), so its stages only COPY and run
    programs in exec form; uv's static binary, the CA bundle, and the shell work (pruning) come from a small
    Debian stage (``UV_BASE``). The constraints were read by gpuship from the base's layers (the base is pinned by
    digest, so they stay exact).
    """
    py, venv = spec.python, spec.venv
    uv_install = [*install.split(), "-c", f"{BUILD_DIR}/{CONSTRAINTS_NAME}", "-r", f"{BUILD_DIR}/{REQUIREMENTS_NAME}"]
    lines = [
        "# ---- uv: its binary, installed with pip on Debian (the base image may have no pip and no shell) -----------",
        "FROM ${UV_BASE} AS uv",
        *_ca_steps(["python3-venv", "ca-certificates"]),
        f"ENV PIP_CERT={SYSTEM_CA} PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1",
        f"ARG UV_VERSION={spec.uv_version}",
        *_run(["python3 -m venv /opt/uv", '/opt/uv/bin/pip install --quiet "uv==${UV_VERSION}"']),
        "",
        "# ---- builder: a venv over the base's Python, made with uv from the locked, hash-checked files -----------",
        "FROM ${BASE} AS builder",
        "USER 0:0",
        "COPY --from=uv /opt/uv/bin/uv /opt/uv/bin/uv",
        f"COPY --from=uv {SYSTEM_CA} {BUILD_DIR}/ca.pem",
        f"ENV SSL_CERT_FILE={BUILD_DIR}/ca.pem UV_NO_CACHE=1 UV_PYTHON_DOWNLOADS=never",
        _exec([py, "-m", "venv", "--without-pip", "--system-site-packages", venv]),
        f"COPY {REQUIREMENTS_NAME} {WORK_DIR}/{CONSTRAINTS_NAME} {BUILD_DIR}/",
        f"# {CONSTRAINTS_NAME}: the base's own distributions (seed 002's constraints file, read by gpuship from the",
        "# base's layers): a locked file that would replace one of them fails here. requirements.lock.txt leaves out",
        "# what the base already has in the same version.",
        count,
        _exec(uv_install),
        "",
    ]
    if spec.is_package:
        lines += [
            "# ---- project: the project itself, built into a wheel and installed as its own layer ---------------------",
            "FROM builder AS project",
            "COPY . /tmp/src",
            _exec(
                [
                    "/opt/uv/bin/uv",
                    "pip",
                    "install",
                    "--python",
                    f"{venv}/bin/python",
                    "--no-deps",
                    "--prefix",
                    f"{LAYERS}/project",
                    "/tmp/src",
                ]
            ),
            "",
        ]
    lines += [
        "# ---- pruned: gpuship's prune rules, run where there is a shell ----------------------------------------------",
        "FROM uv AS pruned",
        f"COPY --from=builder {venv} {venv}",
    ]
    if spec.is_package:
        lines.append(f"COPY --from=project {LAYERS}/project {LAYERS}/project")
    cleanup = [f"rm -f {venv}/bin/[Aa]ctivate*"]
    if spec.is_package:
        cleanup += [
            f"rm -f {LAYERS}/project/.lock",
            f"find {LAYERS}/project -depth -type d -name __pycache__ -exec rm -rf {{}} +",
        ]
    lines += _run([*spec.prune_commands, *cleanup])
    if spec.bytecode == "unchecked-hash":
        lines += [
            "",
            "# ---- venv: byte code compiled by the base's own Python ------------------------------------------------",
            "FROM ${BASE} AS venv",
            "USER 0:0",
            f"COPY --from=pruned {venv} {venv}",
            _exec([f"{venv}/bin/python", "-c", _compile_venv(venv)]),
        ]
    return lines + [""]


def _compile_venv(venv: str) -> str:
    """Python that compiles the venv's byte code as gpuship does: a file that does not compile (a module written
    for a newer Python, a template) gets no .pyc and does not fail the build; any other error does."""
    return (
        "import compileall, py_compile; compileall.compile_dir("
        f"{json.dumps(venv + '/lib')}, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)"
    )


def _exec(argv: Sequence[str]) -> str:
    """RUN in exec form (no shell needed in the image)."""
    return "RUN " + json.dumps(list(argv))


def _after_install(spec: DockerfileSpec) -> list[str]:
    venv = spec.venv
    lines: list[str] = []
    if spec.prune_commands:
        lines += [
            "# gpuship's prune rules: caches, tests, headers and static libraries (run-time compilers keep theirs)",
            *_run(spec.prune_commands),
        ]
    if spec.bytecode == "unchecked-hash":
        lines += [
            "# bytecode compiled at build time, valid without source timestamps ([tool.gpuship] bytecode)",
            *_run([f"{venv}/bin/python -c {shlex.quote(_compile_venv(venv))}"]),
        ]
    return lines + [""]


def _builder_micromamba(spec: DockerfileSpec) -> list[str]:
    venv = spec.venv
    return [
        "# ---- builder: the conda environment, made by micromamba from environment.yml ---------------------------",
        "FROM ${BASE} AS builder",
        *_ca_steps(spec.builder_packages),
        f"ENV SSL_CERT_FILE={SYSTEM_CA} REQUESTS_CA_BUNDLE={SYSTEM_CA} PIP_CERT={SYSTEM_CA} \\",
        f"    MAMBA_SSL_VERIFY={SYSTEM_CA} MAMBA_ROOT_PREFIX=/opt/micromamba PIP_NO_CACHE_DIR=1",
        "COPY --from=micromamba /bin/micromamba /usr/local/bin/micromamba",
        f"COPY {spec.environment_file} {BUILD_DIR}/",
        *_run(
            [
                f"micromamba create --yes --prefix {venv} --file {BUILD_DIR}/{spec.environment_file}",
                "micromamba clean --all --yes",
                f"find {venv} -depth -type d -name __pycache__ -exec rm -rf {{}} +",
                f"rm -rf {venv}/share/doc {venv}/share/man {venv}/share/info",
            ]
        ),
        "",
    ]


def _project_stage(spec: DockerfileSpec) -> list[str]:
    prefix = f"{LAYERS}/project"
    if spec.variant == "micromamba":
        install = f"{spec.venv}/bin/python -m pip install --no-deps --prefix {prefix} /tmp/src"
    else:
        install = f"/opt/uv/bin/uv pip install --python {spec.venv}/bin/python --no-deps --prefix {prefix} /tmp/src"
    return [
        "# ---- project: the project itself, built into a wheel and installed as its own layer ---------------------",
        "FROM builder AS project",
        "COPY . /tmp/src",
        *_run(
            [install, f"rm -f {prefix}/.lock", f"find {prefix} -depth -type d -name __pycache__ -exec rm -rf {{}} +"]
        ),
        "",
    ]


def _runtime(spec: DockerfileSpec) -> list[str]:
    lines = [
        "# ---- the image ----------------------------------------------------------------------------------------",
        "FROM ${BASE}",
    ]
    steps: list[str] = []
    if spec.runtime_packages:
        what = (
            "Python's interpreter and standard library, the base's libraries"
            if spec.variant == "pip" and not spec.registry_base
            else "the base's libraries"
        )
        lines.append(f"# {what}, system packages and find-libdeps' packages: one RUN, no apt lists left")
        for dep in spec.libdeps:
            lines.append(f"#   {dep.package}: {dep.soname}, needed by /{dep.needed_by.lstrip('/')}")
        steps = [
            "apt-get update",
            "apt-get install -y --no-install-recommends " + " ".join(spec.runtime_packages),
            "rm -rf /var/lib/apt/lists/*",
        ]
    if spec.variant == "pip" and not spec.registry_base:
        steps.append(f"ln -sf python{spec.python_version} /usr/bin/python3")
    if spec.create_user:
        steps.append("groupadd --gid 65532 app")
        steps.append("useradd --uid 65532 --gid 65532 --home-dir /home/app --create-home --shell /usr/sbin/nologin app")
    lines += _run(steps)
    venv_stage = "builder"
    project_stage = "project"
    if spec.registry_base:
        venv_stage = "venv" if spec.bytecode == "unchecked-hash" else "pruned"
        project_stage = "pruned"
    lines.append(f"COPY --from={venv_stage} {spec.venv} {spec.venv}")
    for layer in spec.extra_layers:  # below the project, as gpuship build has them: an edit leaves them cached
        lines += [f"# {layer.comment}", f"COPY {layer.context_dir}/ /"]
    if spec.is_package:
        lines.append(f"COPY --from={project_stage} {LAYERS}/project/ {spec.venv}/")
    lines.append(f"WORKDIR {spec.workdir}")
    if spec.app_files:
        lines.append(_copy(spec.app_files, "./"))
    for d in spec.app_dirs:
        lines.append(_copy([f"{d}/"], f"./{d}/"))
    lines += _env(spec.env)
    if spec.revision:
        lines.append(f"ARG REVISION={spec.revision}")
    labels = list(spec.labels)
    if spec.revision:
        labels.append(("org.opencontainers.image.revision", "${REVISION}"))
    if labels:
        lines.append(
            "LABEL " + " \\\n      ".join(f"{_q(k)}={_q(v, allow_vars=v == '${REVISION}')}" for k, v in labels)
        )
    if spec.ports:
        lines.append("EXPOSE " + " ".join(spec.ports))
    lines.append(f"USER {spec.user}")
    if spec.entrypoint:
        lines.append("ENTRYPOINT " + json.dumps(list(spec.entrypoint)))
    if spec.cmd:
        lines.append("CMD " + json.dumps(list(spec.cmd)))
    return lines


# -- helpers -----------------------------------------------------------------------------------------------


def _run(commands: Iterable[str]) -> list[str]:
    cmds = list(commands)
    if not cmds:
        return []
    out = [f"RUN {cmds[0]}" + (" \\" if len(cmds) > 1 else "")]
    for i, c in enumerate(cmds[1:], 1):
        out.append(f" && {c}" + (" \\" if i < len(cmds) - 1 else ""))
    return out


_PLAIN = re.compile(r"^[A-Za-z0-9_./:@+,=-]+$")


def _q(value: str, *, allow_vars: bool = False) -> str:
    """A word for ENV/LABEL: bare when plain, else double-quoted with ``"``, ``\\`` and ``$`` escaped."""
    if _PLAIN.match(value) and "$" not in value:
        return value
    if allow_vars:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _env(env: Sequence[tuple[str, str]]) -> list[str]:
    if not env:
        return []
    items = [f"{k}={_q(v)}" for k, v in env]
    return ["ENV " + " \\\n    ".join(items)]


def _copy(sources: Sequence[str], dest: str) -> str:
    if all(_PLAIN.match(s) for s in sources) and "[" not in "".join(sources):
        return f"COPY {' '.join(sources)} {dest}"
    return "COPY " + json.dumps([*sources, dest])


def shell_join(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
