"""Model files through the whole `gpuship build`: a 50 MB weights file in its own layer that a code edit leaves
alone (same digest, not compressed again, not loaded into the Docker Engine again, not pushed again: the bytes a
loopback registry receives are counted); an ``hf://`` model fetched from a loopback hub once, with its token in
neither the image, the report nor the SBOM; a wrong ``#sha256=`` refused in one line; examples/model-function
built, loaded and answering ``/invoke`` in Docker, with a mounted model through ``gpuship run --model`` and a
Kubernetes manifest that validates."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from build_support import copy_example, gpuship, one_error_line
from hf_support import FakeHub, HubRepo
from test_models import safetensors
from test_registry_support import LocalRegistry, have_tools

pytestmark = [pytest.mark.docker]


class CountingProxy:
    """A TCP relay on loopback in front of a registry: ``sent`` is every byte clients sent through it."""

    def __init__(self, upstream: int) -> None:
        self.upstream, self.sent, self._lock = upstream, 0, threading.Lock()
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if count:
                    with self._lock:
                        self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._srv.close()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[CountingProxy]:
    have_tools()
    reg = LocalRegistry(tmp_path / "registry").start()
    proxy = CountingProxy(reg.port)
    try:
        yield proxy
    finally:
        proxy.close()
        reg.stop()


def engine_load(archive: Path) -> set[str]:
    """Load ``archive`` through the Engine API (not quiet) and return the layers the engine said it loaded: a layer
    whose chain it already holds is skipped without a word."""
    transport = httpx.HTTPTransport(uds="/var/run/docker.sock")
    with httpx.Client(transport=transport, timeout=600) as client, open(archive, "rb") as fh:
        resp = client.post("http://docker/images/load", params={"quiet": "0"}, content=fh)
    assert resp.status_code == 200, resp.text
    events = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
    assert not any("error" in e for e in events), events
    return {e["id"] for e in events if e.get("status") == "Loading layer"}


def diff_ids(archive: Path) -> list[str]:
    """The layers of a docker-archive as the engine names them in its progress (12 hex digits of the diff ID)."""
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
    return [d[7:19] for d in config["rootfs"]["diff_ids"]]


def build(project: Path, tmp: Path, cache: Path, name: str, *outputs: str, env: dict | None = None) -> dict:
    report = tmp / f"{name}.json"
    targets = ",".join([f"oci-archive:{tmp / name}.tar", *outputs])
    proc = gpuship("build", str(project), "--insecure", "-o", targets, "--report", str(report), cache=cache, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(report.read_text())


def rows(report: dict) -> list[dict]:
    return report["platforms"][0]["layers"]


@pytest.mark.registry
def test_a_code_edit_leaves_the_50mb_model_layer_alone(tmp_path: Path, build_cache: Path, registry, docker) -> None:
    project = copy_example("numpy-hello", tmp_path)
    safetensors(project / "weights" / "model.safetensors", 50_000_000)
    tag = f"gpuship-test/models-{uuid.uuid4().hex[:8]}"
    host = f"127.0.0.1:{registry.port}"

    def outputs(n: int) -> tuple[str, str]:
        return f"registry:{host}/{tag}:{n}", f"docker-archive:{tmp_path}/{n}.docker.tar:{tag}:{n}"

    first = build(project, tmp_path, build_cache, "first", *outputs(1))
    model = [r for r in rows(first) if r["group"] == "model"]
    assert len(model) == 1 and model[0]["what"] == "model weights/model.safetensors"
    assert model[0]["uncompressed_size"] > 50_000_000 and rows(first)[-1]["group"] == "app"
    assert rows(first)[-1]["size"] < 10_000  # the app layer: main.py and pyproject.toml, no weights
    assert first["models"][0] | {"layers": []} == {
        "kind": "project",
        "name": "weights/model.safetensors",
        "version": first["models"][0]["version"],
        "path": "/app/weights/model.safetensors",
        "files": 1,
        "size": (project / "weights" / "model.safetensors").stat().st_size,
        "layers": [],
    }
    pushed_first = registry.sent
    assert pushed_first > 50_000_000

    edit = f"\nprint('edited {uuid.uuid4().hex}')\n"  # an edit no other test's cache has seen
    (project / "main.py").write_text((project / "main.py").read_text() + edit)
    second = build(project, tmp_path, build_cache, "second", *outputs(2))
    again = [r for r in rows(second) if r["group"] == "model"]
    assert again[0]["digest"] == model[0]["digest"] and again[0]["reused"]  # not built nor compressed again
    assert [r["group"] for r in rows(second) if not r["reused"]] == ["app"]
    pushed = registry.sent - pushed_first
    assert pushed < 200_000, pushed  # the app layer, the config and the manifest: not the model

    try:
        model_id, _ = diff_ids(tmp_path / "1.docker.tar")[-2:]
        assert model_id in engine_load(tmp_path / "1.docker.tar")
        _, app_id = diff_ids(tmp_path / "2.docker.tar")[-2:]
        assert engine_load(tmp_path / "2.docker.tar") == {app_id}  # the app layer only: the model is not reloaded
    finally:
        docker.run("rmi", "-f", f"{tag}:1", f"{tag}:2", check=False)


def image_bytes(archive: Path) -> Iterator[bytes]:
    """Every blob of an OCI archive, layers decompressed."""
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            if m.isfile():
                data = tar.extractfile(m).read()  # type: ignore[union-attr]
                yield gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def test_hf_model_is_fetched_once_and_its_token_stays_out(tmp_path: Path, build_cache: Path) -> None:
    token = "hf_tok3n_" + uuid.uuid4().hex
    commit = os.urandom(20).hex()  # a commit no earlier run's cache has fetched (a commit's files never change)
    files = {"config.json": b'{"hidden_size": 8}', "model.safetensors": os.urandom(30_000)}
    onnx = os.urandom(5_000)
    hub = FakeHub(
        {
            "gpuship-test/tiny": HubRepo(commit, files, token=token),
            "gpuship-test/open": HubRepo(commit, {"w.onnx": onnx}),
        }
    )
    try:
        project = copy_example("numpy-hello", tmp_path)
        text = (project / "pyproject.toml").read_text()
        # a plain file too, by a signed URL: its signature is not shown in the report or the SBOM either
        signature = "X-Signature=" + uuid.uuid4().hex
        url = f"{hub.url}/gpuship-test/open/resolve/{commit}/w.onnx?{signature}"
        url += f"#sha256={hashlib.sha256(onnx).hexdigest()}"
        (project / "pyproject.toml").write_text(text + f'models = ["hf://gpuship-test/tiny@{commit}", "{url}"]\n')
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": token, "HF_HOME": str(tmp_path / "hf-home")}
        first = build(project, tmp_path, build_cache, "first", env=env)
        assert sorted(hub.downloads()) == sorted(
            [f"/gpuship-test/tiny/resolve/{commit}/{p}" for p in files]
            + [f"/gpuship-test/open/resolve/{commit}/w.onnx"]
        )
        asked = len(hub.requests)
        (project / "main.py").write_text("print('edited')\n")
        second = build(project, tmp_path, build_cache, "second", env=env)
        assert len(hub.requests) == asked  # fetched once: the second build asks the hub nothing
        model = [r for r in rows(second) if r["group"] == "model"]
        assert (
            model and all(r["reused"] for r in model) and model[0]["what"] == f"model hf://gpuship-test/tiny@{commit}"
        )
        assert first["models"][0]["name"] == "gpuship-test/tiny" and first["models"][0]["version"] == commit

        sbom = (tmp_path / "second.spdx.json").read_text()
        assert f"pkg:huggingface/gpuship-test/tiny@{commit}" in sbom
        assert second["models"][1]["name"] == f"{hub.url}/gpuship-test/open/resolve/{commit}/w.onnx"
        blobs = list(image_bytes(tmp_path / "second.tar"))
        config = next(json.loads(b) for b in blobs if b.startswith(b"{") and b'"rootfs"' in b)
        assert "HF_HUB_CACHE=/opt/huggingface/hub" in config["config"]["Env"]
        assert "HF_HUB_OFFLINE=1" in config["config"]["Env"]
        assert any(files["model.safetensors"] in b for b in blobs) and any(onnx in b for b in blobs)  # in ...
        for where, data in [("report", (tmp_path / "second.json").read_bytes()), ("sbom", sbom.encode())] + [
            ("image", b) for b in blobs
        ]:
            assert token.encode() not in data, where  # ... and the token in none of it
        for where, data in [("report", (tmp_path / "second.json").read_text()), ("sbom", sbom)]:
            assert signature not in data, where
    finally:
        hub.close()


def test_a_wrong_sha256_is_one_line(tmp_path: Path, build_cache: Path) -> None:
    import http.server

    body = os.urandom(1000)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        project = copy_example("numpy-hello", tmp_path)
        url = f"http://127.0.0.1:{srv.server_address[1]}/w.onnx"
        wrong = hashlib.sha256(b"other bytes").hexdigest()
        text = (project / "pyproject.toml").read_text()
        (project / "pyproject.toml").write_text(text + f'models = ["{url}#sha256={wrong}"]\n')
        proc = gpuship("build", str(project), "-o", f"oci-archive:{tmp_path}/x.tar", cache=build_cache)
        line = one_error_line(proc)
        assert f"{url} has sha256 {hashlib.sha256(body).hexdigest()}, not the {wrong}" in line
        assert not (tmp_path / "x.tar").exists()
    finally:
        srv.shutdown()
        srv.server_close()


# -- examples/model-function ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_example_model_function_serves_its_model_in_docker(tmp_path: Path, build_cache: Path, docker) -> None:
    import kubernetes_validate
    import yaml

    project = copy_example("model-function", tmp_path)
    ref = f"gpuship-test/model-function:{uuid.uuid4().hex[:8]}"
    archive = tmp_path / "mf.docker.tar"
    report = build(project, tmp_path, build_cache, "mf", f"docker-archive:{archive}:{ref}")
    assert [(r["group"], r["what"]) for r in rows(report)[-3:]] == [
        ("model", "model model/ (2 files)"),
        ("model", "model mount points /models/custom"),
        ("app", "app: 3 files"),
    ]
    assert [m["kind"] for m in report["models"]] == ["project", "mount"]
    docker.load(archive)
    port = free_port()
    cid = docker.run("run", "-d", "--rm", "-p", f"127.0.0.1:{port}:8080", ref).stdout.strip()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(docker.run("logs", cid, check=False).stderr)
        got = httpx.post(f"http://127.0.0.1:{port}/invoke", json={"features": [1, 5, 2, 0]}, timeout=30).json()
        assert got["label"] == "versicolor" and got["model"] == "baked" and got["scores"] == [1.1, 5.2, 2.3]
    finally:
        docker.run("rm", "-f", cid, check=False)

    try:
        # other weights, mounted where the image expects model "custom": gpuship run wires it
        custom = tmp_path / "custom"
        import subprocess
        import sys

        subprocess.run([sys.executable, str(project / "make_model.py"), str(custom), "--swap"], check=True)
        probe = "import json, classifier as c; c.load(); print(json.dumps(c.classify({'features': [5, 1, 2, 0]})))"
        run = gpuship(
            "run", "--runtime", "docker", "--gpus", "none", "--model", f"custom={custom}",
            "--entrypoint", "/opt/venv/bin/python", ref, "--", "-c", probe,  # the image the engine holds
            cache=build_cache,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        mounted = json.loads(run.stdout.strip().splitlines()[-1])
        assert mounted["model"] == "mounted" and mounted["weights_sha256"] != got["weights_sha256"]
        assert mounted["label"] == "virginica"  # the baked weights say setosa for these features

        # its Kubernetes manifest, with the model from a PersistentVolumeClaim, passes the official schemas
        deploy = gpuship(
            "deploy", "k8s", f"docker-archive:{archive}", "--ref", f"registry.example/{ref}",
            "--model", "custom=pvc:custom-weights", "--gpus", "0", "-o", str(tmp_path / "k8s"),
            cache=build_cache,
        )  # fmt: skip
        assert deploy.returncode == 0, deploy.stderr
        docs = [d for d in yaml.safe_load_all((tmp_path / "k8s" / "model-function.yaml").read_text()) if d]
        for version in ("1.25", "1.37"):
            for doc in docs:
                kubernetes_validate.validate(doc, version, strict=True)
        pod = docs[0]["spec"]["template"]["spec"]
        assert {"name": "model-custom", "persistentVolumeClaim": {"claimName": "custom-weights", "readOnly": True}} in (
            pod["volumes"]
        )
        env = {e["name"] for e in pod["containers"][0].get("env", [])}
        assert "SHUTDOWN_DELAY" in env
    finally:
        docker.run("rmi", "-f", ref, check=False)
