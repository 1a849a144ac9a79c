"""Builds with models are answered from the last build's record when nothing changed and every model is pinned (the
project's own weights by their files, a hub model by its commit, a URL by its sha256); a changed model builds."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

from build_support import copy_example, gpuship
from gpuship.config import HubModel, ModelsConfig, UrlModel
from gpuship.sources.models import pinned
from hf_support import FakeHub, HubRepo

UNCHANGED = "unchanged since the last build"


def _build(project: Path, tmp_path: Path, cache: Path, name: str, env: dict[str, str] | None = None):  # noqa: ANN202
    report = tmp_path / f"{name}.json"
    out = f"oci-archive:{tmp_path / 'image.tar'}"
    proc = gpuship("build", str(project), "-o", out, "--report", str(report), cache=cache, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(report.read_text()), proc


def _model_digests(report: dict) -> list[str]:
    return [layer["digest"] for layer in report["platforms"][0]["layers"] if layer["group"] == "model"]


def test_project_weights_and_mounts_are_remembered(tmp_path: Path, build_cache: Path) -> None:
    project = copy_example("model-function", tmp_path)
    first, _ = _build(project, tmp_path, build_cache, "first")
    assert _model_digests(first) and first["models"]
    again, proc = _build(project, tmp_path, build_cache, "again")
    assert UNCHANGED in proc.stderr, proc.stderr
    assert again["digest"] == first["digest"] and again["models"] == first["models"]
    assert (tmp_path / "again.spdx.json").read_text() == (tmp_path / "first.spdx.json").read_text()

    config = project / "model" / "config.json"
    config.write_text(config.read_text().replace("}", f', "note": "{uuid.uuid4().hex}"}}'))
    changed, proc = _build(project, tmp_path, build_cache, "changed")
    assert UNCHANGED not in proc.stderr
    assert _model_digests(changed) != _model_digests(first) and changed["digest"] != first["digest"]


def test_pinned_hub_and_url_models_are_remembered(tmp_path: Path, build_cache: Path) -> None:
    commit = os.urandom(20).hex()
    onnx = os.urandom(3_000)
    hub = FakeHub(
        {
            "gpuship-test/tiny": HubRepo(commit, {"config.json": b"{}", "model.safetensors": os.urandom(2_000)}),
            "gpuship-test/open": HubRepo(commit, {"w.onnx": onnx}),
        }
    )
    try:
        project = copy_example("numpy-hello", tmp_path)
        url = f"{hub.url}/gpuship-test/open/resolve/{commit}/w.onnx#sha256={hashlib.sha256(onnx).hexdigest()}"
        models = f'models = ["hf://gpuship-test/tiny@{commit}", "{url}"]\n'
        (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text() + models)
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home")}
        first, _ = _build(project, tmp_path, build_cache, "first", env)
        asked = len(hub.requests)
        again, proc = _build(project, tmp_path, build_cache, "again", env)
        assert UNCHANGED in proc.stderr, proc.stderr
        assert again["digest"] == first["digest"] and len(hub.requests) == asked
        assert [m["kind"] for m in again["models"]] == ["hf", "url"]
    finally:
        hub.close()


def test_only_models_pinned_by_hash_count_as_pinned() -> None:
    sha = "0" * 64
    assert pinned(ModelsConfig())
    assert pinned(ModelsConfig(("weights/",), (HubModel("o/n", "a" * 40),), (UrlModel("https://h/m", sha, "/m"),)))
    assert not pinned(ModelsConfig(hub=(HubModel("o/n", "main"),)))  # a branch moves
    assert not pinned(ModelsConfig(urls=(UrlModel("https://h/m", "", "/m"),)))


def test_an_app_edit_with_models_builds_the_full_builds_image(tmp_path: Path, build_cache: Path, docker) -> None:  # noqa: ANN001
    """The model layers sit below the app: an edit of the app's code starts from the last image (editbuild)."""
    project = copy_example("model-function", tmp_path)
    code = project / "classifier.py"
    code.write_text(code.read_text() + f"\n# {uuid.uuid4().hex}\n")
    tag = docker.tag()

    def build(name: str, env: dict[str, str] | None = None) -> tuple[dict, str]:
        report = tmp_path / f"{name}.json"
        proc = gpuship(
            "build", str(project), "-o", f"docker:{tag}", "--report", str(report), cache=build_cache, env=env
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(report.read_text()), proc.stderr

    try:
        first, _ = build("first")
        code.write_text(code.read_text() + "# edited\n")
        edited, said = build("edited")
        assert "only classifier.py changed since the last build" in said, said
        assert _model_digests(edited) == _model_digests(first) and edited["digest"] != first["digest"]
        full, said = build("full", {"GPUSHIP_X": "1"})
        assert "changed since the last build" not in said and full["digest"] == edited["digest"]
        assert (tmp_path / "full.spdx.json").read_text() == (tmp_path / "edited.spdx.json").read_text()
    finally:
        docker.run("rmi", "-f", tag, check=False)
