"""A bounded fuzz pass (Hypothesis) over what gpuship reads from others: layers, image JSON, pyproject files.

The property is the same for each: any input gives a value or one :class:`GpushipError`, never another exception,
and nothing is written outside the destination. Examples are derandomized (the same every run, so CI never
flakes); ``GPUSHIP_FUZZ_EXAMPLES`` runs more of them (default 120 per target; the pass takes tens of seconds) and
``GPUSHIP_FUZZ_RANDOM=1`` draws new ones each run (for a hunt, not for CI).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuship.cache import Cache
from gpuship.config import KNOWN_KEYS, GpushipConfig
from gpuship.cuda import GpuSettings
from gpuship.cuda.settings import KEYS as GPU_KEYS
from gpuship.errors import GpushipError
from gpuship.oci.layer import Layer
from gpuship.oci.readers import read_local
from gpuship.oci.unpack import unpack
from gpuship.plan.build_plan import load_config
from gpuship.project import load_project
from gpuship.project.pyproject import PROJECT_FIELDS
from test_hostile_inputs import crafted_layout

EXAMPLES = int(os.environ.get("GPUSHIP_FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("GPUSHIP_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


# -- layers ----------------------------------------------------------------------------------------------------
SEGMENTS = ["a", "b", "..", ".", "", ".wh.a", ".wh..", ".wh...", ".wh.", ".wh..wh..opq", ".wh..wh.plnk", "x" * 300]
names = st.builds(
    lambda lead, parts: lead + "/".join(parts),
    st.sampled_from(["", "/", "./", "../"]),
    st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=5),
)
KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE]
members = st.tuples(names, st.sampled_from(KINDS), names, st.binary(max_size=64), st.integers(0, 0o7777))


def _tar(layer: list[tuple[str, int, str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, target, data, mode in layer:
            info = tarfile.TarInfo(name or ".")
            info.type, info.mode = kind, mode
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = target
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _layer(data: bytes, cache: Cache, compress: bool) -> Layer:
    blob = gzip.compress(data, mtime=0) if compress else data
    digest = cache.put_bytes(blob)
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    return Layer(digest, diff_id, len(blob), len(data), "gzip" if compress else "none", cache=cache)


def _snapshot(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            out[str(p.relative_to(root))] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return out


@FUZZ
@given(
    layers=st.lists(st.lists(members, max_size=8), min_size=1, max_size=3),
    raw=st.binary(max_size=64),
    mode=st.integers(0, 2),
)
def test_unpacking_any_layers_writes_nothing_outside_the_destination(
    tmp_path_factory: Any, layers: list[list[tuple[str, int, str, bytes, int]]], raw: bytes, mode: int
) -> None:
    work = tmp_path_factory.mktemp("unpack")
    cache = Cache(work / "cache")
    outer = work / "outer"
    (outer / "sibling").mkdir(parents=True)
    (outer / "keep").write_text("keep me")
    (outer / "sibling" / "a").write_text("me too")
    before = _snapshot(work / "outer")
    blobs = [_tar(layer) for layer in layers]
    if mode == 1:
        blobs[-1] = blobs[-1][: len(blobs[-1]) // 2]  # cut short
    elif mode == 2:
        blobs.append(raw)  # not a tar at all
    dest = outer / "root"
    try:
        unpack([_layer(b, cache, compress=i % 2 == 0) for i, b in enumerate(blobs)], dest)
    except GpushipError:
        assert not dest.exists()
    after = _snapshot(outer)
    assert {k: v for k, v in after.items() if not k.startswith("root")} == before
    shutil.rmtree(work, ignore_errors=True)


# -- image JSON -------------------------------------------------------------------------------------------------
def _maybe(valid: Any) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(valid), json_values)


def _shape(doc: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """``doc`` with some of its fields (at any depth) replaced by arbitrary JSON, and some keys added."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if isinstance(v, dict) and data.draw(st.booleans()):
            out[k] = _shape(v, data)
        elif isinstance(v, list) and v and isinstance(v[0], dict) and data.draw(st.booleans()):
            out[k] = [_shape(v[0], data)] + v[1:]
        else:
            out[k] = data.draw(_maybe(v))
    out.update(
        data.draw(st.dictionaries(st.sampled_from(["size", "digest", "mediaType", "x"]), json_values, max_size=1))
    )
    return out


@FUZZ
@given(data=st.data(), whole=st.integers(0, 3))
def test_reading_any_image_json_gives_an_image_or_one_error(
    tmp_path_factory: Any, data: st.DataObject, whole: int
) -> None:
    work = tmp_path_factory.mktemp("layout")

    def config(c: dict[str, Any]) -> Any:
        return data.draw(json_values) if whole == 1 else _shape(c, data)

    def manifest(m: dict[str, Any]) -> Any:
        return data.draw(json_values) if whole == 2 else _shape(m, data)

    def index(i: dict[str, Any]) -> Any:
        return data.draw(json_values) if whole == 3 else _shape(i, data)

    layout = crafted_layout(work / "img", config=config, manifest=manifest, index=index)
    try:
        read_local(f"oci:{layout}", None, Cache(work / "cache"))
    except GpushipError:
        pass
    shutil.rmtree(work, ignore_errors=True)


