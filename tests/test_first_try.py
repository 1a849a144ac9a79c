"""Real projects work on the first try (issue 17): each test builds a small project shaped like a case that cost
a new user a build-run-debug loop, and checks what gpuship now says, ships or runs — in the real Docker Engine."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from build_support import copy_example, gpuship, one_error_line


def _write(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        f = root / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return root


def _git(root: Path, *args: str, date: str = "2025-03-04T05:06:07Z") -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_DATE": date,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True, env=env).stdout


def _commit_all(root: Path, date: str = "2025-03-04T05:06:07Z") -> None:
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "init", date=date)


def _build(project: Path, out: Path, cache: Path, *args: str, env: dict[str, str] | None = None):
    return gpuship("build", str(project), "-o", f"docker-archive:{out}", *args, cache=cache, env=env)


def _run(docker, archive: Path, *args: str) -> subprocess.CompletedProcess[str]:
    with docker.loaded(archive) as ref:
        return docker.run("run", "--rm", *args, ref, check=False, timeout=300)


# -- 1. git-ignored files: said, with the include line that ships them --------------------------------------------


def test_git_ignored_generated_stubs_are_named_with_the_include_that_ships_them(
    tmp_path: Path, build_cache: Path, docker
) -> None:
    """A gRPC-style service: protoc's *_pb2.py stubs are git-ignored by design and imported at run time."""
    project = _write(
        tmp_path / "greeter",
        {
            "requirements.txt": "six==1.17.0\n",
            "gpuship.toml": 'entrypoint = ["python", "server.py"]\n',
            ".gitignore": "*_pb2.py\n*_pb2_grpc.py\n*.log\n",
            "server.py": "from proto import greeter_pb2\nprint('serving', greeter_pb2.NAME)\n",
            "proto/__init__.py": "",
            "proto/greeter.proto": 'syntax = "proto3";\n',
            "proto/greeter_pb2.py": "NAME = 'greeter'\n",
            "proto/greeter_pb2_grpc.py": "from . import greeter_pb2  # noqa\n",
            "server.log": "old log\n",
            "build/static/app.js": "console.log(1)\n",
        },
    )
    archive = tmp_path / "g.tar"
    proc = _build(project, archive, build_cache)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stderr.split())
    # counts by reason, Python files first; the defaults' own leave-outs named too
    assert (
        "app: 5 files; left out 1 by gpuship's defaults (build/); "
        "3 by .gitignore (proto/greeter_pb2.py, proto/greeter_pb2_grpc.py, server.log)"
    ) in text, text
    warning = next(line for line in proc.stderr.split("warning: ")[1:] if "may need at run time" in line)
    warning = " ".join(warning.split())
    assert "proto/greeter_pb2.py, proto/greeter_pb2_grpc.py" in warning and "server.log" not in warning, warning
    include = warning.split("ship them with ", 1)[1].split(" in gpuship.toml", 1)[0]
    assert include == 'include = ["proto/greeter_pb2.py", "proto/greeter_pb2_grpc.py"]', warning
    run = _run(docker, archive)
    assert run.returncode != 0 and "greeter_pb2" in run.stderr  # what the user met: the image lacks the stubs

    # the line the warning gave, as it is, ships them, and the warning is gone
    (project / "gpuship.toml").write_text(f'entrypoint = ["python", "server.py"]\n{include}\n')
    proc = _build(project, archive, build_cache)
    assert proc.returncode == 0, proc.stderr
    assert "may need at run time" not in proc.stderr
    run = _run(docker, archive)
    assert run.returncode == 0 and "serving greeter" in run.stdout, run.stdout + run.stderr


# -- 2. CPU torch: cuda = "cpu" takes torch's CPU build from a local wheel folder; explain tells the truth -------

STAND_IN_TORCH = """__version__ = "2.13.0+cpu"


class cuda:
    @staticmethod
    def is_available():
        return False
"""


