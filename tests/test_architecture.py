"""The rules docs/architecture.md states, checked on the source: who may import whom, no cycles, stand-alone
payload files, one class per name, short functions. Read with ``ast`` (nothing is imported), so a function-local
import counts as an edge like any other (as go-containerregistry's depcheck counts every import)."""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "gpuship"

#: Copied into images and run by whatever Python they have: the standard library only, and for each the
#: packages it may import besides (the function runtime's own requirements, and the frameworks it probes for
#: inside ``try``).
PAYLOAD_FILES: dict[str, set[str]] = {
    "check/gpuship_check.py": set(),
    "serve/runtime.py": {"starlette", "uvicorn", "torch", "cupy", "numba"},
    "run/launcher.py": set(),
    "slim/trace_hook.py": set(),
}

#: The longest a function may be (payload files excepted; a CLI command is measured from its first statement,
#: since its signature is the option list).
MAX_FUNCTION_LINES = 80

#: Who may import whom. A unit is a top-level module or package of gpuship (``sources.*`` counted apart); the
#: value lists every unit it may import. Read top to bottom: each unit builds on units above it.
ALLOWED: dict[str, set[str]] = {
    "errors": {"redact"},
    "redact": set(),
    "streams": set(),
    "progress": set(),
    "schema": {"errors"},
    "tools": {"errors"},
    "tls": {"errors"},
    "uv": {"errors", "tools"},
    "parallel": {"errors"},
    "elf": set(),
    "rebuild": {"gpuship"},
    "sbom": {"gpuship"},
    "cache": {"errors", "streams"},
    "oci": {"cache", "errors", "progress", "streams", "tools"},
    "buildcache": {"cache", "errors", "oci"},
    "config": {"buildcache", "errors", "oci", "schema"},
    "cuda": {"config", "errors", "oci"},
    "project": {"config", "errors", "schema", "uv"},
    "registry": {"gpuship", "buildcache", "cache", "errors", "oci", "progress", "redact", "streams", "tls", "tools"},
    "transports": {"cache", "oci", "progress", "registry"},
    "inspect": {"errors", "oci", "progress", "streams"},
    "serve": {"errors", "oci"},
    "sources.debian": {"cache", "elf", "errors", "oci", "progress", "streams", "tls", "tools"},
    "sources.python": {"cache", "config", "errors", "oci", "parallel", "progress", "project", "redact"}
    | {"sources.debian"}
    | {"streams", "tls", "uv"},
    "sources": {"cache", "errors", "oci", "progress", "project", "registry", "sources.debian", "sources.python"},
    "sources.models": {"cache", "config", "errors", "oci", "progress", "sources", "streams"},
    "run": {"cache", "elf", "errors", "oci", "progress", "sources.models", "tools", "transports"},
    "check": {"cuda", "oci", "run"},
    "slim": {"cache", "cuda", "elf", "errors", "inspect", "oci", "progress", "run", "sources.debian", "streams"},
    "deploy": {"errors", "oci", "progress", "serve", "sources.models", "tools"},
    "plan": {"cache", "config", "cuda", "errors", "oci", "progress", "project", "redact", "registry", "sources"}
    | {"sources.debian"},
    "editbuild": {"cache", "errors", "oci", "rebuild", "sources"},
    "build": {"gpuship", "buildcache", "cache", "check", "cuda", "editbuild", "errors", "oci", "parallel", "plan"}
    | {"progress"}
    | {"project", "rebuild", "redact", "registry", "sbom", "serve", "slim", "sources", "sources.debian"}
    | {"sources.models"}
    | {"sources.python", "transports"},
    "dev": {"build", "cache", "errors", "oci", "plan", "progress", "project", "registry", "run", "sources"}
    | {"sources.python"},
    "dockerfile": {"build", "cache", "check", "config", "errors", "oci", "plan", "progress", "project", "redact"}
    | {"registry", "serve", "sources", "sources.debian", "sources.python", "tls", "tools"},
    "cli": {"gpuship", "build", "cache", "check", "cuda", "deploy", "dev", "dockerfile", "editbuild", "errors"}
    | {"inspect"}
    | {"oci", "plan", "progress", "project", "rebuild", "redact", "registry", "run", "slim", "sources.debian"}
    | {"transports"},
    "__main__": {"cli"},
    "gpuship": set(),  # the package itself: __version__
}


def _unit(module: str) -> str:
    parts = module.split(".")[1:]
    if not parts:
        return "gpuship"
    if parts[0] == "sources" and len(parts) > 1 and (SRC / "sources" / parts[1]).is_dir():
        return f"sources.{parts[1]}"
    return parts[0]


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = (path, ast.parse(path.read_text(), str(path)))
    return out


