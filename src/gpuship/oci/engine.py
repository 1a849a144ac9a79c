"""Load an image into a local container engine, sending only what the engine lacks.

An engine that already has the image (same image ID: the config digest) is only asked to tag it. Otherwise
the archive streams straight into ``docker load`` (nothing is written to disk), and it leaves out what the
engine holds:

* **classic image store** (Docker's graph drivers, e.g. overlay2): ``docker load`` skips — without opening its
  file — every layer whose *chain ID* it already has (moby ``image/tarexport/load.go``). gpuship reads the diff
  IDs of the engine's images (``docker image inspect``), so it knows every chain ID held, and sends a
  ``manifest.json`` archive without the files of the layers whose chain prefix is held;
* **containerd image store** (Docker 25+ with ``containerd-snapshotter``): ``docker load`` imports an OCI layout
  and only needs the blobs its content store lacks. gpuship sends the OCI layout without the layer blobs of the
  held chain prefix (gpuship gives an engine plain layer tars, so a layer it loaded before is held under its
  diff ID), then checks the image: a failed import can leave a broken record.

When a partial load is refused, or its image does not check out, the full archive is sent: a partial load can
cost a retry, never a wrong image. Podman gets the tag-only shortcut and otherwise the full archive.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from .. import tools
from ..errors import GpushipError
from .docker_archive import DockerTag, docker_archive_entries, pick_image
from .image import Image, Platform
from .layout import ImageOrIndex, blob_path, images_of
from .tarball import send_tar

Store = Literal["classic", "containerd", "podman"]


def engine_version(engine: str = "docker") -> str:
    """The engine's server version (``20.10.24+dfsg1``), or a clear error when none answers."""
    exe = tools.require(engine)
    fmt = "{{.Server.Version}}" if engine == "docker" else "{{.Version}}"
    try:
        proc = subprocess.run([exe, "version", "--format", fmt], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise GpushipError(f"{engine} did not answer within 60 s", "check that its daemon is running") from exc
    version = proc.stdout.strip()
    if proc.returncode != 0 or not version or version.startswith("<no value>"):
        raise GpushipError(
            f"no {engine} engine answers: {tools.last_line(proc.stderr or proc.stdout)}",
            "start dockerd (or set DOCKER_HOST), or write a file with --output docker-archive:FILE",
        )
    return version


def save_image(ref: str, dest: Path, engine: str = "docker") -> None:
    """``ENGINE save`` the image ``ref`` into the archive ``dest`` (what :func:`gpuship.oci.readers.read_image`
    reads for ``docker:NAME:TAG``): an absent image or a silent engine is one clear error."""
    exe = tools.require(engine)
    if not ref:
        raise GpushipError(f"{engine}: names no image", f"use {engine}:NAME:TAG")
    proc = subprocess.run([exe, "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True)
    if proc.returncode != 0:
        engine_version(engine)  # no engine answering is its own error
        raise GpushipError(
            f"the {engine} engine has no image {ref}",
            f"`{engine} images` lists what it has; gpuship build -o {engine}:{ref} puts one there",
        )
    saved = subprocess.run([exe, "save", "-o", str(dest), ref], capture_output=True, text=True)
    if saved.returncode != 0:
        raise GpushipError(f"{engine} save {ref} failed: {tools.last_line(saved.stderr or saved.stdout)}")


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chain ID of each prefix of ``diff_ids`` (image-spec ``config.md``: ``sha256(parent + " " + diff)``)."""
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


@dataclass(frozen=True)
class LoadResult:
    """What a load did: ``sent`` of the image's ``layers`` went to the engine (``bytes_sent`` of layer data)."""

    name: str
    image_id: str
    layers: int
    sent: int
    bytes_sent: int
    tagged_only: bool = False
    fell_back: bool = False
    store: Store = "classic"

    def describe(self) -> str:
        if self.tagged_only:
            return f"{self.name} (the engine had the image: tagged)"
        how = f"{self.sent} of {self.layers} layers sent, {self.bytes_sent / 1e6:.1f} MB"
        return f"{self.name} ({how}{'; the partial load was refused, sent in full' if self.fell_back else ''})"


def engine_run(exe: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``exe args...`` (the engine's command), its output as text; an engine that does not answer in ``timeout``
    seconds is a :class:`GpushipError`."""
    try:
        return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise GpushipError(f"{exe} {args[0]} did not answer within {timeout:.0f} s", "check its daemon") from exc


def _has_image(exe: str, image_id: str) -> bool:
    proc = engine_run(exe, "image", "inspect", "--format", "{{.Id}}", image_id)
    return proc.returncode == 0 and proc.stdout.strip() == image_id


def image_store(engine: str = "docker") -> Store:
    """Where the engine keeps images: ``containerd`` when Docker names containerd's snapshotter in ``docker info``
    (Docker 25+ with the containerd store), else ``classic``; ``podman`` for Podman. No engine: a clear error."""
    if engine == "podman":
        engine_version(engine)
        return "podman"
    proc = engine_run(tools.require(engine), "info", "--format", "{{json .DriverStatus}}")
    if proc.returncode != 0 or proc.stdout.strip() in ("", "<no value>"):
        engine_version(engine)  # says why no engine answers
        raise GpushipError(f"{engine} info failed: {tools.last_line(proc.stderr)}", "check the engine")
    return "containerd" if "io.containerd.snapshotter" in proc.stdout else "classic"


def held_chain_ids(exe: str = "docker") -> set[str]:
    """Every chain ID the engine's images hold (all prefixes of each image's diff IDs)."""
    ids = list(dict.fromkeys(engine_run(exe, "image", "ls", "-a", "-q", "--no-trunc").stdout.split()))
    held: set[str] = set()
    for i in range(0, len(ids), 200):
        proc = engine_run(exe, "image", "inspect", "--format", "{{json .RootFS.Layers}}", *ids[i : i + 200])
        for line in proc.stdout.splitlines():  # an image removed meanwhile is skipped
            try:
                held.update(chain_ids([str(d) for d in json.loads(line) or []]))
            except ValueError:
                continue
    return held


def _tail(fh: IO[bytes]) -> str:
    fh.seek(0)
    return tools.last_line(fh.read()[-4000:])


def stream_load(
    exe: str,
    obj: ImageOrIndex,
    tag: DockerTag | None,
    platform: Platform | str | None,
    *,
    omit: frozenset[str] = frozenset(),
    legacy: bool = True,
) -> str:
    """Stream the archive (``omit``/``legacy``: as :func:`docker_archive_entries`'s) into ``ENGINE load``;
    returns the name it was loaded as. The engine's refusal is a :class:`GpushipError` with its last line."""
    entries = docker_archive_entries(obj, [str(tag)] if tag is not None else [], platform, omit=omit, legacy=legacy)
    # the layers' blobs go from the cache to the engine with sendfile (no copy through Python)
    files = {blob_path(x.digest): x.blob_path for img in images_of(obj) for x in img.layers}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([exe, "load"], stdin=subprocess.PIPE, stdout=out, stderr=err)
        assert proc.stdin is not None
        try:
            send_tar(entries, proc.stdin.fileno(), files)
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the engine gave up reading: its own message says why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
        if proc.wait() != 0:
            raise GpushipError(
                f"{Path(exe).name} load refused the image: {_tail(err) if err.tell() else _tail(out)}",
                "run with -v for details; write it with --output docker-archive:FILE to inspect",
            )
        out.seek(0)
        text = out.read().decode(errors="replace")
    loaded = [ln.split(": ", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Loaded image")]
    return loaded[-1] if loaded else str(tag or "")


def omittable(img: Image, held: set[str]) -> frozenset[str]:
    """The diff IDs of the layers whose whole chain prefix the engine holds (only a prefix may be left out)."""
    omit: list[str] = []
    for layer, chain in zip(img.layers, chain_ids([layer.diff_id for layer in img.layers]), strict=True):
        if chain not in held:
            break
        omit.append(layer.diff_id)
    return frozenset(omit)


def _checks_out(exe: str, image_id: str, store: Store) -> bool:
    """After a partial load that the engine accepted: the classic store loads all or nothing (it fails on a
    missing layer file), so that is enough; with containerd's store, where a failed import can leave a record
    without its content, the image must be there and a container must be made of it."""
    if store != "containerd":
        return True
    if not _has_image(exe, image_id):
        return False
    proc = engine_run(exe, "create", "--entrypoint", "/", image_id)
    if proc.returncode != 0:
        return False
    engine_run(exe, "rm", "-f", proc.stdout.strip())
    return True


def load_image(
    obj: ImageOrIndex,
    ref: str,
    *,
    engine: str = "docker",
    platform: Platform | str | None = None,
    partial: bool = True,
    held: set[str] | None = None,
) -> LoadResult:
    """Load ``obj`` into the engine under ``ref`` (``name[:tag]``), sending only what it lacks (module doc).

    For an Index the engine gets one platform: ``platform``, else the host's, else the first. ``partial=False``
    always sends the whole archive (still only a tag when the engine has the image). ``held``: the chain IDs
    the engine holds, when the caller knows them (default: asked with :func:`held_chain_ids`).
    """
    tag = DockerTag.parse(ref)
    exe = tools.require(engine)
    img = pick_image(obj, platform)
    config_id = img.config_descriptor()["digest"]
    # the engine is asked side by side: where it keeps images, whether it has this one (a tag of the image ID
    # succeeds only then), and which layers it holds
    with ThreadPoolExecutor(3, thread_name_prefix="gpuship-engine") as pool:
        store_f = pool.submit(image_store, engine)
        tagged_f = pool.submit(engine_run, exe, "tag", config_id, str(tag))
        held_f = pool.submit(held_chain_ids, exe) if partial and held is None and engine != "podman" else None
        store = store_f.result()
        # the engine's image ID: the config digest; in containerd's store, the digest of the manifest it was given
        image_id = img.digest if store == "containerd" else config_id
        tagged = tagged_f.result().returncode == 0 and store != "containerd"
        if not tagged and store == "containerd":
            tagged = engine_run(exe, "tag", image_id, str(tag)).returncode == 0
        if tagged:
            return LoadResult(str(tag), image_id, len(img.layers), 0, 0, tagged_only=True, store=store)
        if held_f is not None:
            held = held_f.result()
    omit = frozenset[str]()
    if partial and store != "podman":
        omit = omittable(img, held or set())
    if omit:
        try:
            name = stream_load(exe, img, tag, None, omit=omit, legacy=store != "containerd")
            if _checks_out(exe, image_id, store):
                sent = [layer for layer in img.layers if layer.diff_id not in omit]
                return LoadResult(
                    name, image_id, len(img.layers), len(sent), sum(layer.size for layer in sent), store=store
                )
        except GpushipError:
            pass  # refused (a held layer went away meanwhile, or an engine that wants every file): send it all
    name = stream_load(exe, img if omit else obj, tag, platform)
    full = sum(layer.size for layer in img.layers)
    return LoadResult(name, image_id, len(img.layers), len(img.layers), full, fell_back=bool(omit), store=store)


def load_into_engine(
    obj: ImageOrIndex, ref: str, *, engine: str = "docker", platform: Platform | str | None = None
) -> str:
    """Load ``obj`` into the engine under ``ref`` (``name[:tag]``); returns the name it was loaded as."""
    return load_image(obj, ref, engine=engine, platform=platform).name
