"""Installing a wheel into the venv per the wheel spec: schemes of the .data directory, #!python shebangs,
entry-point launchers, symlinks, modes, a RECORD that matches what is installed, prune rules and their report."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import stat
import zipfile
from pathlib import Path

import pytest

from gpuship.errors import IntegrityError
from gpuship.oci import Entry
from gpuship.sources.python.env import install_entries
from gpuship.sources.python.interpreter import host_python
from gpuship.sources.python.prune import PruneRules
from gpuship.sources.python.wheel import install_wheel, launcher, record_hash, record_hash_of

SITE = "lib/python3.11/site-packages"


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(
    path: Path, files: dict[str, bytes], *, modes: dict[str, int] | None = None, links: dict[str, str] | None = None
) -> Path:
    modes = modes or {}
    rows = []
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | modes.get(name, 0o644)) << 16
            zf.writestr(info, data)
            rows.append(f"{name},{_hash(data)},{len(data)}")
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
        zf.writestr("demo-1.0.dist-info/RECORD", "\n".join(rows + ["demo-1.0.dist-info/RECORD,,"]) + "\n")
    return path


FILES = {
    "demo/__init__.py": b"def gui():\n    return 0\n",
    "demo/cli.py": b"class App:\n    @staticmethod\n    def run():\n        return 0\n",
    "demo/tests/test_demo.py": b"def test(): pass\n",
    "demo/_speedups.pyx": b"# cython\n",
    "demo/include/demo.h": b"int demo(void);\n",
    "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
    "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "demo-1.0.dist-info/entry_points.txt": (
        b"[console_scripts]\ndemo = demo.cli:App.run [extra]\n[gui_scripts]\ndemo-gui = demo:gui\n"
        b"[demo.plugins]\nnot-a-script = demo:gui\n"
    ),
    "demo-1.0.data/scripts/demo-py": b"#!python\nimport demo\n",
    "demo-1.0.data/scripts/tool.sh": b"#!/bin/sh\necho tool\n",
    "demo-1.0.data/purelib/demo_extra.py": b"X = 1\n",
    "demo-1.0.data/platlib/demo_native.py": b"Y = 2\n",
    "demo-1.0.data/headers/demo_api.h": b"/* api */\n",
    "demo-1.0.data/data/share/man/man1/demo.1": b".TH demo\n",
    "demo-1.0.data/data/share/demo/config.json": b"{}\n",
}


def test_install_wheel_places_every_scheme(tmp_path: Path) -> None:
    wheel = make_wheel(
        tmp_path / "demo-1.0-py3-none-any.whl",
        FILES,
        modes={"demo-1.0.data/scripts/tool.sh": 0o775, "demo/cli.py": 0o664},
        links={"demo/alias.py": "cli.py"},
    )
    with zipfile.ZipFile(wheel) as zf:
        wi = install_wheel(zf, wheel.name, venv="/opt/venv", python_minor="3.11")
        files = {f.rel: f for f in wi.files}
        assert wi.dist_info == f"{SITE}/demo-1.0.dist-info"
        assert f"{SITE}/demo/cli.py" in files and f"{SITE}/demo_extra.py" in files and f"{SITE}/demo_native.py" in files
        assert files[f"{SITE}/demo/cli.py"].entry.mode == 0o644  # group-writable bit dropped
        assert (
            files["bin/tool.sh"].entry.mode == 0o755 and files["bin/tool.sh"].entry.read() == b"#!/bin/sh\necho tool\n"
        )
        assert files["bin/demo-py"].entry.read() == b"#!/opt/venv/bin/python\nimport demo\n"
        assert "include/site/python3.11/demo/demo_api.h" in files
        assert "share/demo/config.json" in files and "share/man/man1/demo.1" in files
        assert (
            files[f"{SITE}/demo/alias.py"].entry.kind == "symlink"
            and files[f"{SITE}/demo/alias.py"].entry.target == "cli.py"
        )
        launcher_body = files["bin/demo"].entry.read().decode()
        assert launcher_body.startswith("#!/opt/venv/bin/python\n")
        assert "from demo.cli import App" in launcher_body and "sys.exit(App.run())" in launcher_body
        assert "bin/demo-gui" in files and "bin/not-a-script" not in files
        assert sorted(wi.scripts) == ["demo", "demo-gui", "demo-py", "tool.sh"]
        assert all(f.entry.path.startswith("opt/venv/") for f in wi.files)

        entries, info = install_entries(
            [wi],
            venv="/opt/venv",
            site=SITE,
            prune=PruneRules(),
            compiler=host_python("3.11"),
            workdir=tmp_path / "pyc",
        )
        paths = {e.path: e for e in entries}
        # pruned: tests, Cython sources, headers (package and venv include/), man pages; kept: data, scripts
        for gone in ("demo/tests/test_demo.py", "demo/_speedups.pyx", "demo/include/demo.h"):
            assert f"opt/venv/{SITE}/{gone}" not in paths
        assert "opt/venv/include/site/python3.11/demo/demo_api.h" not in paths
        assert "opt/venv/share/man/man1/demo.1" not in paths and "opt/venv/share/demo/config.json" in paths
        report = info["report"]["pruned"]
        assert report == {"c-headers": [2, 26], "cython-sources": [1, 9], "docs": [1, 9], "tests": [1, 17]}
        assert f"opt/venv/{SITE}/demo/__pycache__/cli.cpython-311.pyc" in paths
        assert f"opt/venv/{SITE}/__pycache__/demo_extra.cpython-311.pyc" in paths

        record = paths[f"opt/venv/{SITE}/demo-1.0.dist-info/RECORD"].read().decode()
        rows = {r[0]: r for r in csv.reader(io.StringIO(record))}
        assert rows["demo/cli.py"][1] == _hash(FILES["demo/cli.py"])  # the wheel's own hash, kept
        assert rows["../../../bin/demo-py"][1] == _hash(b"#!/opt/venv/bin/python\nimport demo\n")  # recomputed
        assert rows["../../../bin/demo"][1].startswith("sha256=")
        assert rows["demo/__pycache__/cli.cpython-311.pyc"][1:] == ["", ""]
        assert rows["demo-1.0.dist-info/RECORD"][1:] == ["", ""]
        assert "demo/tests/test_demo.py" not in rows and "../../../share/man/man1/demo.1" not in rows
        # every row is a file that is installed, and every installed file has a row
        installed = {
            e.path.removeprefix(f"opt/venv/{SITE}/")
            if e.path.startswith(f"opt/venv/{SITE}/")
            else "../../../" + e.path.removeprefix("opt/venv/")
            for e in entries
        }
        assert set(rows) == installed


def test_symlink_out_of_the_venv_is_refused(tmp_path: Path) -> None:
    wheel = make_wheel(
        tmp_path / "demo-1.0-py3-none-any.whl",
        {"demo-1.0.dist-info/METADATA": b"Name: demo\n"},
        links={"demo/evil": "../../../../../../etc/shadow"},
    )
    with zipfile.ZipFile(wheel) as zf, pytest.raises(IntegrityError, match="leaves the venv"):
        install_wheel(zf, wheel.name, venv="/opt/venv", python_minor="3.11")


def test_wheel_without_its_dist_info_is_refused(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl", {"other-2.0.dist-info/METADATA": b"Name: other\n"})
    with zipfile.ZipFile(wheel) as zf, pytest.raises(IntegrityError, match="no single .dist-info"):
        install_wheel(zf, wheel.name, venv="/opt/venv", python_minor="3.11")


def test_launcher_forms() -> None:
    body = launcher("/opt/venv/bin/python", "pkg.mod:main").decode()
    assert "from pkg.mod import main\n" in body and "sys.exit(main())" in body
    with pytest.raises(IntegrityError):
        launcher("/opt/venv/bin/python", "no_colon")


def test_record_hash_of_an_entry_streams_and_agrees(tmp_path: Path) -> None:
    big = tmp_path / "lib.so"
    big.write_bytes(bytes(range(256)) * 20000)  # several read chunks
    for entry, data in ((Entry.file("lib.so", big), big.read_bytes()), (Entry.file("a.py", b"x = 1\n"), b"x = 1\n")):
        want = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert record_hash_of(entry) == record_hash(data) == want