def _imported(module: str, path: Path, tree: ast.Module) -> list[tuple[str, ast.stmt]]:
    """Every gpuship module ``module`` imports, wherever the import statement is."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: list[tuple[str, ast.stmt]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join([*base, node.module] if node.module else base)
            if node.module:
                found.append((target, node))
            else:  # from . import x: a submodule x, or a name of the package itself
                folder = SRC.parent.joinpath(*base)
                found += [
                    (
                        f"{target}.{a.name}"
                        if (folder / f"{a.name}.py").exists() or (folder / a.name).is_dir()
                        else target,
                        node,
                    )
                    for a in node.names
                ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gpuship"):
            found.append((str(node.module), node))
        elif isinstance(node, ast.Import):
            found += [(a.name, node) for a in node.names if a.name.startswith("gpuship")]
    return found


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, (path, tree) in _modules().items():
        for target, _ in _imported(module, path, tree):
            a, b = _unit(module), _unit(target)
            if a != b:
                edges[a].add(b)
    return edges


def test_every_import_is_an_allowed_edge() -> None:
    edges = _edges()
    unknown = sorted(set(edges) - set(ALLOWED))
    assert not unknown, f"units missing from ALLOWED: {unknown}"
    bad = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets if b not in ALLOWED[a])
    assert not bad, "imports outside the allowed edges (docs/architecture.md):\n" + "\n".join(bad)


def test_the_units_form_no_cycle() -> None:
    edges = _edges()

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, trail = stack.pop()
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    return [*trail, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    cycles = [c for c in (cycle_from(u) for u in sorted(edges)) if c]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_payload_files_use_the_standard_library_only() -> None:
    for rel, allowed in PAYLOAD_FILES.items():
        tree = ast.parse((SRC / rel).read_text())
        roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        roots |= {str(n.module).split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
        relative = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
        assert not relative, f"{rel} imports relatively (lines {relative})"
        foreign = sorted(r for r in roots - {"__future__"} - allowed if r not in sys.stdlib_module_names)
        assert not foreign, f"{rel} imports {foreign}: payload files run with the standard library only"


def test_no_two_top_level_classes_share_a_name() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for module, (path, tree) in _modules().items():
        if path.relative_to(SRC).as_posix() in PAYLOAD_FILES:
            continue  # stand-alone programs: they may mirror a library class
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                where[node.name].append(module)
    shared = {name: mods for name, mods in where.items() if len(mods) > 1}
    assert not shared, f"one class per name: {shared}"


def test_no_function_is_longer_than_the_limit() -> None:
    long: dict[str, int] = {}
    for module, (path, tree) in _modules().items():
        rel = path.relative_to(SRC).as_posix()
        if rel in PAYLOAD_FILES:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body
            if rel.startswith("cli/") and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:] or body  # a command: its docstring is the --help text
            start = body[0].lineno if rel.startswith("cli/") else node.lineno
            lines = (node.end_lineno or node.lineno) - start + 1
            if lines > MAX_FUNCTION_LINES:
                long[f"{module}.{node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: split them into phases\n" + "\n".join(
        f"{name}: {n} lines" for name, n in sorted(long.items())
    )


def test_function_local_imports_say_why() -> None:
    """An import inside a function hides an edge; it is there only to keep start-up fast (or a cycle away),
    and says so in a comment on its line or the line above."""
    silent = []
    for path, tree in _modules().values():
        rel = path.relative_to(SRC).as_posix()
        if rel in PAYLOAD_FILES:
            continue
        lines = path.read_text().splitlines()
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    here, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
                    if "#" not in here and not above.startswith("#"):
                        silent.append(f"{rel}:{node.lineno}")
    assert not silent, f"{len(silent)} function-local imports without a reason:\n" + "\n".join(silent)


def test_check_sh_lints_every_python_file() -> None:
    """scripts/check.sh runs ruff format and ruff check over every folder that holds Python (bench/ went unlinted)."""
    root = SRC.parent.parent
    text = (root / "scripts" / "check.sh").read_text()
    declared = re.search(r"^PYTHON_DIRS=\((.*)\)$", text, re.MULTILINE)
    listed = set(declared.group(1).split()) if declared else set()
    holding_python = {
        top.name
        for top in root.iterdir()
        if top.is_dir() and top.name[0] != "." and top.name not in ("build", "dist") and any(top.rglob("*.py"))
    }
    assert holding_python <= listed, f"not linted by scripts/check.sh: {sorted(holding_python - listed)}"
    for step in ("ruff format --check", "ruff check"):
        line = next(line for line in text.splitlines() if step in line)
        assert line.endswith('"${PYTHON_DIRS[@]}"'), line
