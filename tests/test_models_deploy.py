"""Mounted models (``[tool.gpuship] models = [{ mount = ... }]``) wired by ``gpuship deploy k8s`` (a PVC or a
hostPath volume, validated against the official schemas), ``deploy compose`` (a bind mount, checked by compose),
``deploy slurm`` (``--container-mounts``, run against a recording srun) and ``gpuship run`` (a volume)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.config import ModelsConfig
from gpuship.deploy import (
    ComposeOptions,
    SlurmOptions,
    compose_file,
    kubernetes_manifests,
    slurm_script,
    spec_from_image,
)
from gpuship.errors import GpushipError
from gpuship.oci import Entry, Image, ImageConfig, append_layers, build_layer, empty_image, with_config
from gpuship.run import RunOptions
from gpuship.run.runner import with_model_mounts
from gpuship.sources.models import mounts_label
from test_deploy_compose import compose_config
from test_deploy_k8s import K8S_VERSIONS, function_image, validate
from test_deploy_slurm import batch_image, recorder, shellcheck

MOUNTS = [
    {"mount": "/models/llama", "claim": "llama-weights"},
    {"mount": "/models/extra", "name": "extra", "env": "EXTRA_DIR", "host": "/shared/extra"},
    {"mount": "/models/plain"},
]


def with_mounts(img: Image, mounts: list[dict] = MOUNTS) -> Image:
    cfg = ModelsConfig.parse(mounts)
    labels = {**img.config.labels, **mounts_label(cfg.mounts)}
    env = tuple(img.config.env) + tuple(f"{k}={v}" for k, v in cfg.env().items())
    from dataclasses import replace

    return with_config(img, replace(img.config, labels=labels, env=env))


def pod(docs: list[dict]) -> dict:
    return docs[0]["spec"]["template"]["spec"]


def test_k8s_mounted_models_are_volumes_that_validate(cache: Cache) -> None:
    img = with_mounts(function_image(cache))
    spec = spec_from_image(img, "registry.example/team/llm:1", models=["plain=/data/plain"])
    docs = kubernetes_manifests(spec)
    for version in K8S_VERSIONS:
        for doc in docs:
            validate(doc, version)
    p = pod(docs)
    assert p["volumes"][1:] == [
        {"name": "model-llama", "persistentVolumeClaim": {"claimName": "llama-weights", "readOnly": True}},
        {"name": "model-extra", "hostPath": {"path": "/shared/extra", "type": "Directory"}},
        {"name": "model-plain", "hostPath": {"path": "/data/plain", "type": "Directory"}},
    ]
    assert p["containers"][0]["volumeMounts"][1:] == [
        {"name": "model-llama", "mountPath": "/models/llama", "readOnly": True},
        {"name": "model-extra", "mountPath": "/models/extra", "readOnly": True},
        {"name": "model-plain", "mountPath": "/models/plain", "readOnly": True},
    ]
    # the defaults: the image's claim, its host directory, else a claim named after the model
    default = pod(kubernetes_manifests(spec_from_image(img, "r/x:1", models=["extra=pvc:extra-rwx"])))["volumes"]
    assert default[2]["persistentVolumeClaim"]["claimName"] == "extra-rwx"
    assert default[3]["persistentVolumeClaim"]["claimName"] == "plain"


def test_deploy_k8s_cli_with_a_mounted_model_writes_a_valid_manifest(cache: Cache, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gpuship.cli.main import app
    from gpuship.oci.layout import write_oci_layout

    write_oci_layout(with_mounts(function_image(cache)), tmp_path / "img")
    res = CliRunner().invoke(
        app, ["deploy", "k8s", f"oci:{tmp_path / 'img'}", "--ref", "r.example/llm:1", "--model", "llama=pvc:mine"]
    )
    assert res.exit_code == 0, res.output
    import yaml

    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    for doc in docs:
        validate(doc, "1.37")
    assert pod(docs)["volumes"][1]["persistentVolumeClaim"]["claimName"] == "mine"
    bad = CliRunner().invoke(app, ["deploy", "k8s", f"oci:{tmp_path / 'img'}", "--ref", "r/x:1", "--model", "nope=/x"])
    assert bad.exit_code == 2 and "the image mounts no model of that name (it has: llama, extra, plain)" in bad.output


def test_compose_binds_mounted_models_read_only(cache: Cache, tmp_path: Path) -> None:
    spec = spec_from_image(with_mounts(function_image(cache)), "gpuship-test/llm:1", models=["llama=/srv/llama"])
    doc = compose_file(spec, ComposeOptions())
    assert doc["services"][spec.name]["volumes"] == [
        "/srv/llama:/models/llama:ro",
        "/shared/extra:/models/extra:ro",
        "./models/plain:/models/plain:ro",
    ]
    path = tmp_path / "compose.yaml"
    import yaml

    path.write_text(yaml.safe_dump(doc))
    proc = compose_config(path)
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(GpushipError, match="a PersistentVolumeClaim is for Kubernetes"):
        compose_file(spec_from_image(with_mounts(function_image(cache)), "x:1", models=["llama=pvc:w"]))


def test_slurm_binds_mounted_models(cache: Cache, tmp_path: Path) -> None:
    spec = spec_from_image(with_mounts(batch_image(cache)), "oci:./train", name="train", models=["llama=/lustre/llama"])
    script = tmp_path / "train.sbatch"
    script.write_text(slurm_script(spec, SlurmOptions()))
    shellcheck(script)
    bin_dir = tmp_path / "bin"
    recorder(bin_dir, "srun")
    (tmp_path / "train.sqsh").write_bytes(b"hsqs")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RECORD": str(tmp_path / "srun.json"), "SLURM_SUBMIT_DIR": str(tmp_path)}
    ran = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    argv = json.loads((tmp_path / "srun.json").read_text())["argv"]
    assert (
        f"--container-mounts={tmp_path}/results:/results,/lustre/llama:/models/llama:ro,"
        f"/shared/extra:/models/extra:ro,{tmp_path}/models/plain:/models/plain:ro"
    ) in argv


def test_run_mounts_models_read_only_and_notes_a_missing_one(cache: Cache, tmp_path: Path) -> None:
    layer = build_layer([Entry.file("app/x.py", "")], cache)
    img = with_mounts(with_config(append_layers(empty_image("linux/amd64"), [layer]), ImageConfig()))
    notes: list[str] = []
    opts = with_model_mounts(RunOptions(models={"llama": str(tmp_path)}), img.config.labels, notes.append)
    assert [(v.source, v.destination, v.readonly) for v in opts.volumes] == [
        (str(tmp_path), "/models/llama", True),
        ("/shared/extra", "/models/extra", True),
    ]
    assert notes == ["note: nothing is mounted at /models/plain for model plain (pass --model plain=DIR)"]
    with pytest.raises(GpushipError, match="mounts no model of that name"):
        with_model_mounts(RunOptions(models={"nope": "/x"}), img.config.labels, notes.append)
