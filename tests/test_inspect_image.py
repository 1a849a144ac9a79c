"""``inspect_image`` on images built here: per-layer, per-distribution and per-package sizes add up, files stored
twice are found, CUDA libraries show their architectures, and the JSON and HTML outputs carry it all."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.inspect import inspect_image, render_html, write_html
from gpuship.oci import Entry, append_layers, build_layer, empty_image
from gpuship.oci.image import Image

FIXTURES = Path(__file__).parent / "data" / "fatbin"
SITE = "opt/venv/lib/python3.11/site-packages"
BIG = os.urandom(300_000)  # incompressible, so compressed shares are easy to reason about


def record(files: dict[str, bytes]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for path, data in files.items():
        w.writerow([path, "", len(data)])
    return buf.getvalue().encode()


def dist(name: str, version: str, files: dict[str, bytes]) -> list[Entry]:
    """A distribution as an installer leaves it: its files, and a dist-info whose RECORD lists them all."""
    info = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    listed = {**files, f"{info}/METADATA": meta}
    rec = record({**listed, f"{info}/RECORD": b""})
    entries = [
        Entry.file(os.path.normpath(f"{SITE}/{p}"), d, mode=0o755 if p.endswith(".so") else 0o644)
        for p, d in listed.items()
    ]
    return entries + [Entry.file(f"{SITE}/{info}/RECORD", rec)]


def debian_layer() -> list[Entry]:
    status = (
        b"Package: libfoo1\nStatus: install ok installed\nVersion: 1.2-3\nArchitecture: amd64\nInstalled-Size: 300\n\n"
        b"Package: gone\nStatus: deinstall ok config-files\nVersion: 0.1\n\n"
        b"Package: base-files\nStatus: install ok installed\nVersion: 12.4\nInstalled-Size: 4\n"
    )
    return [
        Entry.symlink("lib", "usr/lib"),  # merged /usr: dpkg lists /lib/..., the bytes live in /usr/lib/...
        Entry.file("usr/lib/x86_64-linux-gnu/libfoo.so.1", b"\x00" * 200_000),
        Entry.file("etc/os-release", b"ID=debian\n"),
        Entry.file("var/lib/dpkg/status", status),
        Entry.file(
            "var/lib/dpkg/info/libfoo1:amd64.list",
            b"/.\n/lib\n/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libfoo.so.1\n",
        ),
        Entry.file("var/lib/dpkg/info/base-files.list", b"/.\n/etc\n/etc/os-release\n"),
        Entry.file("tmp/scratch.bin", b"y" * 1000),
    ]


@pytest.fixture
def image(cache: Cache) -> Image:
    lib = (FIXTURES / "libmultiarch.so").read_bytes()
    venv = dist(
        "foo",
        "1.0",
        {
            "foo/__init__.py": b"x = 1\n",
            "foo/big.bin": BIG,
            "foo/libk.so": lib,
            "../../../bin/foo": b"#!/opt/venv/bin/python\n",
        },
    )
    venv += dist("bar", "2.0", {"bar.py": b"print('bar')\n" * 100})
    top = [
        Entry.file("app/data/big.bin", BIG),  # the same bytes again, in another layer
        Entry.file("app/data/copy.bin", BIG),  # ... and twice in this one (stored once: a hard link)
        Entry.file("app/main.py", b"import foo\n"),
        Entry.whiteout("tmp/scratch.bin"),
    ]
    img = empty_image("linux/amd64")
    return append_layers(
        img,
        [
            build_layer(debian_layer(), cache, comment="debian"),
            build_layer(venv, cache, comment="python"),
            build_layer(top, cache, comment="app"),
        ],
    )


def test_report_sizes_add_up(image: Image) -> None:
    r = inspect_image(image)
    assert [layer.comment for layer in r.layers] == ["debian", "python", "app"]
    assert r.size == image.size and r.uncompressed_size == sum(layer.uncompressed_size for layer in image.layers)
    for layer in r.layers:
        assert layer.size == image.layers[layer.index].size
    # python distributions: every file their RECORD lists, resolved from site-packages (scripts via ../../../bin)
    py = {p.name: p for p in r.python}
    assert set(py) == {"foo", "bar"}
    foo_bytes = (
        len(BIG) + len((FIXTURES / "libmultiarch.so").read_bytes()) + len(b"x = 1\n") + len(b"#!/opt/venv/bin/python\n")
    )
    foo_meta = len(b"Metadata-Version: 2.1\nName: foo\nVersion: 1.0\n")
    foo_record = file_sizes(image)[f"{SITE}/foo-1.0.dist-info/RECORD"]
    assert py["foo"].files == 6 and py["foo"].size == foo_bytes + foo_meta + foo_record
    assert py["foo"].version == "1.0" and py["foo"].layers == (1,)
    # the python layer holds nothing but the two distributions: their compressed shares add up to the layer
    assert py["foo"].compressed + py["bar"].compressed <= r.layers[1].size
    assert r.layers[1].size - (py["foo"].compressed + py["bar"].compressed) < 10  # integer rounding only
    assert py["foo"].compressed > len(BIG) * 0.9  # random bytes do not compress
    # debian: owned through the merged-/usr symlink; removed packages are not listed
    deb = {p.name: p for p in r.debian}
    assert set(deb) == {"libfoo1", "base-files"}
    assert deb["libfoo1"].files == 1 and deb["libfoo1"].size == 200_000 and deb["libfoo1"].declared_size == 300 * 1024
    assert deb["base-files"].size == len(b"ID=debian\n")
    # owned + models + unowned == everything the final image holds (app/data/*.bin are model files by name)
    owned = sum(p.size for p in r.python) + sum(p.size for p in r.debian)
    assert [(m.name, m.files, m.size) for m in r.models] == [("/app/data", 2, len(BIG))]
    assert owned + sum(m.size for m in r.models) + r.unowned_bytes == r.final_bytes
    # the whiteout removed tmp/scratch.bin from the final view; its bytes are still stored in layer 0
    assert r.shadowed_bytes == 1000
    assert all(f.path != "tmp/scratch.bin" for f in r.largest)
    assert r.largest[0].size == len(BIG)


def file_sizes(image: Image) -> dict[str, int]:
    return {e.path: e.size for layer in image.layers for e, _ in layer.entries() if e.kind == "file"}


def test_duplicates_within_and_across_layers(image: Image) -> None:
    r = inspect_image(image)
    big = [d for d in r.duplicates if d.size == len(BIG)]
    assert len(big) == 1
    # foo/big.bin (layer 1) and app/data/big.bin (layer 2) are stored twice; copy.bin is a hard link in layer 2
    assert big[0].copies == ((1, f"{SITE}/foo/big.bin"), (2, "app/data/big.bin"))
    assert big[0].wasted == len(BIG)
    assert r.duplicate_bytes >= len(BIG)


def test_cuda_library_archs(image: Image) -> None:
    r = inspect_image(image)
    assert [c.path for c in r.cuda] == [f"{SITE}/foo/libk.so"]
    lib = r.cuda[0].library
    assert lib is not None and lib.sass == ["sm_80", "sm_90", "sm_100"] and lib.ptx == ["compute_100"]
    j = r.to_json()["cuda"][0]
    assert j["sass"] == ["sm_80", "sm_90", "sm_100"] and j["ptx"] == ["compute_100"] and j["layer"] == 1
    assert set(j["bytes_by_arch"]) == {"sm_80", "sm_90", "sm_100", "compute_100"}


def test_json_round_trip(image: Image) -> None:
    r = inspect_image(image)
    data = json.loads(json.dumps(r.to_json()))
    assert data["digest"] == image.digest
    assert [layer["comment"] for layer in data["layers"]] == ["debian", "python", "app"]
    assert {p["name"] for p in data["python"]} == {"foo", "bar"}
    assert sum(b["size"] for b in data["blocks"]) == data["final_bytes"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM, "chromium is not installed (scripts/bootstrap.sh installs it)"
    profile = tempfile.mkdtemp(prefix="gpuship-chromium-")
    try:
        return subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_html_renders_in_chromium(image: Image, tmp_path: Path) -> None:
    r = inspect_image(image)
    page = write_html(r, tmp_path / "report.html", title="test image")
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text  # self-contained
    assert "<link" not in text and 'src="' not in text
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri()).stdout
    assert 'data-rendered="yes"' in dom, dom[-2000:]
    blocks = [b for b in r.blocks if b[3] > 0]
    assert dom.count('class="block"') == len(blocks) > 3  # one treemap rect per block, drawn by the script
    assert dom.count('class="layer-rect"') == len({b[0] for b in blocks})
    assert "sm_90</span>" in dom and "compute_100</span>" in dom  # the CUDA table
    rows = len(r.layers) + len(r.cuda) + len(r.models) + len(r.python) + len(r.debian)
    assert dom.count('<tr class="row">') == rows + len(r.largest) + len(r.duplicates)
    shot = tmp_path / "report.png"
    chromium("--window-size=1280,900", f"--screenshot={shot}", page.as_uri())
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_html_escapes_what_it_embeds(cache: Cache) -> None:
    img = append_layers(empty_image(), [build_layer([Entry.file("x/</script><b>.txt", b"hi")], cache)])
    page = render_html(inspect_image(img))
    assert "</script><b>" not in page
    assert page.count("</script>") == 2


def test_real_wheel_in_a_venv_layer(cache: Cache, tmp_path: Path) -> None:
    """A real CUDA wheel installed by uv: its RECORD owns its files, and its library shows its architectures."""
    import sys

    sys.path.insert(0, str(FIXTURES))
    from cudatools import NVJPEG_CU13, install_wheel

    from gpuship.oci import layer_from_dir

    spec, member = NVJPEG_CU13
    site = install_wheel(spec, tmp_path / "site")
    layer = layer_from_dir(site, cache, prefix=SITE, comment="nvjpeg")
    r = inspect_image(append_layers(empty_image(), [layer]))
    (py,) = r.python
    assert py.name == "nvidia_nvjpeg" and py.version == spec.split("==")[1]
    on_disk = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    assert py.size + r.unowned_bytes == r.final_bytes == on_disk
    assert py.size >= 0.99 * on_disk  # the RECORD lists (nearly) everything the installer wrote
    assert py.compressed <= layer.size and py.compressed >= 0.98 * layer.size
    (lib,) = r.cuda
    assert lib.path == f"{SITE}/{member}"
    assert lib.library is not None and "sm_90" in lib.library.sass and lib.library.ptx
