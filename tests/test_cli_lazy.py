"""``gpuship VERB`` imports only VERB's module: the map from verbs to modules is checked against the modules."""

from __future__ import annotations

import os
import subprocess
import sys

from gpuship.cli.app import COMMANDS, MODULES, verb_module


def test_every_command_is_mapped_to_the_module_that_adds_it() -> None:
    from gpuship.cli.main import app  # every module registered

    found = {(c.name or c.callback.__name__): c.callback.__module__ for c in app.registered_commands}  # type: ignore[union-attr]
    for g in app.registered_groups:
        cmds = g.typer_instance.registered_commands  # type: ignore[union-attr]
        found[g.name] = (cmds[0].callback.__module__ if cmds else "") or ""  # type: ignore[assignment,union-attr]
    assert {k: v.rsplit(".", 1)[-1] for k, v in found.items()} == COMMANDS
    assert set(COMMANDS.values()) == set(MODULES)


def test_a_verb_imports_only_its_module() -> None:
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print(sorted(m for m in sys.modules if m.startswith('gpuship.cli.'))))\n"
        "sys.argv = ['gpuship', '-q', 'cache', '--help']\n"
        "from gpuship.cli.app import main\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "info" in proc.stdout  # cache's own help
    loaded = proc.stdout.strip().splitlines()[-1]
    assert (
        "'gpuship.cli.cache'" in loaded and "'gpuship.cli.build'" not in loaded and "'gpuship.cli.deploy'" not in loaded
    )
    assert verb_module(["-v", "build", "."]) == "build" and verb_module(["--help"]) is None


def test_the_fast_build_path_knows_the_build_command_options() -> None:
    """The no-change fast path (gpuship.cli.entry) reads the options of `gpuship build` it knows and hands the
    rest to the full CLI; every option of the command is one or the other."""
    import typer

    from gpuship.cli.entry import FLAG_OPTIONS, VALUE_OPTIONS, parse_build
    from gpuship.cli.main import app

    cmd = typer.main.get_command(app).commands["build"]  # type: ignore[attr-defined]
    names = {n for p in cmd.params if p.param_type_name == "option" for n in p.opts}
    assert set(VALUE_OPTIONS) | set(FLAG_OPTIONS) <= names
    # registry settings, and the build cache's options (a build with them runs in full)
    assert names - set(VALUE_OPTIONS) - set(FLAG_OPTIONS) == {
        "--insecure",
        "--ca-file",
        "--cache",
        "--cache-mode",
        "--no-cache",
    }

    got = parse_build(["-q", "build", "proj", "-o", "docker:x", "--platform=linux/amd64", "--locked", "-t", "x:1"])
    assert got is not None and got.quiet and got.locked and str(got.path) == "proj"
    assert got.values == {"output": "docker:x", "tag": "x:1"} and got.lists["platform"] == ["linux/amd64"]
    for other in (
        ["build", "--help"],
        ["build", "--insecure"],
        ["build", "--no-cache"],
        ["build", "--cache", "registry:r/x:c"],
        ["run", "x"],
        ["build", "a", "b"],
        ["build", "-o"],
    ):
        assert parse_build(other) is None


def test_the_command_caps_malloc_arenas_unless_the_environment_says() -> None:
    """glibc takes the cap (a fresh interpreter, as the command runs); MALLOC_ARENA_MAX set by the user wins."""
    code = "from gpuship.cli.entry import fewer_malloc_arenas as f; print(f())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    took = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert took.stdout.strip() == "True"
    left = subprocess.run(
        [sys.executable, "-c", code], env=env | {"MALLOC_ARENA_MAX": "4"}, capture_output=True, text=True, check=True
    )
    assert left.stdout.strip() == "False"
