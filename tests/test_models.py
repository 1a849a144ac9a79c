"""Model files: their own layers below the app, keyed by content; models fetched by reference (a loopback hub,
a loopback file server) once, laid out as the hub cache; the ``[tool.gpuship] models`` schema."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import struct
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.config import GpushipConfig, HubModel, ModelsConfig
from gpuship.errors import ConfigError, GpushipError
from gpuship.sources import models as models_mod
from gpuship.sources.app import select_app_files
from gpuship.sources.models import build_models, local
from hf_support import FakeHub, HubRepo

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def safetensors(path: Path, nbytes: int) -> Path:
    """A real safetensors file (8-byte header length, JSON header, data) of ``nbytes`` random bytes."""
    data = os.urandom(nbytes)
    header = json.dumps({"weight": {"dtype": "U8", "shape": [nbytes], "data_offsets": [0, nbytes]}}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "main.py").write_text("print('hello')\n")
    return root


def models_of(root: Path, cache: Cache, value: list | None = None, **kw):  # noqa: ANN201
    cfg = ModelsConfig.parse(value)
    return build_models(root, select_app_files(root), cfg, "/app", cache, **kw)


def tar_names(layer) -> list[str]:  # noqa: ANN001
    return [e.path for e, _ in layer.entries() if e.kind != "dir"]


# -- project model files ---------------------------------------------------------------------------------------
def test_a_50mb_model_gets_its_own_layer_and_a_code_edit_reuses_it(tmp_path: Path, cache: Cache) -> None:
    root = project(tmp_path)
    safetensors(root / "weights" / "model.safetensors", 50_000_000)
    (root / "weights" / "config.json").write_text("{}")
    first = models_of(root, cache)
    assert [m.source for m in first.layers] == ["weights/model.safetensors"]
    (layer,) = [m.layer for m in first.layers]
    assert tar_names(layer) == ["app/weights/model.safetensors"] and layer.size > 50_000_000
    assert "weights/model.safetensors" not in first.app.files and "weights/config.json" in first.app.files
    blob = cache.blob_path(layer.digest)
    made = blob.stat().st_mtime_ns

    (root / "main.py").write_text("print('edited')\n")
    second = models_of(root, cache)
    again = second.layers[0].layer
    assert again.digest == layer.digest and again.reused  # not built, not compressed again
    assert blob.stat().st_mtime_ns == made
    assert second.records[0].to_json()["layers"] == [layer.digest]


def test_patterns_add_a_model_directory_and_take_files_away(tmp_path: Path, cache: Cache) -> None:
    root = project(tmp_path)
    safetensors(root / "models" / "bert" / "model.safetensors", 1000)
    (root / "models" / "bert" / "tokenizer.json").write_text("{}")
    safetensors(root / "tests" / "fixture.bin", 100)
    safetensors(root / "ignored" / "big.pt", 100)
    (root / ".gitignore").write_text("ignored/\n")
    (root / "ignored" / ".env").write_text("TOKEN=x\n")
    (root / "ignored" / "key.bin").write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        + "b3BlbnNzaC1rZXktdjEAAAAA" * 4
        + "\n-----END OPENSSH PRIVATE KEY-----\n"
    )

    default = models_of(root, cache)
    assert {p for m in default.layers for p in m.paths} == {
        "/app/models/bert/model.safetensors",
        "/app/tests/fixture.bin",
    }  # weights only; the git-ignored one stays out, as it does of the app

    chosen = models_of(root, cache, ["models/bert/", "!tests/", "ignored/"])
    paths = {p for m in chosen.layers for p in m.paths}
    assert paths == {
        "/app/models/bert/model.safetensors",
        "/app/models/bert/tokenizer.json",
        "/app/ignored/big.pt",
    }  # a named directory brings its other files, '!' takes away, a named ignored path comes in (not its secrets)
    assert "tests/fixture.bin" in chosen.app.files and "models/bert/tokenizer.json" not in chosen.app.files
    assert [m.source for m in chosen.layers] == ["ignored/big.pt", "models/bert/ (2 files)"]


def test_a_large_file_gets_a_layer_of_its_own(tmp_path: Path, cache: Cache, monkeypatch) -> None:
    monkeypatch.setattr(local, "LARGE_FILE", 4096)
    root = project(tmp_path)
    safetensors(root / "m" / "a.safetensors", 10_000)
    safetensors(root / "m" / "b.safetensors", 10_000)
    safetensors(root / "m" / "small.bin", 10)
    got = models_of(root, cache)
    # the directory's small files together (here one), each large file alone
    assert [m.source for m in got.layers] == ["m/small.bin", "m/a.safetensors", "m/b.safetensors"]
    assert all(len(m.paths) == 1 for m in got.layers)


def test_file_digests_are_remembered_by_stat_and_a_rewrite_is_read_again(tmp_path: Path, cache: Cache) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 100)
    assert local.file_digest(cache, f) == "sha256:" + hashlib.sha256(b"a" * 100).hexdigest()
    f.write_bytes(b"b" * 100)  # same size, new content: ctime and mtime move
    assert local.file_digest(cache, f) == "sha256:" + hashlib.sha256(b"b" * 100).hexdigest()


# -- the schema ----------------------------------------------------------------------------------------------------
def test_models_config_forms() -> None:
    cfg = GpushipConfig.from_table(
        {
            "workdir": "/srv",
            "models": [
                "weights/",
                "!tests/**",
                f"hf://org/tiny@{COMMIT}",
                {"hf": f"org/other@{COMMIT}", "files": ["*.json"], "path": "models/other"},
                "https://files.example/a/w.bin?sig=s3cr3t#sha256=" + "ab" * 32,
                {"mount": "/models/llama", "claim": "llama-weights"},
                {"mount": "/models/extra", "name": "extra", "env": "EXTRA_DIR", "host": "/shared/extra"},
            ],
        }
    ).models
    assert cfg.patterns == ("weights/", "!tests/**")
    assert [h.ref for h in cfg.hub] == [f"hf://org/tiny@{COMMIT}", f"hf://org/other@{COMMIT}"]
    assert cfg.hub[1].path == "/srv/models/other" and cfg.hub[1].files == ("*.json",)
    assert cfg.urls[0].path == "/opt/models/w.bin" and cfg.urls[0].sha256 == "ab" * 32
    assert [(m.name, m.env, m.claim, m.host) for m in cfg.mounts] == [
        ("llama", "GPUSHIP_MODEL_LLAMA", "llama-weights", ""),
        ("extra", "EXTRA_DIR", "", "/shared/extra"),
    ]
    assert cfg.env() == {
        "GPUSHIP_MODEL_LLAMA": "/models/llama",
        "EXTRA_DIR": "/models/extra",
        "HF_HUB_CACHE": "/opt/huggingface/hub",
        "HF_HUB_OFFLINE": "1",
    }


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (["hf://org/tiny"], "needs a pinned revision"),
        (["hf://org/tiny@main"], "needs a pinned revision"),
        (["https://files.example/w.bin"], "has no #sha256="),
        (["https://files.example/w.bin#sha256=abc"], "has no #sha256="),
        ([{"mount": "models"}], "must be an absolute directory"),
        ([{"mount": "/m", "hf": f"o/n@{COMMIT}"}], "exactly one of hf, url or mount"),
        ([{"mount": "/m", "claimm": "x"}], "did you mean 'claim'"),
        ([{"mount": "/a/m"}, {"mount": "/b/m"}], "the mount name 'm' is given twice"),
        ("weights/", "must be a list"),
    ],
)
def test_models_config_errors_are_one_line(value: object, says: str) -> None:
    with pytest.raises(ConfigError) as exc:
        GpushipConfig.from_table({"models": value})
    assert says in exc.value.line() and "\n" not in exc.value.line()


def test_a_url_with_credentials_is_refused_without_showing_them() -> None:
    for url in ("https://user:s3cr3t@files.example/w.bin?token=s3cr3t", "https://s3cr3t@files.example/w.bin"):
        with pytest.raises(ConfigError) as exc:
            ModelsConfig.parse([url + "#sha256=" + "ab" * 32])
        assert "s3cr3t" not in exc.value.line() and "files.example/w.bin has credentials" in exc.value.line()
        assert "~/.netrc" in exc.value.line()


# -- https://...#sha256= -------------------------------------------------------------------------------------------
class FileServer:
    """Serves ``files`` on loopback and counts GETs; wants Basic auth when ``auth`` is set (as .netrc sends)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.gets = files, []
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                srv.gets.append(path)
                data = srv.files.get(path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def files() -> Iterator[FileServer]:
    srv = FileServer({"/w/model.onnx": os.urandom(30_000)})
    yield srv
    srv.close()


def test_url_model_is_fetched_once_checked_and_placed(tmp_path: Path, cache: Cache, files: FileServer) -> None:
    root = project(tmp_path)
    data = files.files["/w/model.onnx"]
    url = f"{files.url}/w/model.onnx?X-Signature=s3cr3t#sha256={hashlib.sha256(data).hexdigest()}"
    first = models_of(root, cache, [url])
    (m,) = first.layers
    assert tar_names(m.layer) == ["opt/models/model.onnx"] and files.gets == ["/w/model.onnx"]
    assert first.records[0].name == f"{files.url}/w/model.onnx"  # no query: signatures and tokens stay out
    again = models_of(root, cache, [url])
    assert again.layers[0].layer.digest == m.layer.digest and files.gets == ["/w/model.onnx"]  # not fetched again


def test_a_wrong_sha256_is_refused_and_nothing_is_kept(tmp_path: Path, cache: Cache, files: FileServer) -> None:
    root = project(tmp_path)
    blobs = len(list((cache.root / "blobs" / "sha256").iterdir()))
    with pytest.raises(GpushipError) as exc:
        models_of(root, cache, [f"{files.url}/w/model.onnx#sha256={'0' * 64}"])
    line = exc.value.line()
    assert f"{files.url}/w/model.onnx has sha256 " in line and f"not the {'0' * 64}" in line and "\n" not in line
    assert len(list((cache.root / "blobs" / "sha256").iterdir())) == blobs
    assert not list((cache.root / "tmp").iterdir())


# -- hf://ORG/NAME@REVISION ----------------------------------------------------------------------------------------
@pytest.fixture
def hub(monkeypatch) -> Iterator[FakeHub]:
    repo = HubRepo(
        COMMIT,
        {
            "config.json": b'{"hidden_size": 4}',
            "model.safetensors": os.urandom(20_000),
            "tokenizer/vocab.txt": b"[PAD]\nhello\n",
        },
        token="hf_s3cr3t_token",
    )
    h = FakeHub({"gpuship-test/tiny": repo})
    monkeypatch.setenv("HF_ENDPOINT", h.url)
    monkeypatch.setenv("HF_TOKEN", "hf_s3cr3t_token")
    monkeypatch.setenv("HF_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "gpuship-test-hf-home"))
    yield h
    h.close()


def test_hf_model_is_fetched_once_and_laid_out_as_the_hub_cache(tmp_path: Path, cache: Cache, hub: FakeHub) -> None:
    root = project(tmp_path)
    first = models_of(root, cache, [f"hf://gpuship-test/tiny@{COMMIT}"])
    assert sorted(hub.downloads()) == sorted(
        f"/gpuship-test/tiny/resolve/{COMMIT}/{p}" for p in hub.repos["gpuship-test/tiny"].files
    )
    assert all(auth == "Bearer hf_s3cr3t_token" for _, p, auth in hub.requests if "gpuship-test" in p)
    seen = len(hub.requests)
    second = models_of(root, cache, [f"hf://gpuship-test/tiny@{COMMIT}"])
    assert len(hub.requests) == seen  # the second build asks the hub nothing
    assert [m.layer.digest for m in second.layers] == [m.layer.digest for m in first.layers]
    assert first.records[0].to_json() | {"layers": []} == {
        "kind": "hf",
        "name": "gpuship-test/tiny",
        "version": COMMIT,
        "path": "/opt/huggingface/hub/models--gpuship-test--tiny",
        "files": 3,
        "size": sum(len(d) for d in hub.repos["gpuship-test/tiny"].files.values()),
        "layers": [],
    }

    # the layer unpacked is a hub cache huggingface_hub reads offline, without a revision (refs/main)
    unpacked = tmp_path / "rootfs"
    for m in first.layers:
        with m.layer.open_tar() as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
            tar.extractall(unpacked, filter="tar")
        assert b"hf_s3cr3t_token" not in m.layer.open_tar().read()
    probe = (
        "import sys; from huggingface_hub import hf_hub_download, snapshot_download\n"
        "p = hf_hub_download('gpuship-test/tiny', 'model.safetensors'); print(p)\n"
        "print(open(p, 'rb').read().hex())\n"
        "print(snapshot_download('gpuship-test/tiny'))\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(unpacked / "opt/huggingface/hub"),
        "HF_ENDPOINT": "http://127.0.0.1:9",
    }
    env.pop("HF_TOKEN")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    path, content, snapshot = out.splitlines()
    assert bytes.fromhex(content) == hub.repos["gpuship-test/tiny"].files["model.safetensors"]
    assert snapshot.endswith(f"models--gpuship-test--tiny/snapshots/{COMMIT}")


def test_hf_errors_are_one_line_without_the_token(tmp_path: Path, cache: Cache, hub: FakeHub, monkeypatch) -> None:
    root = project(tmp_path)
    with pytest.raises(GpushipError) as exc:
        models_of(root, cache, [f"hf://gpuship-test/missing@{COMMIT}"])
    assert "no such repository" in exc.value.line()
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token")
    with pytest.raises(GpushipError) as exc:
        models_of(root, cache, [f"hf://gpuship-test/tiny@{COMMIT}"])
    assert "gated or private" in exc.value.line() and "HF_TOKEN" in exc.value.line()
    assert "hf_wrong_token" not in exc.value.line() and "\n" not in exc.value.line()
    assert not list((cache.root / "tmp").iterdir())


def test_fetched_files_are_reused_from_the_cache_when_layers_are_not(tmp_path: Path, cache: Cache, hub) -> None:
    """A layer rebuilt (here: another compression) takes the files from the cache, not from the hub."""
    root = project(tmp_path)
    models_of(root, cache, [f"hf://gpuship-test/tiny@{COMMIT}"])
    seen = len(hub.requests)
    z = models_of(root, cache, [f"hf://gpuship-test/tiny@{COMMIT}"], compression="zstd")
    assert len(hub.requests) == seen and not z.layers[0].layer.reused


def test_mount_points_become_a_layer_and_a_label() -> None:
    from gpuship.sources.models import mounts_from_labels, mounts_label

    cfg = ModelsConfig.parse([{"mount": "/models/llama", "claim": "w"}])
    label = mounts_label(cfg.mounts)
    assert mounts_from_labels(label) == cfg.mounts
    assert models_mod.MOUNTS_LABEL in label


def test_hub_model_value() -> None:
    assert HubModel.parse(f"hf://org/name@{COMMIT}").ref == f"hf://org/name@{COMMIT}"


# -- inspect ---------------------------------------------------------------------------------------------------
def test_inspect_shows_model_files_as_their_own_category(tmp_path: Path, cache: Cache, hub: FakeHub) -> None:
    from gpuship.inspect import inspect_image
    from gpuship.oci import Entry, append_layers, build_layer, empty_image

    root = project(tmp_path)
    safetensors(root / "weights" / "model.safetensors", 40_000)
    (root / "weights" / "labels.txt").write_text("cat\ndog\n")
    models = models_of(root, cache, ["weights/", f"hf://gpuship-test/tiny@{COMMIT}"])
    app = build_layer([Entry.file("app/main.py", "print(1)\n"), Entry.file("app/notes.pt", b"x" * 500)], cache)
    img = append_layers(empty_image("linux/amd64"), [m.layer for m in models.layers] + [app])
    report = inspect_image(img).to_json()
    got = {m["name"]: (m["files"], m["size"]) for m in report["models"]}
    assert got == {
        # its three files and refs/main (the revision, 40 bytes)
        "gpuship-test/tiny": (4, sum(len(d) for d in hub.repos["gpuship-test/tiny"].files.values()) + 40),
        "/app/weights": (2, (root / "weights" / "model.safetensors").stat().st_size + 8),
        "/app": (1, 500),  # a weights file by its name, in any layer
    }
    assert report["model_bytes"] == sum(s for _, s in got.values())
    assert report["unowned_bytes"] == len("print(1)\n")
    assert {b["label"] for b in report["blocks"] if b["kind"] == "model"} == set(got)


def test_hf_model_with_a_path_is_a_plain_directory(tmp_path: Path, cache: Cache, hub: FakeHub) -> None:
    root = project(tmp_path)
    got = models_of(root, cache, [{"hf": f"gpuship-test/tiny@{COMMIT}", "files": ["*.json", "*.txt"], "path": "m"}])
    (m,) = got.layers
    assert sorted(tar_names(m.layer)) == ["app/m/config.json", "app/m/tokenizer/vocab.txt"]  # no refs, no blobs
    assert ModelsConfig.parse([{"hf": f"o/n@{COMMIT}", "path": "/m"}]).env() == {}  # no hub cache to point at
