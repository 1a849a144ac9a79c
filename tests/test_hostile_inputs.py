"""Hostile and malformed inputs (issue 16): each gets one clear line, and nothing is deleted, leaked or blocked.

Every input is crafted here, as an attacker or a careless user would make it: layers and layouts by hand
(tarfile, JSON), projects as files on disk. Nothing is mocked.
"""

from __future__ import annotations

import base64
import fcntl
import gzip
import hashlib
import http.server
import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from build_support import gpuship, one_error_line
from gpuship.cache import Cache
from gpuship.config import GpushipConfig
from gpuship.dockerfile.spec import dockerignore_lines
from gpuship.errors import ConfigError, GpushipError, IntegrityError
from gpuship.oci import Entry, append_layers, build_layer, cached_layer, empty_image
from gpuship.oci.layout import write_oci_layout
from gpuship.oci.media import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from gpuship.oci.tarball import MAX_EPOCH, created_timestamp
from gpuship.oci.unpack import apply_layers, unpack
from gpuship.parallel import build_jobs
from gpuship.plan.build_plan import load_config
from gpuship.project import load_project
from gpuship.sources.app import select_app_files
from gpuship.sources.python.credentials import IndexCredentials
from gpuship.sources.python.download import fetch
from gpuship.sources.python.wheel import open_wheel
from gpuship.transports import read_image
from test_oci_support import layer_from_tar, member, raw_tar
from test_serve_runtime import ROOT, bench


# -- 1. whiteouts that name the directory itself or its parent --------------------------------------------------
@pytest.mark.parametrize("name", [".wh...", ".wh..", ".wh.", "sub/.wh...", "sub/.wh."])
def test_a_whiteout_of_dot_dot_deletes_nothing_outside_the_root(cache: Cache, tmp_path: Path, name: str) -> None:
    outside = tmp_path / "user-files"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    root = outside / "rootfs"
    root.mkdir()
    (root / "sub").mkdir()
    (root / "sub" / "kept").write_text("below")
    hostile = layer_from_tar(raw_tar([member(name)]), cache)
    with pytest.raises(IntegrityError, match="not a name inside its directory"):
        apply_layers([hostile], root)
    assert (outside / "precious.txt").read_text() == "keep me"
    assert (root / "sub" / "kept").read_text() == "below"


def test_unpack_refuses_a_parent_whiteout_and_leaves_nothing(cache: Cache, tmp_path: Path) -> None:
    base = build_layer([Entry.file("etc/a", "A")], cache)
    hostile = layer_from_tar(raw_tar([member("etc/.wh..")]), cache)
    dest = tmp_path / "out" / "root"
    with pytest.raises(IntegrityError):
        unpack([base, hostile], dest)
    assert not dest.exists() and list((tmp_path / "out").iterdir()) == []


