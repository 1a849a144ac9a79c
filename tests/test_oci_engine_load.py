"""Loading into an engine sends only what it lacks: tag-only, partial archives, the fall-back to the full one,
and the containerd form (OCI layout without the blobs the store holds), against real engines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.oci import Entry, Image, append_layers, build_layer, empty_image, entries_from_dir
from gpuship.oci.docker_archive import write_docker_archive_to
from gpuship.oci.engine import chain_ids, held_chain_ids, load_image
from gpuship.oci.image import ImageConfig
from test_oci_support import busybox_tree  # noqa: F401  (fixture)


def _image(tree: Path, cache: Cache, text: str, *, base_extra: str = "") -> Image:
    """busybox (+ an optional extra base layer) + an app layer whose /app/msg holds ``text``; it prints it."""
    cfg = ImageConfig(entrypoint=("/bin/busybox", "cat", "/app/msg"), env=("PATH=/bin",))
    layers = [build_layer(entries_from_dir(tree), cache)]
    if base_extra:
        layers.append(build_layer([Entry.file("etc/extra", base_extra.encode())], cache))
    layers.append(build_layer([Entry.file("app/msg", text.encode())], cache))
    return append_layers(empty_image("linux/amd64", cfg), layers)


def test_chain_ids_follow_the_image_spec() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    import hashlib

    assert chain_ids([a, b]) == [a, "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()]


@pytest.mark.docker
def test_edit_reload_sends_only_the_new_layer_and_runs_it(busybox_tree: Path, cache: Cache, docker, tags) -> None:
    first = _image(busybox_tree, cache, "first version\n")
    t1, t2, t3 = tags(), tags(), tags()
    r1 = load_image(first, t1)
    assert (r1.tagged_only, r1.sent) == (False, 2) or r1.sent == 1  # busybox may be held from another test
    assert docker.run("run", "--rm", t1).stdout == "first version\n"
    engine_chains = held_chain_ids()
    assert set(chain_ids([layer.diff_id for layer in first.layers])) <= engine_chains

    edited = _image(busybox_tree, cache, "edited version\n")
    r2 = load_image(edited, t2)
    assert (r2.sent, r2.layers, r2.fell_back) == (1, 2, False)
    assert r2.bytes_sent == edited.layers[-1].size
    assert docker.run("run", "--rm", t2).stdout == "edited version\n"
    inspect = json.loads(docker.run("image", "inspect", t2).stdout)[0]
    assert inspect["Id"] == edited.config_descriptor()["digest"]

    again = load_image(edited, t3)  # the engine has this image: only a new name
    assert again.tagged_only and again.sent == 0
    assert docker.run("run", "--rm", t3).stdout == "edited version\n"


@pytest.mark.docker
def test_engine_missing_a_layer_gets_the_full_archive(busybox_tree: Path, cache: Cache, docker, tags) -> None:
    """The engine is said to hold every layer (as if one went away after it was asked): the partial archive is
    refused, the full one is sent, and the image runs."""
    img = _image(busybox_tree, cache, "full archive\n", base_extra=f"never loaded {time.time_ns()}\n")
    claimed = set(chain_ids([layer.diff_id for layer in img.layers]))
    assert not claimed <= held_chain_ids()
    t = tags()
    r = load_image(img, t, held=claimed)
    assert r.fell_back and r.sent == r.layers == 3
    assert docker.run("run", "--rm", t).stdout == "full archive\n"


@pytest.mark.docker
def test_a_prefix_only_is_left_out(busybox_tree: Path, cache: Cache, docker, tags) -> None:
    """A held layer above a missing one is still sent: its chain ID under the new parent is new."""
    base = _image(busybox_tree, cache, "top\n")
    load_image(base, tags())
    other = _image(busybox_tree, cache, "top\n", base_extra=f"new middle {time.time_ns()}\n")
    r = load_image(other, tags())
    assert (r.sent, r.layers, r.fell_back) == (2, 3, False)  # the middle and the (same bytes) top layer


def test_containerd_form_is_an_oci_layout_without_held_blobs(busybox_tree: Path, cache: Cache, tmp_path) -> None:  # noqa: ANN001
    """What a containerd image store gets: ``oci-layout``, ``index.json`` (naming the image) and every blob but
    the omitted layers; no ``manifest.json`` (containerd would then want every layer file)."""
    img = _image(busybox_tree, cache, "oci\n")
    omit = frozenset({img.layers[0].diff_id})
    out = tmp_path / "partial.tar"
    with out.open("wb") as fh:
        write_docker_archive_to(img, fh, ["example/app:1"], omit=omit, legacy=False)
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        layout = json.load(tar.extractfile("oci-layout"))  # type: ignore[arg-type]
    assert layout == {"imageLayoutVersion": "1.0.0"}
    assert "manifest.json" not in names and "repositories" not in names
    assert index["manifests"][0]["digest"] == img.digest
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/example/app:1"
    blobs = {n.rsplit("/", 1)[1] for n in names if n.startswith("blobs/sha256/") and n.count("/") == 2}
    assert img.layers[0].digest.split(":")[1] not in blobs
    assert {img.layers[1].digest.split(":")[1], img.config_descriptor()["digest"].split(":")[1]} <= blobs
    assert img.digest.split(":")[1] in blobs


@pytest.fixture
def containerd(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A private containerd on its own socket and state (Debian's containerd package), stopped afterwards."""
    exe, ctr = shutil.which("containerd"), shutil.which("ctr")
    if exe is None or ctr is None or os.geteuid() != 0:
        pytest.skip("containerd and ctr (run as root) are needed for the containerd-store test")
    d = tmp_path_factory.mktemp("ctrd")
    sock = d / "c.sock"
    config = d / "config.toml"
    config.write_text(
        f'version = 2\nroot = "{d}/root"\nstate = "{d}/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n'
        f'[debug]\n  address = "{d}/debug.sock"\n[metrics]\n  address = ""\n'
    )
    log = (d / "log").open("w")
    proc = subprocess.Popen([exe, "--config", str(config)], stdout=log, stderr=log)
    for _ in range(100):
        if sock.exists() and subprocess.run([ctr, "-a", str(sock), "version"], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.skip(f"a private containerd did not start: {(d / 'log').read_text()[-300:]}")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ctr, "-a", str(sock), "-n", "gpuship-test", *args], capture_output=True, text=True)

    yield run
    proc.terminate()
    proc.wait(30)
    shutil.rmtree(d, ignore_errors=True)


