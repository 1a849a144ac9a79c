"""``gpuship inspect`` on image files gpuship wrote: --json, the Rich tables, --html, and a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuship.cache import Cache
from gpuship.cli.main import app
from gpuship.oci import Entry, append_layers, build_layer, empty_image
from gpuship.oci.archive import write_oci_archive
from gpuship.oci.layout import write_oci_layout

LIB = Path(__file__).parent / "data" / "fatbin" / "libmultiarch.so"


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("GPUSHIP_CACHE", str(tmp_path / "cache"))
    cache = Cache()
    blob = bytes(range(256)) * 800
    img = append_layers(
        empty_image("linux/amd64"),
        [
            build_layer(
                [Entry.file("usr/lib/libk.so", LIB, mode=0o755), Entry.file("srv/a.bin", blob)], cache, comment="base"
            ),
            build_layer([Entry.file("srv/b.bin", blob), Entry.file("etc/motd", b"hi\n")], cache, comment="top"),
        ],
    )
    return {
        "archive": write_oci_archive(img, tmp_path / "img.tar"),
        "layout": write_oci_layout(img, tmp_path / "layout"),
    }


def test_json(files: dict[str, Path]) -> None:
    res = CliRunner().invoke(app, ["inspect", f"oci-archive:{files['archive']}", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [layer["comment"] for layer in data["layers"]] == ["base", "top"]
    assert data["cuda"][0]["path"] == "/usr/lib/libk.so"
    assert data["cuda"][0]["sass"] == ["sm_80", "sm_90", "sm_100"] and data["cuda"][0]["ptx"] == ["compute_100"]
    dup = data["duplicates"][0]
    assert [c["path"] for c in dup["copies"]] == ["/srv/a.bin", "/srv/b.bin"] and dup["wasted"] == 256 * 800


def test_tables_and_html(files: dict[str, Path], tmp_path: Path) -> None:
    page = tmp_path / "out" / "report.html"
    page.parent.mkdir()
    res = CliRunner().invoke(app, ["inspect", f"oci:{files['layout']}", "--html", str(page), "--top", "5"])
    assert res.exit_code == 0, res.output
    for text in (
        "Layers",
        "CUDA libraries",
        "/usr/lib/libk.so",
        "sm_80",
        "sm_100",
        "compute_100",
        "Largest files",
        "Stored more than once",
    ):
        assert text in res.stdout, res.stdout
    assert page.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in page.parent.iterdir()] == ["report.html"]  # no temp file left behind


def test_missing_image_is_one_clear_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["inspect", f"oci-archive:{tmp_path / 'nope.tar'}"])
    assert res.exit_code == 2
    assert "error:" in res.output and "nope.tar" in res.output and "Traceback" not in res.output


def test_help_is_complete() -> None:
    res = CliRunner().invoke(app, ["inspect", "--help"])
    assert res.exit_code == 0
    for opt in ("--json", "--html", "--platform", "--top", "SASS", "PTX"):
        assert opt in res.output