def test_whiteout_metadata_names_hide_nothing(cache: Cache, tmp_path: Path) -> None:
    base = build_layer([Entry.file("etc/a", "A"), Entry.file("etc/plnk", "P")], cache)
    top = layer_from_tar(raw_tar([member("etc/.wh..wh.plnk"), member("etc/b", data=b"B")]), cache)
    unpack([base, top], tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r" / "etc").iterdir()) == ["a", "b", "plnk"]


# -- 4. and 8.: every pyproject / [tool.gpuship] field is checked for its shape -------------------------------------
def _plan_inputs(root: Path) -> GpushipConfig:
    """What `gpuship build` reads before anything is downloaded: the project inputs and [tool.gpuship]."""
    project = load_project(root)
    return load_config(root, project.tool)


def _project(tmp_path: Path, text: str | bytes) -> Path:
    root = tmp_path / "proj"
    root.mkdir(exist_ok=True)
    (root / "pyproject.toml").write_bytes(text.encode() if isinstance(text, str) else text)
    return root


HEAD = '[project]\nname = "x"\nversion = "1"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HEAD + 'dependencies = "numpy"\n', "[project] dependencies must be a list of strings, not a string"),
        (
            HEAD + "dependencies = [1, 2]\n",
            "[project] dependencies must be a list of strings, but one item is an integer",
        ),
        (HEAD + 'optional-dependencies = { gpu = "cupy" }\n', "[project] optional-dependencies.gpu must be a list"),
        (HEAD + "requires-python = 3.11\n", "[project] requires-python must be a string, not a float"),
        (HEAD + 'scripts = { app = ["x"] }\n', "[project] scripts.app must be a string, not a list"),
        (HEAD + 'authors = "me"\n', "[project] authors must be a list of tables, not a string"),
        ('project = "x"\n', "[project] must be a table, not a string"),
        (HEAD + '[tool]\ngpuship = "yes"\n', "[tool.gpuship] must be a table, not a string"),
        ('tool = ["gpuship"]\n' + HEAD, "[tool] must be a table, not a list"),
        (HEAD + "[tool.uv]\npackage = 'yes'\n", "[tool.uv] package must be true or false, not a string"),
        (
            HEAD + '[tool.gpuship]\nenv = { A = { B = "c" } }\n',
            "[tool.gpuship] env.A must be a string or a number, not a table",
        ),
        (HEAD + '[tool.gpuship]\nports = ["http", -1, 99999]\n', "[tool.gpuship] ports: 'http' is not a port"),
        (HEAD + "[tool.gpuship]\nports = [-1]\n", "[tool.gpuship] ports: -1 is not a port"),
        (HEAD + "[tool.gpuship]\nports = [99999]\n", "[tool.gpuship] ports: 99999 is not a port"),
        (HEAD + '[tool.gpuship]\nuser = "root; rm -rf /"\n', "is not a user"),
        (HEAD + '[tool.gpuship]\nuser = "1:2:3"\n', "is not a user"),
        (HEAD + '[tool.gpuship]\nuser = "99999999999"\n', "is not a user"),
        (HEAD + "[tool.gpuship]\nuser = { name = 'app' }\n", "[tool.gpuship] user must be a string, not a table"),
        (HEAD + "[tool.gpuship]\nfind-libdeps = 'no'\n", "[tool.gpuship] find-libdeps must be true or false"),
        (HEAD + "[tool.gpuship]\ncmd = [8000]\n", "[tool.gpuship] cmd must be a list of strings"),
        (HEAD + "[tool.gpuship]\nbase = ['debian-bookworm']\n", "[tool.gpuship] base must be a string, not a list"),
        (HEAD + "[tool.gpuship]\npython = 3.10\n", "[tool.gpuship] python must be a string, not a float"),
        (HEAD + "[tool.gpuship]\nlabels = { a = [1] }\n", "[tool.gpuship] labels.a must be a string or a number"),
        (HEAD + "[tool.gpuship]\nentrypoint = 'python \"unclosed'\n", "[tool.gpuship] entrypoint"),
        (HEAD + "[tool.gpuship]\nworkdir = '/app/../etc'\n", "[tool.gpuship] workdir must be an absolute path"),
        (HEAD + "[tool.gpuship.debian]\nmirror = 5\n", "[tool.gpuship.debian] mirror must be a string"),
        (
            HEAD + "dynamic = ['dependencies']\n[tool.setuptools]\ndynamic = 'x'\n",
            "[tool.setuptools.dynamic] must be a table",
        ),
        (HEAD.encode() + b'description = "caf\xe9"\n', "pyproject.toml is not UTF-8 text (byte 0xe9"),
        (HEAD + "x = " + "[" * 3000 + "]" * 3000 + "\n", "pyproject.toml"),
    ],
)
def test_a_wrongly_shaped_field_is_one_line_naming_it(tmp_path: Path, text: str | bytes, message: str) -> None:
    root = _project(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        _plan_inputs(root)
    line = info.value.line()
    assert message in line and "\n" not in line, line


def test_a_string_of_dependencies_never_becomes_one_package_per_letter(tmp_path: Path) -> None:
    """The dependency-confusion hole: `dependencies = "numpy"` was read as n, u, m, p, y."""
    root = _project(tmp_path, HEAD + 'dependencies = "numpy"\n')
    proc = gpuship("build", str(root), "--output", f"oci:{tmp_path / 'out'}", cache=tmp_path / "cache")
    line = one_error_line(proc)
    assert "[project] dependencies must be a list of strings, not a string" in line
    assert 'e.g. dependencies = ["numpy"]' in line
    assert not (tmp_path / "out").exists()


def test_good_values_still_pass(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        HEAD
        + 'dependencies = ["numpy"]\n[tool.gpuship]\nports = [8000, "9000/udp"]\nuser = 1000\n'
        + 'env = { WORKERS = 4, HF_HOME = "/data" }\nentrypoint = "python main.py"\n',
    )
    cfg = _plan_inputs(root)
    assert cfg.ports == ("8000", "9000/udp") and cfg.user == "1000"
    assert dict(cfg.env) == {"WORKERS": "4", "HF_HOME": "/data"}


# -- 8. and 9.: environment values ------------------------------------------------------------------------------
def test_a_bad_gpuship_jobs_is_one_line_before_any_work(tmp_path: Path) -> None:
    project = _project(tmp_path, HEAD + "dependencies = []\n")
    out = tmp_path / "out"
    proc = gpuship("build", str(project), "--output", f"oci:{out}", cache=tmp_path / "c", env={"GPUSHIP_JOBS": "abc"})
    assert "GPUSHIP_JOBS='abc' is not a number of jobs" in one_error_line(proc)
    assert "locking" not in proc.stderr and not out.exists()


@pytest.mark.parametrize(
    ("name", "value"),
    [("GPUSHIP_JOBS", "0"), ("GPUSHIP_JOBS", "-2"), ("SOURCE_DATE_EPOCH", "9" * 40), ("SOURCE_DATE_EPOCH", "-5")],
)
def test_bad_environment_values_are_config_errors(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"^{name}="):
        build_jobs() if name == "GPUSHIP_JOBS" else created_timestamp()


def test_the_largest_epoch_still_writes_a_layer(monkeypatch: pytest.MonkeyPatch, cache: Cache) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(MAX_EPOCH))
    assert created_timestamp() == "9999-12-31T23:59:59Z"
    layer = build_layer([Entry.file("a", "x")], cache)
    assert [e.path for e, _ in layer.entries()] == ["a"]