# -- pyproject.toml and [tool.gpuship] ------------------------------------------------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if v == v and v not in (float("inf"), float("-inf")) else "nan"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_value(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return '""'


toml_values = st.recursive(
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=10)
REQUIREMENTS = st.lists(
    st.sampled_from(["numpy", "torch>=2", "x[y]", "", "n u m p y", "a @ file:///etc", "-e ."]), max_size=3
)


def _table(keys: list[str], extra: st.SearchStrategy[Any] = toml_values) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from([*keys, "unknown-key"]), extra, max_size=5)


gpu_tables = _table(list(GPU_KEYS), st.one_of(toml_values, st.sampled_from(["auto", "12.8", "H100", "535", True])))
PLAUSIBLE = st.one_of(
    st.sampled_from(["debian-bookworm", "3.11", "/app", "gzip", "zstd", "none", "65532:65532", "root", "linux/amd64"]),
    st.lists(st.sampled_from(["linux/amd64", "8080", "a/*", "python", "main.py", "libgomp1"]), max_size=3),
    st.dictionaries(st.sampled_from(["A", "B=C", ""]), st.one_of(_text, st.integers(-5, 70000)), max_size=2),
    st.lists(st.integers(-5, 70000), max_size=3),
    st.just({"function": "pkg.mod:fn"}),
)
tool_tables = st.fixed_dictionaries(
    {},
    optional={
        "gpu": st.one_of(gpu_tables, gpu_tables, toml_values),
        **{k: st.one_of(PLAUSIBLE, PLAUSIBLE, toml_values) for k in KNOWN_KEYS if k != "gpu"},
    },
)
#: A value of the right shape for each kind of PEP 621 field (so most documents get past the first field).
SHAPED = {
    "string": _text,
    "list": st.lists(_text, max_size=3),
    "string-table": st.dictionaries(_text, _text, max_size=2),
    "string-or-table": _text | st.dictionaries(st.sampled_from(["text", "file"]), _text, max_size=1),
    "people": st.lists(st.dictionaries(st.sampled_from(["name", "email"]), _text, max_size=2), max_size=2),
    "table-of-string-tables": st.dictionaries(_text, st.dictionaries(_text, _text, max_size=2), max_size=2),
    "table-of-lists": st.dictionaries(_text, REQUIREMENTS, max_size=2),
}
project_tables = st.fixed_dictionaries(
    {"name": st.one_of(st.just("x"), st.just("x"), toml_values)},
    optional={
        **{k: st.one_of(SHAPED[s], SHAPED[s], toml_values) for k, (s, _) in PROJECT_FIELDS.items() if k != "name"},
        "dependencies": st.one_of(REQUIREMENTS, REQUIREMENTS, toml_values),
        "dynamic": st.one_of(st.just(["dependencies"]), toml_values),
    },
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "project": st.one_of(project_tables, project_tables, project_tables, toml_values),
        "tool": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "gpuship": st.one_of(tool_tables, tool_tables, tool_tables, toml_values),
                    "uv": toml_values,
                    "setuptools": st.one_of(
                        st.just({"dynamic": {"dependencies": {"file": ["requirements.in"]}}}), toml_values
                    ),
                },
            ),
            toml_values,
        ),
        "build-system": st.one_of(st.just({"requires": ["hatchling"]}), toml_values),
    },
)


def _load_everything(root: Path) -> None:
    project = load_project(root)
    config: GpushipConfig = load_config(root, project.tool, getattr(project, "settings", None))
    GpuSettings.from_table(config.gpu)


@FUZZ
@given(doc=documents, raw=st.binary(max_size=200), as_bytes=st.booleans())
def test_loading_any_pyproject_gives_a_value_or_one_error(
    tmp_path_factory: Any, doc: dict[str, Any], raw: bytes, as_bytes: bool
) -> None:
    root = tmp_path_factory.mktemp("proj")
    if as_bytes:
        text = raw
    else:
        text = "\n".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in doc.items()).encode()
    (root / "pyproject.toml").write_bytes(text)
    (root / "requirements.in").write_text("numpy\n")
    before = sorted(p.name for p in root.iterdir())
    try:
        _load_everything(root)
    except GpushipError as exc:
        assert "\n" not in exc.line()
    assert sorted(p.name for p in root.iterdir()) == before  # reading writes nothing
    shutil.rmtree(root, ignore_errors=True)