def _wheel(folder: Path, name: str, version: str, files: dict[str, str], tag: str = "py3-none-any") -> Path:
    """A real (small) wheel: METADATA, WHEEL and RECORD as the spec wants them."""
    import base64
    import hashlib
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    members = dict(files)
    members[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    members[f"{info}/WHEEL"] = f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n"

    def digest(text: str) -> str:
        raw = hashlib.sha256(text.encode()).digest()
        return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    record = "".join(f"{p},{digest(t)},{len(t.encode())}\n" for p, t in members.items()) + f"{info}/RECORD,,\n"
    members[f"{info}/RECORD"] = record
    path = folder / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for p, t in members.items():
            zf.writestr(p, t)
    return path


def test_cpu_torch_from_a_local_wheel_folder(tmp_path: Path, build_cache: Path, docker) -> None:
    """A torch training repo on a CPU host: `cuda = "cpu"` takes torch's CPU build (+cpu) from a wheel folder
    instead of PyPI's CUDA build (6 GB, 7 minutes). A stand-in torch wheel keeps the test small; the real CPU
    wheel goes the same way in test_example_torch_status where this machine has one."""
    project = _write(
        tmp_path / "trainer",
        {
            "pyproject.toml": (
                '[project]\nname = "trainer"\nversion = "0.1"\ndependencies = ["torch>=2.6"]\n'
                '[tool.gpuship]\nentrypoint = ["python", "train.py"]\nfind-links = ["./wheels"]\n'
                '[tool.gpuship.gpu]\ncuda = "cpu"\n'
            ),
            "train.py": "import torch\nprint('torch', torch.__version__, 'cuda', torch.cuda.is_available())\n",
        },
    )
    _wheel(project / "wheels", "torch", "2.13.0+cpu", {"torch/__init__.py": STAND_IN_TORCH})
    explained = gpuship("explain", str(project), cache=build_cache)
    assert explained.returncode == 0, explained.stderr
    assert 'a CPU image (cuda = "cpu")' in explained.stdout
    assert "torch>=2.6 -> torch==2.13.0+cpu (the CPU build, from a find-links folder)" in explained.stdout
    assert "CUDA" not in explained.stdout.replace('cuda = "cpu"', "")

    archive = tmp_path / "t.tar"
    proc = _build(project, archive, build_cache, "--report", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    assert 'a CPU image (cuda = "cpu")' in " ".join(proc.stderr.split())
    report = json.loads((tmp_path / "r.json").read_text())
    dists = dict(report["platforms"][0]["python_distributions"])
    assert dists.get("torch") == "2.13.0+cpu" and not any(d.startswith(("nvidia", "cuda")) for d in dists), dists
    assert report["gpu"] is None  # no NVIDIA_* settings, no gpuship-check
    run = _run(docker, archive)
    assert run.returncode == 0 and "torch 2.13.0+cpu cuda False" in run.stdout, run.stdout + run.stderr

    # enabled = false without a CPU source: explain says what PyPI's torch is, instead of a CUDA-free promise
    (project / "pyproject.toml").write_text(
        '[project]\nname = "trainer"\nversion = "0.1"\ndependencies = ["torch>=2.6"]\n'
        "[tool.gpuship.gpu]\nenabled = false\n"
    )
    said = gpuship("explain", str(project), cache=build_cache).stdout
    assert "torch from PyPI is its CUDA build for x86_64" in said and 'set cuda = "cpu"' in said, said
    # and a +cpu pin is a CPU image with nothing claimed about CUDA
    said = gpuship("explain", "-r", "torch==2.13.0+cpu", cache=build_cache).stdout
    assert said.startswith("torch==2.13.0+cpu is torch's CPU build: a CPU image"), said


# -- 3. Dockerfile habits: refused at build time with the fix; a shell when asked for; where the app may write ----

ACTION = """#!/usr/bin/env python3
import os, sys


def writable(folder):
    try:
        with open(os.path.join(folder, "probe"), "w") as fh:
            fh.write("x")
        return "yes"
    except OSError:
        return "no"


port = sys.argv[sys.argv.index("--port") + 1]
home = os.path.expanduser("~")
print(f"action on port {port}; /tmp writable {writable('/tmp')}; {home} writable {writable(home)}; "
      f"/app writable {writable('/app')}")
"""


def test_env_shebang_entrypoint_is_refused_with_the_fix_and_shell_true_runs_it(
    tmp_path: Path, build_cache: Path, docker
) -> None:
    """A serverless action runtime as a Dockerfile user writes it: an executable `#!/usr/bin/env python3` script
    as ENTRYPOINT, the port from $PORT through a shell."""
    project = _write(
        tmp_path / "action",
        {
            "requirements.txt": "six==1.17.0\n",
            "gpuship.toml": 'entrypoint = ["./action.py", "--port", "8080"]\n',
            "action.py": ACTION,
            "tools/fetch.py": "#!/usr/local/bin/python3\nprint('fetch')\n",
        },
    )
    (project / "action.py").chmod(0o755)
    (project / "tools/fetch.py").chmod(0o755)
    archive = tmp_path / "a.tar"
    proc = _build(project, archive, build_cache)
    line = one_error_line(proc)
    assert "entrypoint ./action.py starts with #!/usr/bin/env python3, but the image has no /usr/bin/env" in line
    assert 'use entrypoint = ["python", "action.py"]' in line and "set shell = true in gpuship.toml" in line, line
    assert "locking dependencies" not in proc.stderr and not archive.exists()  # refused while planning

    # shell = true: dash as /bin/sh and coreutils' env; $PORT set at run time reaches the program
    (project / "gpuship.toml").write_text(
        'shell = true\nentrypoint = ["sh", "-c", "exec ./action.py --port $PORT"]\nenv = { PORT = "8080" }\n'
    )
    proc = _build(project, archive, build_cache)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stderr.split())
    assert "shell: dash (/bin/sh) and coreutils (/usr/bin/env, ...) added to the base" in text
    assert "tools/fetch.py (#!/usr/local/bin/python3: the image has no /usr/local/bin/python3)" in text, text
    run = _run(docker, archive, "-e", "PORT=9999")
    assert run.returncode == 0, run.stdout + run.stderr
    # the documented writable places: /tmp and the app user's home; the app folder is read-only
    assert "action on port 9999; /tmp writable yes; /home/app writable yes; /app writable no" in run.stdout


def test_interpreter_lint_knows_the_debian_base(tmp_path: Path) -> None:
    """The other Dockerfile habits, against the base's facts (no build needed): a shell-form command without a
    shell, the python:* image's interpreter path, a script without a #! line; a registry base is not judged."""
    from gpuship.errors import ConfigError
    from gpuship.project.entrypoint import BaseContents, lint_interpreters

    root = _write(tmp_path / "p", {"main.py": "print(1)\n", "run.py": "print(2)\n"})
    bare = BaseContents(frozenset(), "3.11")
    lint = lambda argv, facts=bare: lint_interpreters(  # noqa: E731
        argv, root, ["main.py", "run.py"], facts, workdir="/app", where="gpuship.toml"
    )
    for argv, said in (
        (["sh", "-c", "python main.py --port $PORT"], "entrypoint runs sh, but the image has no shell"),
        (["/usr/local/bin/python", "main.py"], "entrypoint program /usr/local/bin/python is not in the image"),
        (["./run.py"], "entrypoint ./run.py is a file without a #! line"),
        (["/bin/bash", "-c", "x"], "entrypoint program /bin/bash is not in the image"),
    ):
        try:
            lint(argv)
        except ConfigError as exc:
            assert said in exc.line(), exc.line()
        else:
            raise AssertionError(f"{argv} passed")
    assert lint(["sh", "-c", "x"], BaseContents(frozenset({"dash", "coreutils"}), "3.11")) == []
    assert lint(["python", "main.py"]) == [] and lint(["/usr/bin/python3", "main.py"]) == []
    assert lint(["sh", "-c", "x"], BaseContents(None)) == []  # a registry base: its own contents
    (root / "run.py").write_bytes(b"\x7fELF" + bytes(60))  # a compiled program needs no #! line
    (root / "run.py").chmod(0o755)
    assert lint(["./run.py"]) == []


# -- 4. requirements.txt projects: the messages speak gpuship.toml, and the entrypoint is checked while planning --


def test_requirements_project_without_entrypoint_is_told_about_gpuship_toml_before_locking(
    tmp_path: Path, build_cache: Path, docker
) -> None:
    project = _write(
        tmp_path / "runtime",
        {"requirements.txt": "six==1.17.0\n", "serve.py": "import six\nprint('served with six', six.__version__)\n"},
    )
    archive = tmp_path / "img.tar"
    proc = _build(project, archive, build_cache)
    line = one_error_line(proc)
    assert 'add entrypoint = ["python", "your_script.py"] to gpuship.toml' in line, line
    assert "[tool.gpuship]" not in line.split("(")[0]
    # refused while planning: nothing locked, nothing built, nothing written
    assert "locking dependencies" not in proc.stderr
    assert not (project / "gpuship.lock").exists() and not archive.exists()

    # the header a pyproject.toml user would write is accepted in gpuship.toml
    (project / "gpuship.toml").write_text('[tool.gpuship]\nentrypoint = ["python", "serve.py"]\n')
    proc = _build(project, archive, build_cache)
    assert proc.returncode == 0, proc.stderr
    run = _run(docker, archive)
    assert run.returncode == 0 and "served with six 1.17.0" in run.stdout, run.stdout + run.stderr


def test_gpuship_toml_refuses_another_tools_table(tmp_path: Path, build_cache: Path) -> None:
    project = _write(
        tmp_path / "p",
        {"requirements.txt": "", "main.py": "print(1)\n", "gpuship.toml": "[tool.black]\nline-length = 99\n"},
    )
    line = one_error_line(_build(project, tmp_path / "x.tar", build_cache))
    assert "gpuship.toml" in line and "[tool.black]" in line


# -- 5. a source build that fails: the compiler's own line, the log's end, where the whole log is, what to use ----


def _sdist(folder: Path, name: str, version: str, c_source: str) -> Path:
    """A real sdist with one C extension (setuptools, static metadata)."""
    import io
    import tarfile

    top = f"{name}-{version}"
    files = {
        "pyproject.toml": (
            '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
            f'[project]\nname = "{name}"\nversion = "{version}"\n'
        ),
        "setup.py": (
            "from setuptools import Extension, setup\n"
            f"setup(ext_modules=[Extension('{name}._driver', ['src/driver.c'], libraries=['cuda'])])\n"
        ),
        "src/driver.c": c_source,
        "PKG-INFO": f"Metadata-Version: 2.2\nName: {name}\nVersion: {version}\n",
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{top}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_sdist_that_fails_to_compile_shows_the_compiler_and_the_log(tmp_path: Path, build_cache: Path) -> None:
    """pycuda as a new user meets it: no wheel, a build that needs the CUDA toolkit's headers."""
    project = _write(
        tmp_path / "kernels",
        {
            "requirements.txt": "--find-links ./sdists\npycuda==2099.1\n",
            "gpuship.toml": 'entrypoint = ["python", "main.py"]\n',
            "main.py": "import pycuda.driver\n",
        },
    )
    _sdist(
        project / "sdists",
        "pycuda",
        "2099.1",
        "#include <Python.h>\n#include <cuda.h>\nPyMODINIT_FUNC PyInit__driver(void) { return NULL; }\n",
    )
    proc = _build(project, tmp_path / "k.tar", build_cache)
    line = one_error_line(proc)
    assert line.startswith("error: building pycuda-2099.1.tar.gz (no wheel was published) failed: "), line
    assert "fatal error: cuda.h: No such file or directory" in line, line  # the compiler's own words
    assert "pycuda compiles against the CUDA toolkit on the build host" in line and "cupy" in line, line
    assert len(line) < 900 and "-Wsign-compare" not in line  # not the compiler's argv
    log = Path(line.split("the whole build log: ", 1)[1].rstrip(")"))
    assert log.is_file() and "-Wsign-compare" in log.read_text()  # the whole log, argv included
    details = proc.stderr.splitlines()[:-1]
    assert any("compilation terminated." in d for d in details), proc.stderr  # the log's end, above the error
    # and pycuda counts as a GPU framework: the image would get the NVIDIA_* settings
    assert "pycuda: allows CUDA" in " ".join(proc.stderr.split()), proc.stderr


# -- 6. another Python: a relock, not a hand-deleted lock; a missing host Python said while planning -------------


def test_new_base_python_relocks_and_says_so(tmp_path: Path, cache) -> None:
    from gpuship.errors import ConfigError
    from gpuship.oci import Platform
    from gpuship.project import load_project
    from gpuship.sources.python import lock_project

    project = _write(tmp_path / "p", {"requirements.txt": "six==1.17.0\n"})
    inputs = load_project(project)
    amd64 = [Platform.parse("linux/amd64")]
    assert lock_project(inputs, amd64, "3.11", cache).python == "3.11"
    said: list[str] = []
    lock = lock_project(inputs, amd64, "3.13", cache, progress=_Said(said))
    assert (
        lock.python == "3.13"
        and "gpuship.lock was made for Python 3.11; the base has Python 3.13: locking again" in said
    )
    try:
        lock_project(inputs, amd64, "3.11", cache, locked=True)
    except ConfigError as exc:
        assert "build without --locked to lock again for Python 3.11" in exc.line(), exc.line()
    else:
        raise AssertionError("--locked relocked")


def test_missing_host_python_and_python_pins_name_the_way_out(tmp_path: Path) -> None:
    project = _write(
        tmp_path / "p",
        {"requirements.txt": "six==1.17.0\n", "main.py": "print(1)\n", "gpuship.toml": 'base = "debian-trixie"\n'},
    )
    offline = {  # a machine where uv has no Python 3.13 and cannot download one
        "UV_OFFLINE": "1",
        "UV_PYTHON_PREFERENCE": "only-managed",
        "UV_PYTHON_INSTALL_DIR": str(tmp_path / "no-pythons"),
    }
    proc = _build(project, tmp_path / "x.tar", tmp_path / "cache", env=offline)
    line = one_error_line(proc)
    assert "the base's Python is 3.13" in line and "uv could not install one" in line, line
    assert "bytecode = 'none'" in line and 'base = "debian-bookworm": 3.11' in line, line
    assert "locking dependencies" not in proc.stderr  # said while planning

    # a Python the Debian bases do not have: the registry base that has it
    (project / "gpuship.toml").write_text('entrypoint = ["python", "main.py"]\n')
    (project / "cog.yaml").write_text("build:\n  python_version: '3.12'\n")
    line = one_error_line(_build(project, tmp_path / "x.tar", tmp_path / "cache"))
    assert "cog.yaml python_version asks for Python ==3.12.* but the base image has Python 3.11" in line, line
    assert 'base = "python:3.12-slim"' in line and "debian-trixie: 3.13" in line, line


# -- 7. inspect reads the Docker Engine, counts only installed distributions, says what targets would save -------


def test_inspect_reads_the_engine_and_says_what_targets_would_save(tmp_path: Path, build_cache: Path, docker) -> None:
    """cuda-kernel-lib built without targets (its nvcc-built library keeps sm_80, sm_90, sm_100 and PTX), with
    setuptools (which vendors a dozen dist-infos), straight into the Docker Engine, where the quick start puts it."""
    project = copy_example("cuda-kernel-lib", tmp_path)
    py = project / "pyproject.toml"
    text = (
        py.read_text()
        .replace('targets = ["H100"]', "")
        .replace('["cuda-bindings>=12.9"]', '["cuda-bindings>=12.9", "setuptools"]')
    )
    py.write_text(text)
    tag = f"gpuship-test/inspect-{os.getpid()}:{int(time.time())}"
    proc = gpuship("build", str(project), "-o", f"docker:{tag}", cache=build_cache)
    assert proc.returncode == 0, proc.stderr
    try:
        said = gpuship("inspect", f"docker:{tag}", cache=build_cache)
        assert said.returncode == 0, said.stderr
        text = " ".join(said.stdout.split())
        assert "built without GPU targets: [tool.gpuship.gpu] targets (prune-archs) would drop" in text, text
        assert 'targets = ["H100"]: ' in text
        doc = json.loads(gpuship("inspect", f"docker:{tag}", "--json", cache=build_cache).stdout)
        [h100] = [s for s in doc["target_savings"] if s["targets"] == ["H100"]]
        [lib] = doc["cuda"]
        kept_h100 = lib["bytes_by_arch"]["sm_90"]
        assert h100["bytes"] >= sum(lib["bytes_by_arch"].values()) - kept_h100 - 4096 > 0, (h100, lib)
        names = {p["name"] for p in doc["python"]}
        assert "setuptools" in names and not names & {"autocommand", "inflect", "jaraco.text"}, names
        # and an engine image converts like any other source
        conv = gpuship("image", "convert", f"docker:{tag}", f"oci:{tmp_path / 'layout'}", cache=build_cache)
        assert conv.returncode == 0 and (tmp_path / "layout" / "index.json").is_file(), conv.stderr
    finally:
        docker.run("rmi", "-f", tag, check=False)
    missing = one_error_line(gpuship("inspect", f"docker:{tag}", cache=build_cache))
    assert f"the docker engine has no image {tag}" in missing, missing


# -- 8. Cog: cog.yaml read as it is; the predictor answers POST /predictions ---------------------------------------


def test_cog_predictor_builds_from_cog_yaml_and_answers_predictions(tmp_path: Path, build_cache: Path, docker) -> None:
    import httpx

    project = copy_example("cog-predictor", tmp_path)
    # what a real cog.yaml also carries: a RUN step and an image name gpuship does not take, and says so
    text = (project / "cog.yaml").read_text().replace("build:\n", 'build:\n  run:\n    - "echo hi"\n')
    (project / "cog.yaml").write_text(text + 'image: "r8.im/someone/stats"\n')
    said = gpuship("explain", str(project), cache=build_cache)
    assert said.returncode == 0, said.stderr
    assert (
        "cog.yaml: taken: 1 python_packages, python_version 3.11, gpu false, predict predict.py:Predictor"
        in said.stdout
    ), said.stdout
    assert "cog.yaml: not taken: build.run (gpuship runs no commands at build time" in said.stdout
    assert "image (--tag and --output say where the image goes)" in said.stdout

    archive = tmp_path / "cog.tar"
    proc = _build(project, archive, build_cache, "--report", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    dists = dict(json.loads((tmp_path / "r.json").read_text())["platforms"][0]["python_distributions"])
    assert "cog" in dists and "numpy" in dists  # the implicit cog dependency, and the python_packages
    ref = docker.load(archive)
    name = f"gpuship-cog-{os.getpid()}-{time.monotonic_ns()}"
    try:
        docker.run("run", "-d", "--name", name, "-p", "127.0.0.1::5000", ref)
        port = docker.run("port", name, "5000").stdout.split(":")[-1].strip()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health-check", timeout=5).json().get("status") == "READY":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            assert time.monotonic() < deadline, docker.run("logs", name, check=False).stderr
            time.sleep(1)
        answer = httpx.post(f"{url}/predictions", json={"input": {"values": "1,2,3.5", "scale": 2}}, timeout=60)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "succeeded" and body["output"] == "n=3 mean=4.333 max=7.000", body
    finally:
        docker.run("rm", "-f", name, check=False)
        docker.run("rmi", "-f", ref, check=False)


def test_cog_yaml_keys_map_to_gpuship_settings_and_gpuship_toml_wins(tmp_path: Path) -> None:
    from gpuship.plan.build_plan import load_config
    from gpuship.project import load_project

    project = _write(
        tmp_path / "cogproj",
        {
            "cog.yaml": (
                "build:\n  gpu: true\n  cuda: '12.8'\n  python_version: '3.11.4'\n  sdk_version: '0.23.1'\n"
                "  python_requirements: requirements.txt\n  system_packages: [ffmpeg]\n"
                "predict: predict.py:Predictor\ntrain: train.py:train\n"
                "environment: ['HF_HOME=/tmp/hf']\nconcurrency:\n  max: 4\n"
            ),
            "requirements.txt": "torch==2.9.1\n",
            "predict.py": "",
            "gpuship.toml": "[gpu]\ntargets = ['L4']\n",
        },
    )
    p = load_project(project)
    assert p.requirements == ("torch==2.9.1", "cog==0.23.1") and "cog.yaml" in p.sources
    assert ("cog.yaml python_version", "==3.11.*") in p.python_constraints
    cfg = load_config(project, p.tool, p.settings)
    assert cfg.entrypoint is not None and cfg.entrypoint.argv == ("python", "-m", "cog.server.http")
    assert cfg.ports == ("5000",) and cfg.system_packages == ("ffmpeg",)
    assert dict(cfg.env) == {
        "COG_PREDICT_TYPE_STUB": "predict.py:Predictor",
        "COG_TRAIN_TYPE_STUB": "train.py:train",
        "HF_HOME": "/tmp/hf",
        "COG_MAX_CONCURRENCY": "4",
    }
    assert dict(cfg.gpu) == {"enabled": True, "cuda": "12.8", "targets": ["L4"]}  # tables merge key by key
    (project / "gpuship.toml").write_text('entrypoint = ["python", "serve.py"]\n[gpu]\ncuda = "13.0"\n')
    cfg = load_config(project, p.tool, p.settings)
    assert cfg.entrypoint is not None and cfg.entrypoint.argv == ("python", "serve.py")
    assert cfg.gpu["cuda"] == "13.0"


# -- 9. what costs trust: help text, the creation time, the build output in a CI log ---------------------------------


def test_help_keeps_tool_gpuship_in_every_option() -> None:
    """Option help that names [tool.gpuship] says so in --help (Rich markup used to eat the brackets)."""
    import typer.main
    from typer.testing import CliRunner

    from gpuship.cli.main import app

    group = typer.main.get_command(app)
    checked = 0

    def walk(cmd: Any, path: list[str]) -> None:
        nonlocal checked
        if hasattr(cmd, "commands"):  # a group
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
            return
        wanted = [p.help for p in cmd.params if getattr(p, "help", None) and "[tool.gpuship" in p.help]
        if not wanted:
            return
        res = CliRunner().invoke(app, [*path, "--help"])
        assert res.exit_code == 0, res.output
        text = "".join(res.output.split())  # help is wrapped (and hyphenated) at 80 columns
        for h in wanted:
            assert "".join(h.split()) in text, (path, h)
            checked += 1

    walk(group, [])
    assert checked >= 3  # build --platform, build --base, dev --base, ...


def test_created_is_the_last_commit_and_output_reads_at_80_columns(tmp_path: Path, build_cache: Path, docker) -> None:
    project = _write(
        tmp_path / "svc",
        {
            "pyproject.toml": '[project]\nname = "svc"\nversion = "1.0"\ndependencies = ["six==1.17.0"]\n',
            "main.py": "print('svc up')\n",
        },
    )
    _commit_all(project, date="2025-03-04T05:06:07Z")
    archive = tmp_path / "svc.tar"
    proc = _build(project, archive, build_cache, "--report", str(tmp_path / "r.json"), env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    with docker.loaded(archive) as ref:
        created = docker.run("image", "inspect", "-f", "{{.Created}}", ref).stdout.strip()
        label = docker.run(
            "image", "inspect", "-f", '{{index .Config.Labels "org.opencontainers.image.created"}}', ref
        ).stdout.strip()
    assert created.startswith("2025-03-04T05:06:07") and label == "2025-03-04T05:06:07Z", (created, label)

    # a CI log: not a terminal, 80 columns. Every line fits; layer names, digests and sizes are whole; a total
    log = proc.stderr.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in log), "\n".join(x for x in log if len(x.rstrip()) > 80)
    assert "console.py" not in proc.stderr
    assert f"docker-archive:{archive}" in "".join(log), proc.stderr  # the header names the output, not a guess
    report = json.loads((tmp_path / "r.json").read_text())
    rows = report["platforms"][0]["layers"]
    groups = {r["group"] for r in rows}
    table = [line for line in log if line[:1].strip() and line.split()[0] in groups]  # log lines are indented
    assert len(table) == len(rows), proc.stderr
    for line, row in zip(table, rows, strict=True):
        assert row["digest"][7:19] in line and "…" not in line.split()[1] and "B " in line, line
    total = next(line for line in log if line.startswith("total"))
    assert f"{len(rows)} layers" in total and " new" in total
    assert "created 2025-03-04T05:06:07Z (the project's last commit" in proc.stderr

    # SOURCE_DATE_EPOCH still wins; without git the time is 0
    out = tmp_path / "layout"
    proc = gpuship("build", str(project), "-o", f"oci:{out}", cache=build_cache, env={"SOURCE_DATE_EPOCH": "86400"})
    assert proc.returncode == 0, proc.stderr
    assert _layout_created(out) == "1970-01-02T00:00:00Z"
    subprocess.run(["rm", "-rf", str(project / ".git")], check=True)
    out2 = tmp_path / "layout2"
    proc = gpuship("build", str(project), "-o", f"oci:{out2}", cache=build_cache)
    assert proc.returncode == 0, proc.stderr
    assert _layout_created(out2) == "1970-01-01T00:00:00Z"


def _layout_created(layout: Path) -> str:
    index = json.loads((layout / "index.json").read_text())
    blob = lambda d: json.loads((layout / "blobs" / "sha256" / d.split(":")[1]).read_text())  # noqa: E731
    manifest = blob(index["manifests"][0]["digest"])
    return str(blob(manifest["config"]["digest"])["created"])


class _Said:
    """A :class:`gpuship.progress.Progress` that keeps the steps."""

    def __init__(self, said: list[str]) -> None:
        self.said = said

    def step(self, message: str) -> None:
        self.said.append(message)

    def transfer(self, key: str, done: int, total: int | None = None, status: str | None = None) -> None:
        pass

    def clear(self) -> None:
        pass
