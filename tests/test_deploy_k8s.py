"""``gpuship deploy k8s``: the manifests, validated offline against the official Kubernetes schemas
(kubernetes-validate, which ships the JSON schemas of Kubernetes 1.25 to 1.37)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from gpuship.cache import Cache
from gpuship.cli.main import app
from gpuship.deploy import K8sOptions, Keda, Toleration, kubernetes_manifests, spec_from_image, to_yaml
from gpuship.errors import GpushipError
from gpuship.oci import Entry, Image, ImageConfig, append_layers, build_layer, empty_image, with_config
from gpuship.oci.layout import write_oci_layout
from gpuship.serve import runtime_entries, with_runtime

#: Oldest and newest schema sets the validator ships; manifests must pass both.
K8S_VERSIONS = ("1.25", "1.37")


def function_image(cache: Cache, function: str = "torch_status.app:handle", **config: object) -> Image:
    """An image shaped like `gpuship build` makes for entrypoint = { function = ... } (torch-status)."""
    layer = build_layer(
        [Entry.dir("app"), Entry.file("app/handler.py", "def handle(p):\n    return p\n"), *runtime_entries()], cache
    )
    base = ImageConfig(env=("PATH=/opt/venv/bin:/usr/bin:/bin",), working_dir="/app", **config)  # type: ignore[arg-type]
    cfg = with_runtime(base, function, python="/opt/venv/bin/python")
    return with_config(append_layers(empty_image("linux/amd64"), [layer]), cfg)


def plain_image(cache: Cache) -> Image:
    layer = build_layer([Entry.file("app/train.py", "print('hi')\n")], cache)
    cfg = ImageConfig(
        entrypoint=("python3", "/app/train.py"), cmd=("--epochs", "3"), exposed_ports=("9000/tcp",), working_dir="/app"
    )
    return with_config(append_layers(empty_image("linux/amd64"), [layer]), cfg)


def validate(doc: dict, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def by_kind(docs: list[dict]) -> dict[str, dict]:
    return {d["kind"]: d for d in docs}


def test_deployment_and_service_pass_the_official_schemas(cache: Cache) -> None:
    spec = spec_from_image(
        function_image(cache), "registry.example:5000/team/torch-status:0.1.0", shm_size="8Gi", gpus=2
    )
    opts = K8sOptions(
        runtime_class="nvidia",
        node_selector={"nvidia.com/gpu.present": "true"},
        tolerations=(Toleration.parse("sku=gpu:NoSchedule"),),
        memory="24Gi",
        cpu="4",
    )
    docs = kubernetes_manifests(spec, opts)
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    for doc in docs:
        for v in K8S_VERSIONS:
            validate(doc, v)

    dep = by_kind(docs)["Deployment"]
    assert dep["metadata"]["name"] == "torch-status"
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "registry.example:5000/team/torch-status:0.1.0"
    assert c["resources"]["limits"] == {"nvidia.com/gpu": 2, "memory": "24Gi"}
    assert c["resources"]["requests"] == {"memory": "24Gi", "cpu": "4"}
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]
    assert c["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    # drain on SIGTERM: the runtime keeps serving 5 s (readiness 503), then 25 s for in-flight requests
    assert c["env"] == [{"name": "SHUTDOWN_DELAY", "value": "5"}] and pod["terminationGracePeriodSeconds"] == 35
    svc = by_kind(docs)["Service"]
    assert svc["spec"]["ports"][0]["port"] == 8080 and svc["spec"]["ports"][0]["targetPort"] == "http"
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_the_validator_is_not_vacuous(cache: Cache) -> None:
    docs = kubernetes_manifests(spec_from_image(function_image(cache), "r.example/a:1"))
    bad = copy.deepcopy(docs[0])
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad, "1.37")
    extra = copy.deepcopy(docs[0])
    extra["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1  # not a field: strict mode refuses it
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(extra, "1.37")


@pytest.mark.parametrize("kind", ["job", "daemonset"])
def test_job_and_daemonset(cache: Cache, kind: str) -> None:
    spec = spec_from_image(function_image(cache), "r.example/a:1", replicas=3)
    docs = kubernetes_manifests(spec, K8sOptions(kind=kind))  # type: ignore[arg-type]
    for doc in docs:
        for v in K8S_VERSIONS:
            validate(doc, v)
    if kind == "job":
        assert [d["kind"] for d in docs] == ["Job"]
        job = docs[0]["spec"]
        assert job["completions"] == 3 and job["template"]["spec"]["restartPolicy"] == "Never"
        assert "readinessProbe" not in job["template"]["spec"]["containers"][0]
    else:
        assert [d["kind"] for d in docs] == ["DaemonSet", "Service"]
        assert "replicas" not in docs[0]["spec"]


def test_keda_scaled_object(cache: Cache) -> None:
    spec = spec_from_image(function_image(cache), "r.example/a:1", replicas=1)
    keda = Keda("http://prometheus.monitoring:9090", max_replicas=8, threshold="25")
    docs = kubernetes_manifests(spec, K8sOptions(keda=keda, namespace="ml"))
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "ScaledObject"]
    for doc in docs[:2]:
        validate(doc, "1.37")
    assert "replicas" not in docs[0]["spec"]  # the HPA KEDA makes owns the count
    so = docs[2]
    assert so["apiVersion"] == "keda.sh/v1alpha1" and so["metadata"]["namespace"] == "ml"
    assert so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a"}
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (1, 8)
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"] == {
        "serverAddress": "http://prometheus.monitoring:9090",
        "query": 'sum(rate(gpuship_requests_total{app="a"}[2m]))',
        "threshold": "25",
    }
    # the label the query selects on is on the pods
    assert docs[0]["spec"]["template"]["metadata"]["labels"]["app"] == "a"
    with pytest.raises(GpushipError, match="needs --kind deployment"):
        kubernetes_manifests(spec, K8sOptions(kind="job", keda=keda))


def test_cpu_only_and_plain_images(cache: Cache) -> None:
    spec = spec_from_image(plain_image(cache), "r.example/train:2", gpus=0)
    assert spec.port == 9000 and not spec.function_runtime
    docs = kubernetes_manifests(spec)
    for doc in docs:
        validate(doc, "1.37")
    pod = docs[0]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert "resources" not in c and "tolerations" not in pod
    assert "livenessProbe" not in c and "annotations" not in docs[0]["spec"]["template"]["metadata"]
    assert "env" not in c and pod["terminationGracePeriodSeconds"] == 30
    with pytest.raises(GpushipError, match="function runtime"):
        kubernetes_manifests(spec, K8sOptions(keda=Keda("http://p:9090")))


def test_yaml_round_trips_and_port_override_reaches_the_runtime(cache: Cache) -> None:
    spec = spec_from_image(function_image(cache), "r.example/a:1", port=9090, env=["LOG_LEVEL=DEBUG"])
    text = to_yaml(kubernetes_manifests(spec))
    docs = list(yaml.safe_load_all(text))
    c = docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert c["ports"][0]["containerPort"] == 9090
    assert {"name": "PORT", "value": "9090"} in c["env"] and {"name": "LOG_LEVEL", "value": "DEBUG"} in c["env"]
    spec2 = spec_from_image(function_image(cache), "r.example/a:1", env=["SHUTDOWN_DELAY=0"])
    env2 = kubernetes_manifests(spec2)[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env2 == [{"name": "SHUTDOWN_DELAY", "value": "0"}]


def test_cli_writes_a_file_the_validator_cli_accepts(
    cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUSHIP_CACHE", str(cache.root))
    layout = write_oci_layout(function_image(cache), tmp_path / "layout", tag="torch-status")
    runner = CliRunner()
    out = tmp_path / "k8s"
    args = ["deploy", "k8s", f"oci:{layout}:torch-status", "--ref", "r.example/torch-status:1"]
    args += ["--shm-size", "2Gi", "--runtime-class", "nvidia"]
    res = runner.invoke(app, [*args, "-o", str(out)])
    assert res.exit_code == 0, res.output
    path = out / "torch-status.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", "1.37.0", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed for resource deployment/torch-status" in proc.stdout + proc.stderr
    # to stdout, same text
    res2 = runner.invoke(app, args)
    assert res2.exit_code == 0 and res2.stdout == path.read_text()
    # a local image without --ref: one clear line, exit 2
    res3 = runner.invoke(app, ["deploy", "k8s", f"oci:{layout}"])
    assert res3.exit_code == 2 and "pass --ref" in res3.output