def test_prune_with_a_negative_age_removes_nothing(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    digest = cache.put_bytes(b"keep me")
    for bad in (-1.0, float("nan"), float("-inf")):
        with pytest.raises(GpushipError, match="--older-than must be a number of days, 0 or more"):
            cache.prune(bad)
    line = one_error_line(gpuship("cache", "prune", "--older-than", "-1", cache=cache.root))
    assert "--older-than must be a number of days, 0 or more" in line
    assert cache.has(digest)


# -- 9. prune while another command uses the cache; what killed commands leave in tmp/ ---------------------------
def _big_layout(tmp_path: Path, cache: Cache, mb: int = 48) -> Path:
    """An OCI layout whose one layer takes a `gpuship image convert --compression gzip` a few seconds."""
    layer = build_layer([Entry.file("data.bin", os.urandom(mb << 20))], cache, compression="zstd")
    return write_oci_layout(append_layers(empty_image("linux/amd64"), [layer]), tmp_path / "src")


def _convert(src: Path, dest: Path, cache_root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "GPUSHIP_CACHE": str(cache_root)}
    argv = [sys.executable, "-m", "gpuship", "image", "convert", "--compression", "gzip", f"oci:{src}", f"oci:{dest}"]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_until_in_use(cache: Cache, proc: subprocess.Popen[str]) -> None:
    """Until ``proc`` holds the cache's in-use lock (polled with a try-lock that is let go at once)."""
    deadline = time.monotonic() + 120
    fd = os.open(cache.root / "locks" / "in-use.lock", os.O_RDWR | os.O_CREAT)
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                return
            time.sleep(0.02)
    finally:
        os.close(fd)
    raise AssertionError(f"the command never held the cache: {proc.communicate()}")


def test_prune_during_a_running_command_removes_nothing_it_needs(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    src = _big_layout(tmp_path, cache)
    before = sorted(p.name for p in (cache.root / "blobs" / "sha256").iterdir())
    proc = _convert(src, tmp_path / "dst", cache.root)
    _wait_until_in_use(cache, proc)
    with pytest.raises(GpushipError, match="is in use by another gpuship command"):
        cache.prune()
    assert set(before) <= {p.name for p in (cache.root / "blobs" / "sha256").iterdir()}
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert read_image(f"oci:{tmp_path / 'dst'}", cache=Cache(tmp_path / "fresh")).layers[0].compression == "gzip"
    removed, _ = cache.prune()  # the command has finished: now it may
    assert removed >= len(before) and not any((cache.root / "blobs" / "sha256").iterdir())


def test_what_a_killed_command_left_in_tmp_is_cleaned_by_the_next(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    src = _big_layout(tmp_path, cache)
    proc = _convert(src, tmp_path / "dst", cache.root)
    _wait_until_in_use(cache, proc)
    deadline = time.monotonic() + 120
    while not any((cache.root / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.communicate()
    left = list((cache.root / "tmp").iterdir())
    assert left, "the command was killed before it wrote anything"
    time.sleep(2.1)  # the next command leaves alone what is younger than 2 s (it may be another's, just made)
    assert gpuship("cache", "info", cache=cache.root).returncode == 0
    assert list((cache.root / "tmp").iterdir()) == []
    (cache.root / "tmp" / "blob-left-by-a-kill").write_bytes(b"partial")
    os.utime(cache.root / "tmp" / "blob-left-by-a-kill", (1, 1))
    with cache.blob_writer() as writing:  # one still being written is not a leftover
        writing.write(b"in flight")
        in_flight = [p for p in (cache.root / "tmp").iterdir() if p.name != "blob-left-by-a-kill"]
        cache.prune()
        assert list((cache.root / "tmp").iterdir()) == in_flight and len(in_flight) == 1
    assert cache.has(writing.digest)


# -- 8. wrongly shaped image JSON; a blob that is not the one its descriptor names; paths too deep -------------------
def _blob(root: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def crafted_layout(
    root: Path,
    *,
    config: Callable[[dict], object] = lambda c: c,
    manifest: Callable[[dict], object] = lambda m: m,
    index: Callable[[dict], object] = lambda i: i,
    tar: bytes | None = None,
) -> Path:
    """An OCI layout written by hand, each JSON document passed through a function that may break it."""
    tar = tar if tar is not None else raw_tar([member("hello.txt", data=b"hi")])
    layer = _blob(root, gzip.compress(tar, mtime=0))
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
        "history": [{"created_by": "hand"}],
    }
    cfg_desc = {"mediaType": OCI_CONFIG, **_blob(root, json.dumps(config(cfg)).encode())}
    man = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": cfg_desc,
        "layers": [{"mediaType": OCI_LAYER_GZIP, **layer}],
    }
    man_desc = {"mediaType": OCI_MANIFEST, **_blob(root, json.dumps(manifest(man)).encode())}
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_text(json.dumps(index({"schemaVersion": 2, "manifests": [man_desc]})))
    return root


def _set(d: dict, path: str, value: object) -> dict:
    *keys, last = path.split(".")
    cur = d
    for k in keys:
        cur = cur[int(k)] if isinstance(cur, list) else cur[k]
    cur[last] = value
    return d


@pytest.mark.parametrize(
    ("part", "path", "value", "says"),
    [
        ("manifest", "config", "str", "manifest sha256:"),
        ("manifest", "layers", {"a": 1}, "layers must be a list, not an object"),
        ("manifest", "layers.0.size", "abc", "layers[0] size must be a byte count"),
        ("manifest", "layers.0.digest", "md5:abc", "layers[0] digest is not a sha256 digest"),
        ("manifest", "annotations", {"a": 1}, "annotations.a must be a string"),
        ("config", "history", ["x"], "history[0] must be an object, not a string"),
        ("config", "config.Env", "PATH=/bin", "Env must be a list, not a string"),
        ("config", "config.Env", ["no-equals-sign"], "is not NAME=VALUE"),
        ("config", "config.Labels", ["a"], "Labels must be an object, not a list"),
        ("config", "config.WorkingDir", 7, "WorkingDir must be a string, not a number"),
        ("config", "rootfs", "layers", "rootfs must be an object, not a string"),
        ("config", "rootfs.diff_ids", [1], "rootfs.diff_ids[0] must be a string, not a number"),
        ("config", "os", ["linux"], "os must be a string, not a list"),
        ("index", "manifests", "all", "index.json manifests must be a list, not a string"),
        ("index", "manifests.0.size", -1, "size must be a byte count"),
        ("index", "manifests.0.platform", "linux/amd64", "platform must be an object"),
    ],
)
def test_wrongly_shaped_image_json_is_one_line(tmp_path: Path, part: str, path: str, value: object, says: str) -> None:
    fix = {part: lambda d: _set(d, path, value)}
    layout = crafted_layout(tmp_path / "img", **fix)  # type: ignore[arg-type]
    with pytest.raises(IntegrityError) as info:
        read_image(f"oci:{layout}", cache=Cache(tmp_path / "c"))
    assert says in info.value.line() and "\n" not in info.value.line(), info.value.line()


@pytest.mark.parametrize("document", [[], "index", 3, None])
def test_an_index_json_that_is_not_an_object(tmp_path: Path, document: object) -> None:
    layout = crafted_layout(tmp_path / "img", index=lambda i: document)
    with pytest.raises(IntegrityError, match="index.json must be an object"):
        read_image(f"oci:{layout}", cache=Cache(tmp_path / "c"))


def test_malformed_image_json_through_the_cli_is_one_line(tmp_path: Path) -> None:
    layout = crafted_layout(tmp_path / "img", config=lambda c: _set(c, "config.Env", "PATH=/bin"))
    line = one_error_line(gpuship("image", "ls", f"oci:{layout}", cache=tmp_path / "c"))
    assert "the image config config Env must be a list, not a string" in line


def test_a_layer_blob_that_is_not_the_one_named_says_so(tmp_path: Path) -> None:
    layout = crafted_layout(tmp_path / "img")
    man = json.loads(
        next(p for p in (layout / "blobs" / "sha256").iterdir() if b"layers" in p.read_bytes()).read_bytes()
    )
    layer_file = layout / "blobs" / "sha256" / man["layers"][0]["digest"][7:]
    layer_file.write_bytes(b"\x1f\x8b\x08\x00" + b"not the layer" * 3)  # gzip magic, then garbage
    with pytest.raises(IntegrityError) as info:
        read_image(f"oci:{layout}", cache=Cache(tmp_path / "c"))
    assert "is corrupt (its content hashes to sha256:" in info.value.line(), info.value.line()


@pytest.mark.parametrize("depth", [600, 3000])
def test_a_path_thousands_of_folders_deep_is_refused_and_nothing_is_left(tmp_path: Path, depth: int) -> None:
    layout = crafted_layout(tmp_path / "img", tar=raw_tar([member("d/" * depth + "f", data=b"x")]))
    out = tmp_path / "out"
    out.mkdir()
    proc = gpuship("export", f"oci:{layout}", "--format", "squashfs", "-o", str(out / "img.sqsh"), cache=tmp_path / "c")
    line = one_error_line(proc)
    assert "directories deep" in line or "longer than 4095 bytes" in line, line
    assert list(out.iterdir()) == []


def test_a_project_thousands_of_folders_deep_is_one_line(tmp_path: Path) -> None:
    project = _project(tmp_path, HEAD + "dependencies = []\n")
    deep = os.open(project, os.O_RDONLY)
    try:
        for _ in range(600):  # made relative to an open folder: the whole path is longer than PATH_MAX
            os.mkdir("d", dir_fd=deep)
            nxt = os.open("d", os.O_RDONLY, dir_fd=deep)
            os.close(deep)
            deep = nxt
        os.close(os.open("f.py", os.O_WRONLY | os.O_CREAT, dir_fd=deep))
    finally:
        os.close(deep)
    with pytest.raises(ConfigError, match="more than 512 folders deep"):
        select_app_files(project)


# -- 7. damaged cache entries are dropped and made again; a tampered layout is caught ------------------------------
def _damage(path: Path, from_end: int | None = None) -> None:
    with open(path, "r+b") as fh:  # in place, as a disk or a careless hand would
        size = path.stat().st_size
        fh.seek(size // 2 if from_end is None else size - from_end)
        fh.write(b"\0rot\0")


def test_a_damaged_cached_layer_is_rebuilt_once_with_a_warning(cache: Cache, caplog: pytest.LogCaptureFixture) -> None:
    make = lambda: [Entry.file("app/data.bin", os.urandom(200_000))]  # noqa: E731
    first = cached_layer(cache, "the-key", make)
    _damage(cache.blob_path(first.digest))
    with caplog.at_level(logging.WARNING, logger="gpuship.cache"):
        again = cached_layer(cache, "the-key", make)
    assert "was damaged" in caplog.text and first.digest[:19] in caplog.text
    assert cache.has(again.digest)
    with again.open() as fh:
        assert "sha256:" + hashlib.sha256(fh.read()).hexdigest() == again.digest


def test_convert_from_an_intact_source_repairs_a_damaged_cache(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    layout = crafted_layout(tmp_path / "img")
    img = read_image(f"oci:{layout}", cache=cache)
    _damage(cache.blob_path(img.layers[0].digest))
    proc = gpuship("image", "convert", f"oci:{layout}", f"oci-archive:{tmp_path / 'out.tar'}", cache=cache.root)
    assert proc.returncode == 0, proc.stderr
    assert "warning: the cached blob" in proc.stderr and "was damaged" in proc.stderr
    back = read_image(f"oci-archive:{tmp_path / 'out.tar'}", cache=Cache(tmp_path / "fresh"))
    assert back.digest == img.digest


def test_image_ls_of_a_tampered_layout_fails_even_when_the_cache_has_the_layer(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    layout = crafted_layout(tmp_path / "img")
    img = read_image(f"oci:{layout}", cache=cache)  # the cache now holds a good copy
    _damage(layout / "blobs" / "sha256" / img.layers[0].digest[7:])
    line = one_error_line(gpuship("image", "ls", f"oci:{layout}", cache=cache.root))
    assert "is corrupt (its content hashes to" in line


def test_a_damaged_cached_wheel_is_fetched_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wheel = tmp_path / "tiny-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("tiny/__init__.py", "x = 1\n" * 1000)
        zf.writestr("tiny-1.0.dist-info/METADATA", "Name: tiny\nVersion: 1.0\n")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    cache = Cache(tmp_path / "c")
    cached = fetch(cache, wheel.as_uri(), sha)
    _damage(cached, from_end=22)  # the zip's end-of-directory record
    with pytest.raises(IntegrityError, match="is not a readable wheel"):
        open_wheel(cached, wheel.name)  # what the damage did before: a BadZipFile traceback
    with caplog.at_level(logging.WARNING, logger="gpuship.cache"):
        again = fetch(cache, wheel.as_uri(), sha)
    assert "was damaged" in caplog.text
    assert hashlib.sha256(again.read_bytes()).hexdigest() == sha
    open_wheel(again, wheel.name).close()


# -- 2. credential files and private keys never ship -----------------------------------------------------------
# a syntactically real key (made for this test, never used anywhere)
OPENSSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDsYm9ndXNrZXlmb3J0ZXN0c29ubHlub3RyZWFsAAAAJAAAAAtzc2gtZWQy\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
RSA_KEY = "-----BEGIN RSA PRIVATE KEY-----\n" + "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n" * 3
RSA_KEY += "-----END RSA PRIVATE KEY-----\n"

CREDENTIAL_FILES = [
    ".env",
    ".env.production",
    "id_rsa",
    ".netrc",
    ".aws/credentials",
    ".pypirc",
    ".npmrc",
    ".git-credentials",
    ".docker/config.json",
    ".config/containers/auth.json",
    "tls/server.pem",
    "tls/server.key",
    ".kube/config",
    ".config/gh/hosts.yml",
    ".config/gcloud/credentials.db",
    ".config/gcloud/legacy_credentials/me@example.com/adc.json",
    ".gnupg/private-keys-v1.d/ABCD.key",
    ".gnupg/pubring.kbx",
    ".pgpass",
    ".my.cnf",
    ".s3cfg",
    ".vault-token",
    "infra/terraform.tfstate",
    "infra/prod.tfvars",
    "secrets.json",
    "secret.yaml",
    "secrets.yaml",
    "pip.conf",
    ".config/pip/pip.conf",
    "token.txt",
    ".cache/huggingface/token",
    "kaggle.json",
    ".bash_history",
]


def test_credential_files_and_private_keys_are_left_out(tmp_path: Path) -> None:
    project = _project(tmp_path, HEAD + "dependencies = []\n")
    for rel in CREDENTIAL_FILES:
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text("token = s3cret\n")
    keys = {
        "deploy_key": OPENSSH_KEY,
        "certs/bot.txt": "note\n" + RSA_KEY,
        "conf/settings.py": f'KEY = """{RSA_KEY}"""',
    }
    for rel, text in keys.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)
    harmless = {
        "main.py": "print('-----BEGIN RSA PRIVATE KEY----- is how a key starts')\n",
        ".env.example": "TOKEN=\n",
        "id_ed25519.pub": "ssh-ed25519 AAAA\n",
        "hosts.yml": "all: {}\n",
        "config.yaml": "a: 1\n",
    }
    for rel, text in harmless.items():
        (project / rel).write_text(text)
    app = select_app_files(project)
    assert set(app.secrets_skipped) == set(CREDENTIAL_FILES) | set(keys)
    assert set(app.secrets_by_content) == set(keys)
    assert set(app.files) == set(harmless) | {"pyproject.toml"}
    warnings = "\n".join(app.secret_warnings())
    assert "left out deploy_key: it holds a private key" in warnings
    assert "left out .kube/config: it looks like a secret" in warnings
    ignore = dockerignore_lines(project, [], [], "Dockerfile", app.secrets_by_content)
    assert "deploy_key" in ignore and "certs/bot.txt" in ignore  # docker build leaves them out too
    shipped = select_app_files(project, include=["deploy_key"])  # the way to ship one on purpose
    assert "deploy_key" in shipped.files and "deploy_key" not in shipped.secrets_skipped


# -- 3. index and registry logins are used, and never written down -----------------------------------------------
class PrivateIndex:
    """A PEP 503 simple index on 127.0.0.1 that answers only with HTTP basic auth (user ``ci-bot-9f2e``, ``TOKEN``)."""

    USER, TOKEN = "ci-bot-9f2e", "s3cr3t-T0KEN-do-not-leak"

    def __init__(self, root: Path) -> None:
        self.wheel = root / "tinydep-1.0-py3-none-any.whl"
        with zipfile.ZipFile(self.wheel, "w") as zf:
            zf.writestr("tinydep/__init__.py", "VALUE = 42\n")
            zf.writestr("tinydep-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n")
            zf.writestr("tinydep-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
            zf.writestr("tinydep-1.0.dist-info/RECORD", "")
        sha = hashlib.sha256(self.wheel.read_bytes()).hexdigest()
        page = f'<html><body><a href="/files/{self.wheel.name}#sha256={sha}">{self.wheel.name}</a></body></html>'
        wheel, expected = self.wheel, "Basic " + base64.b64encode(f"{self.USER}:{self.TOKEN}".encode()).decode()
        self.seen: list[str] = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:  # noqa: N802
                self.do_GET(body=False)

            def do_GET(self, body: bool = True) -> None:  # noqa: N802
                seen.append(self.path)
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="private"')
                    self.end_headers()
                    return
                if self.path.rstrip("/") == "/simple/tinydep":
                    data, kind = page.encode(), "text/html"
                elif self.path == f"/files/{wheel.name}":
                    data, kind = wheel.read_bytes(), "application/octet-stream"
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        self.login_url = self.url.replace("http://", f"http://{self.USER}:{self.TOKEN}@")
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def private_index(tmp_path: Path) -> Iterator[PrivateIndex]:
    index = PrivateIndex(tmp_path)
    yield index
    index.server.shutdown()


def _everything_written(root: Path) -> bytes:
    """Every byte under ``root``, layer blobs decompressed (a token inside a gzip stream shows too)."""
    out = b""
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            out += gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return out


def test_an_index_login_downloads_and_is_never_written(
    tmp_path: Path, build_cache: Path, private_index: PrivateIndex
) -> None:
    project = _project(
        tmp_path,
        HEAD + 'dependencies = ["tinydep"]\n[tool.gpuship]\n'
        f'index-url = "{private_index.login_url}"\nentrypoint = ["python", "-c", "import tinydep"]\n',
    )
    out, report = tmp_path / "img", tmp_path / "report" / "build.json"
    proc = gpuship("build", str(project), "-o", f"oci:{out}", "--report", str(report), cache=build_cache)
    assert proc.returncode == 0, proc.stderr
    assert any(p.startswith("/files/tinydep") for p in private_index.seen)  # the wheel came with the login
    token = private_index.TOKEN.encode()
    assert token not in proc.stdout.encode() + proc.stderr.encode()
    assert token not in (project / "gpuship.lock").read_bytes()
    written = _everything_written(out) + _everything_written(report.parent)
    assert b"tinydep" in written and b'index-url = "http://127.0.0.1' in written  # the app's pyproject, cleaned
    assert token not in written and private_index.USER.encode() + b":" not in written


def test_a_netrc_login_is_used_like_uv_uses_it(tmp_path: Path, private_index: PrivateIndex) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {private_index.USER} password {private_index.TOKEN}\n")
    netrc.chmod(0o600)
    url = private_index.url.replace("/simple", f"/files/{private_index.wheel.name}")
    sha = hashlib.sha256(private_index.wheel.read_bytes()).hexdigest()
    cache = Cache(tmp_path / "c")
    with pytest.raises(GpushipError) as info:
        fetch(cache, url, sha, credentials=IndexCredentials.from_urls([], environ=False))
    assert "HTTP 401" in info.value.line() and "netrc" in info.value.line()
    os.environ["NETRC"] = str(netrc)
    try:
        got = fetch(cache, url, sha, credentials=IndexCredentials.from_urls([], environ=False))
    finally:
        del os.environ["NETRC"]
    assert hashlib.sha256(got.read_bytes()).hexdigest() == sha


def test_a_wrong_index_login_is_one_line_without_it(
    tmp_path: Path, build_cache: Path, private_index: PrivateIndex
) -> None:
    wrong = private_index.login_url.replace(private_index.TOKEN, "wr0ng-T0KEN-do-not-leak")
    project = _project(
        tmp_path, HEAD + f'dependencies = ["tinydep"]\n[tool.gpuship]\nindex-url = "{wrong}"\nentrypoint = ["true"]\n'
    )
    proc = gpuship("build", str(project), "-o", f"oci:{tmp_path / 'img'}", cache=build_cache)
    line = one_error_line(proc)
    assert "wr0ng-T0KEN" not in proc.stderr + proc.stdout, line
    assert "401" in line and "login" in line, line


def test_an_image_reference_with_a_login_is_refused_without_echoing_it(tmp_path: Path) -> None:
    layout = crafted_layout(tmp_path / "img")
    for argv in (
        ("push", f"oci:{layout}", "bob:hunter2-T0KEN@127.0.0.1:5000/app:1"),
        ("image", "convert", f"oci:{layout}", "registry:bob:hunter2-T0KEN@127.0.0.1:5000/app:1"),
    ):
        proc = gpuship(*argv, cache=tmp_path / "c")
        line = one_error_line(proc)
        assert "hunter2" not in proc.stderr + proc.stdout, line


# -- 6. inspect reads package databases as streams, with a bound per file -------------------------------------------
class _Repeat(io.RawIOBase):
    """``size`` bytes of ``unit`` over and over, made as they are read (nothing held in memory)."""

    def __init__(self, unit: bytes, size: int) -> None:
        self._unit, self._left, self._pos = unit, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._left)
        if n <= 0:
            return 0
        start = self._pos % len(self._unit)
        chunk = (self._unit * ((start + n) // len(self._unit) + 1))[start : start + n]
        b[:n] = chunk
        self._left -= n
        self._pos += n
        return n


def _peak_rss_mb(argv: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``argv`` and measure its peak resident memory (ru_maxrss of the waited-for child)."""
    code = (
        "import resource, subprocess, sys, json; "
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(json.dumps([p.returncode, p.stdout[-2000:], p.stderr[-2000:], "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=900)
    rc, stdout, stderr, kb = json.loads(out.stdout)
    return subprocess.CompletedProcess(argv, rc, stdout, stderr), kb / 1024


def test_inspect_memory_does_not_grow_with_a_huge_dpkg_status(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    size = 320 << 20
    para = b"Package: p\nStatus: install ok installed\nVersion: 1\nInstalled-Size: 1\n\n"
    status = Entry.stream("var/lib/dpkg/status", size, lambda: io.BufferedReader(_Repeat(para, size)))
    record = Entry.file("usr/lib/python3/dist-packages/a-1.dist-info/RECORD", "a/__init__.py,,\n")
    image = append_layers(empty_image("linux/amd64"), [build_layer([status, record, Entry.file("a/x", "x")], cache)])
    layout = write_oci_layout(image, tmp_path / "img")
    env = {**os.environ, "GPUSHIP_CACHE": str(cache.root)}
    proc, peak = _peak_rss_mb([sys.executable, "-m", "gpuship", "inspect", f"oci:{layout}", "--json"], env)
    assert proc.returncode == 0, proc.stderr
    assert peak < 250, f"gpuship inspect peaked at {peak:.0f} MB for a {size >> 20} MB dpkg status"


# -- 5. the function runtime: slow clients, bursts, hostile JSON ----------------------------------------------------
SERVED = """
import time

def work(payload):
    time.sleep((payload or {}).get("sleep", 0) if isinstance(payload, dict) else 0)
    return {"got": payload if not isinstance(payload, float) else repr(payload)}

def nan_ok(payload):
    return {"got": repr(payload)}
nan_ok.allow_nan = True
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("served")
    (d / "served.py").write_text(SERVED)
    return d


def _slow_upload(port: int, seconds: float) -> socket.socket:
    """A client that sends its headers, then one body byte now and then (never the whole promised body)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")

    def trickle() -> None:
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                s.sendall(b" ")
                time.sleep(0.5)
        except OSError:
            pass

    threading.Thread(target=trickle, daemon=True).start()
    return s


def test_slow_uploads_never_take_a_worker(served: Path) -> None:
    env = {"MAX_WORKERS": "2", "BODY_TIMEOUT": "4"}
    with bench.start_runtime("served:work", cwd=served, env=env) as rt:
        port = int(rt.url.rsplit(":", 1)[1])
        slow = [_slow_upload(port, 30) for _ in range(8)]  # more than MAX_WORKERS, trickling for longer
        time.sleep(0.5)
        try:
            with httpx.Client(base_url=rt.url, timeout=10) as client:
                codes = [client.post("/invoke", json={"i": i}).status_code for i in range(20)]
                assert codes == [200] * 20, codes
                assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
            answers = []
            for s in slow:  # the body deadline answers them: 408, as JSON
                s.settimeout(15)
                answer = b""
                while b"}" not in answer and (chunk := s.recv(4096)):
                    answer += chunk
                answers.append(answer)
            assert all(a.startswith(b"HTTP/1.1 408") and b'"body too slow"' in a for a in answers), answers
        finally:
            for s in slow:
                s.close()


def test_a_client_trickling_its_headers_is_cut_off(served: Path) -> None:
    with bench.start_runtime("served:work", cwd=served, env={"HEADER_TIMEOUT": "2"}) as rt:
        port = int(rt.url.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(20)
        start = time.monotonic()
        try:
            s.sendall(b"POST /invoke HTTP/1.1\r\n")
            closed = False
            while time.monotonic() - start < 15:
                try:
                    s.sendall(b"X-Slow: a\r\n")  # a header line every half second: never complete
                except OSError:
                    closed = True
                    break
                s.settimeout(0.5)
                try:
                    if s.recv(1) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
            assert closed and time.monotonic() - start < 8
        finally:
            s.close()


def test_a_burst_of_100_with_the_default_settings_gets_no_503(served: Path) -> None:
    with bench.start_runtime("served:work", cwd=served) as rt:  # MAX_WORKERS=4, the default queue
        result = bench.run_load(rt.url, requests=100, concurrency=100, n=100)
    assert result["statuses"] == {"200": 100} and result["failed"] == 0, result


def test_hostile_json_gets_a_json_400(served: Path) -> None:
    with bench.start_runtime("served:work", cwd=served) as rt, httpx.Client(base_url=rt.url, timeout=30) as client:
        for body in (b"[" * 2000 + b"]" * 2000, b'{"a":' * 5000 + b"1" + b"}" * 5000):
            r = client.post("/invoke", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and r.json()["error"] == "body is not JSON", r.text
        for body in (b"NaN", b'{"x": Infinity}', b"[-Infinity]"):
            r = client.post("/invoke", content=body)
            assert r.status_code == 400 and "allow_nan" in r.json()["detail"], r.text
        assert client.post("/invoke", json={"ok": 1}).status_code == 200
    with bench.start_runtime("served:nan_ok", cwd=served) as rt:
        r = httpx.post(rt.url + "/invoke", content=b"NaN")
        assert r.status_code == 200 and r.json() == {"got": "nan"}, r.text


def test_serve_load_runs_slow_clients_and_a_default_burst() -> None:
    """bench/serve_load.py's hostile runs, small: the load passes untouched beside slow uploads; a burst of 100
    at the default settings gets no 503."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "serve_load.py"), "--requests", "400", "--concurrency", "32"]
        + ["--slow-clients", "8", "--burst", "100"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["failed"] == 0 and out["slow_clients"]["count"] == 8 and out["latency_ms"]["p99"] > 0
    assert out["burst"]["statuses"] == {"200": 100}


# -- 10. registries: every command that reads one takes the same options; a name that does not resolve is final ------
REGISTRY_COMMANDS = [
    ("build",),
    ("push",),
    ("login",),
    ("image", "convert"),
    ("image", "ls"),
    ("inspect",),
    ("export",),
    ("run",),
    ("check",),
    ("slim",),
    ("dev",),
    ("dockerfile",),
    ("deploy", "k8s"),
    ("deploy", "compose"),
    ("deploy", "slurm"),
    ("deploy", "ngc"),
]


def test_every_command_that_reads_a_registry_takes_the_same_registry_options() -> None:
    import typer.main

    from gpuship.cli.main import app

    root = typer.main.get_command(app)
    for path in REGISTRY_COMMANDS:
        cmd: Any = root
        for name in path:
            cmd = cmd.commands[name]
        opts = {o: p for p in cmd.params for o in getattr(p, "opts", ())}
        assert "--insecure" in opts and "--ca-file" in opts, f"gpuship {' '.join(path)} lacks the registry options"
        assert "GPUSHIP_INSECURE_REGISTRIES" in opts["--insecure"].help, path  # the way without a flag


def test_a_registry_host_that_does_not_resolve_is_final_at_once(tmp_path: Path) -> None:
    start = time.monotonic()
    proc = gpuship("image", "ls", "registry:no-such-host.invalid/app:1", cache=tmp_path / "c")
    line = one_error_line(proc)
    assert "cannot resolve the registry host no-such-host.invalid" in line, line
    assert "down or overloaded" not in line and time.monotonic() - start < 30


def test_plain_http_registry_read_by_image_ls_inspect_and_deploy_with_insecure(tmp_path: Path) -> None:
    from test_registry_support import LocalRegistry, have_tools

    have_tools()
    reg = LocalRegistry(tmp_path / "reg").start()
    try:
        layout = crafted_layout(tmp_path / "img")
        ref = f"{reg.host}/hostile/app:1"
        pushed = gpuship("push", f"oci:{layout}", ref, "--insecure", cache=tmp_path / "c")
        assert pushed.returncode == 0, pushed.stderr
        line = one_error_line(gpuship("image", "ls", f"registry:{ref}", cache=tmp_path / "c2"))
        assert "--insecure" in line and "GPUSHIP_INSECURE_REGISTRIES" in line, line
        for argv in (
            ("image", "ls", f"registry:{ref}", "--insecure"),
            ("image", "convert", f"registry:{ref}", f"oci:{tmp_path / 'copy'}", "--insecure"),
            ("inspect", f"registry:{ref}", "--json", "--insecure"),
            ("deploy", "compose", f"registry:{ref}", "-o", str(tmp_path / "compose"), "--insecure"),
        ):
            proc = gpuship(*argv, cache=tmp_path / "c3")
            assert proc.returncode == 0, (argv, proc.stderr)
        env = {"GPUSHIP_INSECURE_REGISTRIES": reg.host}  # the same without a flag
        assert gpuship("image", "ls", f"registry:{ref}", cache=tmp_path / "c4", env=env).returncode == 0
    finally:
        reg.stop()
