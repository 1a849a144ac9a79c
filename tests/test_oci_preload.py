"""Loading an image's lower layers into Docker while its upper ones are built (gpuship.oci.preload), and the
sendfile archive writer the engine loads go through — against a real Docker Engine."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.oci import Entry, Image, Layer, append_layers, build_layer, empty_image, entries_from_dir
from gpuship.oci.docker_archive import docker_archive_entries, write_docker_archive_to
from gpuship.oci.engine import chain_ids, held_chain_ids, load_image
from gpuship.oci.image import ImageConfig, Platform
from gpuship.oci.layout import blob_path
from gpuship.oci.preload import PREFIX_LABEL, Preloader
from gpuship.oci.tarball import send_tar, write_tar
from test_oci_support import busybox_tree  # noqa: F401  (fixture)


def _layers(tree: Path, cache: Cache, text: str) -> list[Layer]:
    """busybox, two "environment" layers and an app layer whose /app/msg holds ``text``."""
    return [
        build_layer(entries_from_dir(tree), cache),
        build_layer([Entry.file("opt/env/one", os.urandom(1 << 16))], cache),
        build_layer([Entry.file("opt/env/two", os.urandom(1 << 16))], cache),
        build_layer([Entry.file("app/msg", text.encode())], cache),
    ]


def _image(layers: list[Layer]) -> Image:
    cfg = ImageConfig(entrypoint=("/bin/busybox", "cat", "/app/msg"), env=("PATH=/bin",))
    return append_layers(empty_image("linux/amd64", cfg), layers)


def _prefix_images(docker) -> list[str]:  # noqa: ANN001
    return docker.run("images", "-q", "--no-trunc", "--filter", f"label={PREFIX_LABEL}").stdout.split()


@pytest.mark.docker
def test_layers_loaded_ahead_leave_only_the_rest_to_send(busybox_tree: Path, cache: Cache, docker, tags) -> None:
    """The floor and each environment layer go to the engine as they come; the image then sends only its top layer,
    runs, and no prefix image is left."""
    layers = _layers(busybox_tree, cache, "loaded ahead\n")
    others = set(_prefix_images(docker))  # another build's, running meanwhile
    heard: list[str] = []
    pre = Preloader(Platform.parse("linux/amd64"), lambda: layers[:1], say=heard.append, min_bytes=0)
    pre.add(layers[1:2])
    pre.add(layers[2:3])
    pre.settle()
    pre.finish()
    held = held_chain_ids()
    assert set(chain_ids([x.diff_id for x in layers[:3]])) <= held
    assert heard and all("ahead of the image" in line for line in heard)
    assert pre.sent_layers >= 2 and " loaded ahead while building" in pre.describe()
    t = tags()
    result = load_image(_image(layers), t)
    assert (result.sent, result.layers, result.fell_back) == (1, 4, False)
    pre.close()
    assert set(_prefix_images(docker)) <= others
    assert docker.run("run", "--rm", t).stdout == "loaded ahead\n"


@pytest.mark.docker
def test_a_preload_that_does_not_match_the_image_changes_nothing(
    busybox_tree: Path, cache: Cache, docker, tags
) -> None:
    """Layers loaded ahead that the image does not start with (a floor guessed wrong) cost only time: the image
    still loads whole and runs, and the prefix images go."""
    layers = _layers(busybox_tree, cache, "the image decides\n")
    others = set(_prefix_images(docker))
    other = build_layer([Entry.file("etc/not-in-the-image", b"x")], cache)
    pre = Preloader(Platform.parse("linux/amd64"), lambda: [other], min_bytes=0)
    pre.add(layers[1:3])
    pre.settle()
    pre.finish()
    t = tags()
    result = load_image(_image(layers), t)
    assert result.sent >= 3  # busybox may be held from another test; the environment layers were not
    pre.close()
    assert set(_prefix_images(docker)) <= others
    assert docker.run("run", "--rm", t).stdout == "the image decides\n"


@pytest.mark.docker
def test_nothing_is_loaded_below_the_threshold_or_after_finish(busybox_tree: Path, cache: Cache, docker) -> None:
    layers = _layers(busybox_tree, cache, "small\n")
    others = set(_prefix_images(docker))
    before = held_chain_ids()
    pre = Preloader(Platform.parse("linux/amd64"), lambda: layers[:1], min_bytes=1 << 40)
    pre.add(layers[1:3])
    pre.settle()
    pre.finish()
    pre.add(layers[3:])  # after finish: ignored
    pre.close()
    # the environment layers hold random bytes: no engine held them before, and none was loaded
    assert not set(chain_ids([x.diff_id for x in layers])[1:]) & (held_chain_ids() | before)
    assert set(_prefix_images(docker)) <= others


def test_a_floor_that_fails_turns_preloading_off(cache: Cache) -> None:
    from gpuship.errors import GpushipError

    def floor() -> list[Layer]:
        raise GpushipError("no base here")

    heard: list[str] = []
    pre = Preloader(Platform.parse("linux/amd64"), floor, say=heard.append, min_bytes=0)
    pre.floor_known()
    pre.add([build_layer([Entry.file("a", b"a")], cache)])
    pre.close()
    assert heard == ["loading ahead into docker is off: no base here"]


def test_send_tar_writes_the_bytes_of_the_archive_writer(busybox_tree: Path, cache: Cache, tmp_path: Path) -> None:
    """What the engine gets through sendfile is byte for byte the docker-archive gpuship writes to a file."""
    layers = _layers(busybox_tree, cache, "same bytes\n")
    image = _image(layers)
    written = io.BytesIO()
    write_docker_archive_to(image, written, ["x/y:z"])
    out = tmp_path / "sent.tar"
    files = {blob_path(x.digest): x.blob_path for x in image.layers}
    with open(out, "wb") as fh:
        send_tar(docker_archive_entries(image, ["x/y:z"]), fh.fileno(), files)
    assert out.read_bytes() == written.getvalue()
    with tarfile.open(out) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest[0]["RepoTags"] == ["x/y:z"]


def test_write_tar_writes_what_tarfile_writes(tmp_path: Path) -> None:
    """The tar writer's bytes are tarfile's in ``w|`` PAX mode (a long name, a symlink, an empty file, a file of
    a whole block and one that ends mid-block): layer digests do not change with it."""
    entries = [
        Entry.file("a/" + "n" * 150 + "/long.txt", b"long name\n"),
        Entry.symlink("a/link", "b"),
        Entry.file("a/b", b""),
        Entry.file("c/block", b"x" * 512),
        Entry.file("c/odd", b"y" * 777, mode=0o755),
        Entry.dir("d", 0o700),
    ]
    ours = io.BytesIO()
    write_tar(entries, ours, mtime=7, link_identical=False)
    from gpuship.oci.tarball import _tarinfo, normalize

    theirs = io.BytesIO()
    with tarfile.open(fileobj=theirs, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for e in normalize(entries):
            ti = _tarinfo(e, 7)
            tar.addfile(ti, io.BytesIO(e.read()) if e.kind == "file" else None)
    assert ours.getvalue() == theirs.getvalue()


def test_preloading_runs_beside_the_build(busybox_tree: Path, cache: Cache) -> None:
    """add() returns at once (the engine work is on the preloader's thread), even while the floor is made."""
    gate = threading.Event()

    def floor() -> list[Layer]:
        gate.wait(5)
        return []

    pre = Preloader(Platform.parse("linux/amd64"), floor, min_bytes=1 << 40)
    pre.add([build_layer([Entry.file("a", b"a")], cache)])  # does not wait for the floor
    gate.set()
    pre.close()