def test_containerd_imports_the_partial_archive(busybox_tree: Path, cache: Cache, tmp_path: Path, containerd) -> None:  # noqa: ANN001
    """containerd's importer (what Docker's containerd store runs for docker load) takes the OCI form without
    the blobs its content store holds, and refuses it when a left-out blob is not there."""
    first = _image(busybox_tree, cache, "one\n")
    edited = _image(busybox_tree, cache, "two\n")

    def archive(img: Image, name: str, omit: frozenset[str]) -> Path:
        out = tmp_path / f"{name}.tar"
        with out.open("wb") as fh:
            write_docker_archive_to(img, fh, [f"example/{name}:1"], omit=omit, legacy=False)
        return out

    full = containerd("images", "import", str(archive(first, "one", frozenset())))
    assert full.returncode == 0, full.stderr
    partial = archive(edited, "two", frozenset({edited.layers[0].diff_id}))
    got = containerd("images", "import", str(partial))
    assert got.returncode == 0, got.stderr
    listed = containerd("images", "ls", "-q").stdout.split()
    assert "docker.io/example/two:1" in listed
    check = containerd("images", "check")
    assert "docker.io/example/two:1" in check.stdout and "complete" in check.stdout, check.stdout

    never = _image(busybox_tree, cache, "three\n", base_extra=f"never seen {time.time_ns()}\n")
    bad = containerd("images", "import", str(archive(never, "three", frozenset({never.layers[1].diff_id}))))
    assert bad.returncode != 0 and "not found" in bad.stderr
