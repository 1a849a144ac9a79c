"""An edit rebuild: when all that changed since the last build of the same request is the contents of some of the
app layer's Python sources (:func:`gpuship.rebuild.edited`), the new image is the last one with a new app layer,
made without planning, locking or looking at the environment and the base again.

What a full build does with such an edit is known. The plan, the lock and every layer below the app are made of
inputs that did not change (the project's other files, gpuship, the environment variables, the Debian indexes:
all in the record's key). The app layer is made by :func:`gpuship.sources.app.app_layer` from the same list of
files. And the edited files take no other part in the build: they are Python sources that are not executable
(the entrypoint lint reads only the ``#!`` lines of executable files), not ELF files (find-libdeps and GPU-code
pruning read ELF files only), hold no private key (the secret guard would leave them out) and are not project
inputs (``setup.py``, requirements files), in a project that is not a package (whose wheel is built from the
app's files). So the image is the bytes a full build makes (tests/test_rebuild_edit.py builds both), and its
build report and SBOM are the last build's with the new digest and app layer.

Only for builds into engines (``docker:``) of one platform whose last build recorded an image to start from
(:func:`gpuship.build._edit_base`); anything else, or any check here that fails, goes to the full build.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any  # Any: the rebuild record, JSON

from .cache import Cache
from .oci import Image, ImageConfig, Layer
from .oci.image import History, Platform
from .oci.media import Family
from .rebuild import Edited, Request, edited_sbom, human_size, remember, renamed, rewalked
from .sources.app import AppFiles, app_layer
from .sources.secrets import holds_private_key

_ELF = b"\x7fELF"


def plain_file(path: Path) -> bool:
    """A regular file (not a link), not executable."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and not st.st_mode & 0o111


def image_record(image: Image) -> dict[str, Any]:
    """``image`` as JSON (:func:`image_from_record` reads it back)."""
    p = image.platform
    return {
        "platform": [p.os, p.architecture, p.variant],
        "config": dict(image.config.to_json()),
        "layers": [dict(layer.to_record()) for layer in image.layers],
        "history": [[h.created_by, h.comment, h.empty_layer] for h in image.history],
        "annotations": dict(image.annotations),
        "family": image.family.value,
        "created": image.created,
    }


def image_from_record(rec: dict[str, Any], cache: Cache) -> Image:
    os_, arch, variant = rec["platform"]
    return Image(
        Platform(os_, arch, variant),
        ImageConfig.from_json(rec["config"]),
        tuple(Layer.from_record(layer, cache, reused=True) for layer in rec["layers"]),
        tuple(History(str(c), str(comment), bool(empty)) for c, comment, empty in rec["history"]),
        dict(rec["annotations"]),
        Family(rec["family"]),
        str(rec["created"]),
    )


def _unremarkable(path: Path) -> bool:
    """An edited file that takes no part in the build but as the app layer's bytes: a plain file, not an ELF
    file, holding no private key."""
    if not plain_file(path):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head != _ELF and not holds_private_key(path)


def edit_build(got: Edited, request: Request, skip: Sequence[Path], started: float) -> dict[str, Any] | None:
    """The new image loaded into the engines, and the answer (as :func:`gpuship.rebuild.recall`'s: report, SBOM,
    rows, digest, written); None where a full build must run. Remembered as the request's last build when the
    project did not change meanwhile (``skip``: what the project walk leaves out, as for ``got``)."""
    rec, edit = got.record, got.record["edit"]
    root = request.project_dir.resolve()
    default = str(rec["default_name"])
    names = request.engine_names(default)
    if names is None or "@" in request.image_name(default) or not all(_unremarkable(root / p) for p in got.changed):
        return None
    cache = Cache()
    with cache.in_use():
        old = image_from_record(edit["image"], cache)
        if old.digest != rec["result"]["digest"] or not all(cache.has(layer.digest) for layer in old.layers):
            return None  # a record this module cannot read back as it was, or layers pruned from the cache
        app = app_layer(AppFiles(root, tuple(edit["files"]), (), 0), str(edit["workdir"]), cache)
        if app.comment != old.layers[-1].comment:
            return None
        new = replace(old, layers=(*old.layers[:-1], app))
        written = _load(new, names, [str(i) for i in rec.get("docker") or ()])
    answer = _answer(rec["result"], request, default, new, app)
    after = rewalked(got.now, request, skip=skip)
    if after.key == got.now.key:  # else a file changed while this ran: the next build looks again
        image_ids = [new.config_descriptor()["digest"]] * len(names)
        remember(after, request, image_ids, default, answer, dict(edit, image=image_record(new)))
    return answer | {"written": written, "seconds": time.monotonic() - started}


def _load(image: Image, names: list[str], last: list[str]) -> list[str]:
    """``image`` loaded as each of ``names``. The engine holds the layers of the ``last`` images it was given, if
    it still has them: asked of those alone, not of every image it has (a partial load the engine refuses is
    sent again in full, :func:`gpuship.oci.engine.load_image`)."""
    from .oci.engine import chain_ids, load_image  # only for an edit rebuild that got this far

    held: set[str] | None = None
    if last:
        proc = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", *last], capture_output=True, text=True
        )
        if proc.returncode == 0:
            held = {c for line in proc.stdout.splitlines() for c in chain_ids(json.loads(line) or [])}
    return [f"loaded into Docker as {load_image(image, name, held=held).describe()}" for name in names]


def _answer(result: dict[str, Any], request: Request, default: str, new: Image, app: Layer) -> dict[str, Any]:
    """The last build's ``result`` for the image ``new`` (the last with ``app`` on top), named as ``request``
    asks."""
    out = renamed(result, request, default)
    digest = new.digest
    report = dict(out["report"], digest=digest)
    (platform,) = report["platforms"]
    row = {
        "group": "app",
        "digest": app.digest,
        "size": app.size,
        "uncompressed_size": app.uncompressed_size,
        "reused": app.reused,
        "what": app.comment,
    }
    report["platforms"] = [dict(platform, digest=digest, layers=[*platform["layers"][:-1], row])]
    out["report"] = report
    rows = list(out["rows"])
    short = app.digest.removeprefix("sha256:")[:12]
    size, unpacked = human_size(app.size), human_size(app.uncompressed_size)
    rows[-1] = [rows[-1][0], "app", short, size, unpacked, "cached" if app.reused else "new", app.comment]
    out["rows"] = rows
    out["digest"] = digest
    if "sbom" in out:
        namespace = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'gpuship:' + digest)}"
        out["sbom"] = edited_sbom(out["sbom"], request.image_name(default), digest, namespace, versionInfo=digest)
    return out
