"""Kubernetes manifests for a GPU workload: a Deployment (or Job, or DaemonSet), its Service, and optionally a
KEDA ScaledObject that scales on the function runtime's request rate.

GPU facts baked in (see /work/shared/notes/gpu-facts.md): GPUs are requested as the device plugin's
``nvidia.com/gpu`` extended resource (limits only; requests default to limits); ``/dev/shm`` is 64 MB in a
container unless a memory-backed ``emptyDir`` is mounted there (its size counts toward the pod's memory);
GPU nodes are often tainted ``nvidia.com/gpu:NoSchedule``, so GPU pods tolerate that taint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import yaml

from ..errors import GpushipError
from .spec import DeploySpec, ModelVolume, k8s_quantity

Kind = Literal["deployment", "job", "daemonset"]
GPU_RESOURCE = "nvidia.com/gpu"
#: Seconds the function runtime keeps serving after SIGTERM in Kubernetes (its SHUTDOWN_DELAY).
SHUTDOWN_DELAY = 5


@dataclass(frozen=True)
class Toleration:
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str = ""
    effect: str = "NoSchedule"

    @classmethod
    def parse(cls, text: str) -> Toleration:
        """``KEY[=VALUE][:EFFECT]`` (effect NoSchedule, PreferNoSchedule or NoExecute; default NoSchedule)."""
        head, _, effect = text.partition(":")
        key, sep, value = head.partition("=")
        effect = effect or "NoSchedule"
        if not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise GpushipError(f"--toleration {text!r} is not KEY[=VALUE][:EFFECT]", "e.g. sku=gpu:NoSchedule")
        return cls(key, "Equal" if sep else "Exists", value, effect)

    def to_json(self) -> dict[str, str]:
        d = {"key": self.key, "operator": self.operator, "effect": self.effect}
        if self.operator == "Equal":
            d["value"] = self.value
        return d


@dataclass(frozen=True)
class Keda:
    """A KEDA ScaledObject on the Prometheus rate of ``gpuship_requests_total``."""

    server: str
    max_replicas: int = 10
    threshold: str = "10"
    query: str | None = None

    def query_for(self, name: str) -> str:
        return self.query or f'sum(rate(gpuship_requests_total{{app="{name}"}}[2m]))'


@dataclass(frozen=True)
class K8sOptions:
    kind: Kind = "deployment"
    namespace: str | None = None
    runtime_class: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    memory: str | None = None
    cpu: str | None = None
    keda: Keda | None = None
    #: Seconds between SIGTERM and SIGKILL (default 30; for the function runtime 35: its SHUTDOWN_DELAY of 5 s,
    #: while endpoints are updated, plus its 25 s GRACEFUL_TIMEOUT for in-flight requests, plus margin).
    grace_seconds: int | None = None


def _labels(name: str) -> dict[str, str]:
    # `app` too: Prometheus' usual pod relabelling turns pod labels into metric labels, which the KEDA query uses.
    return {"app.kubernetes.io/name": name, "app": name}


def _meta(spec: DeploySpec, opts: K8sOptions, extra: Mapping[str, str] | None = None) -> dict[str, object]:
    meta: dict[str, object] = {"name": spec.name}
    if opts.namespace:
        meta["namespace"] = opts.namespace
    meta["labels"] = {**_labels(spec.name), "app.kubernetes.io/managed-by": "gpuship", **(extra or {})}
    return meta


def _container(spec: DeploySpec, opts: K8sOptions, probes: bool) -> dict[str, object]:
    c: dict[str, object] = {"name": spec.name, "image": spec.image, "imagePullPolicy": "IfNotPresent"}
    if spec.port is not None:
        c["ports"] = [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}]
    env = list(spec.env)
    if (
        spec.function_runtime
        and not any(k == "SHUTDOWN_DELAY" for k, _ in env)
        and "SHUTDOWN_DELAY" not in spec.image_env
    ):
        # keep serving 5 s after SIGTERM with /readyz at 503 while the Service drops the pod from its endpoints
        env.append(("SHUTDOWN_DELAY", str(SHUTDOWN_DELAY)))
    if env:
        c["env"] = [{"name": k, "value": v} for k, v in env]
    limits: dict[str, object] = {}
    requests: dict[str, object] = {}
    if spec.gpus:
        limits[GPU_RESOURCE] = spec.gpus
    if opts.memory:
        limits["memory"] = opts.memory
        requests["memory"] = opts.memory
    if opts.cpu:
        requests["cpu"] = opts.cpu
    resources: dict[str, object] = {}
    if limits:
        resources["limits"] = limits
    if requests:
        resources["requests"] = requests
    if resources:
        c["resources"] = resources
    c["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}] + [
        {"name": m.volume_name, "mountPath": m.path, "readOnly": True} for m in spec.models
    ]
    if probes and spec.function_runtime and spec.port is not None:
        # /healthz answers as soon as the server listens (the function imports in the background), so
        # liveness never kills a pod that is still importing torch; /readyz waits for the warm-up call.
        c["livenessProbe"] = {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        }
        c["readinessProbe"] = {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        }
    return c


def _pod_spec(spec: DeploySpec, opts: K8sOptions, probes: bool, restart: str | None) -> dict[str, object]:
    pod: dict[str, object] = {}
    if opts.runtime_class:
        pod["runtimeClassName"] = opts.runtime_class
    if opts.node_selector:
        pod["nodeSelector"] = dict(opts.node_selector)
    tolerations = list(opts.tolerations)
    if spec.gpus and not any(t.key == GPU_RESOURCE for t in tolerations):
        tolerations.insert(0, Toleration(GPU_RESOURCE))
    if tolerations:
        pod["tolerations"] = [t.to_json() for t in tolerations]
    if restart:
        pod["restartPolicy"] = restart
    if opts.grace_seconds is not None:
        pod["terminationGracePeriodSeconds"] = opts.grace_seconds
    else:
        pod["terminationGracePeriodSeconds"] = 35 if spec.function_runtime else 30
    pod["containers"] = [_container(spec, opts, probes)]
    pod["volumes"] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": k8s_quantity(spec.shm_size)}},
        *(model_volume(m) for m in spec.models),
    ]
    return pod


def model_volume(m: ModelVolume) -> dict[str, object]:
    """A mounted model's volume: ``--model NAME=pvc:CLAIM`` or ``=/host/dir``, else the image's ``claim``, else its
    ``host`` (a hostPath), else a PersistentVolumeClaim named NAME."""
    source = m.source or (f"pvc:{m.claim}" if m.claim else m.host) or f"pvc:{m.name}"
    if source.startswith("pvc:"):
        return {"name": m.volume_name, "persistentVolumeClaim": {"claimName": source[4:], "readOnly": True}}
    return {"name": m.volume_name, "hostPath": {"path": source, "type": "Directory"}}


def _template(spec: DeploySpec, opts: K8sOptions, probes: bool, restart: str | None) -> dict[str, object]:
    meta: dict[str, object] = {"labels": _labels(spec.name)}
    if spec.function_runtime and spec.port is not None:
        meta["annotations"] = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(spec.port),
            "prometheus.io/path": "/metrics",
        }
    return {"metadata": meta, "spec": _pod_spec(spec, opts, probes, restart)}


def workload(spec: DeploySpec, opts: K8sOptions) -> dict[str, object]:
    """The Deployment, Job or DaemonSet."""
    selector = {"matchLabels": {"app.kubernetes.io/name": spec.name}}
    if opts.kind == "deployment":
        dspec: dict[str, object] = {
            "replicas": spec.replicas,
            "selector": selector,
            "template": _template(spec, opts, True, None),
        }
        if opts.keda is not None:
            del dspec["replicas"]  # KEDA's HPA owns it; re-applying the file must not reset the count
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(spec, opts), "spec": dspec}
    if opts.kind == "daemonset":
        return {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": _meta(spec, opts),
            "spec": {"selector": selector, "template": _template(spec, opts, True, None)},
        }
    if opts.kind == "job":
        job_spec: dict[str, object] = {"backoffLimit": 2, "template": _template(spec, opts, False, "Never")}
        if spec.replicas > 1:
            job_spec = {"completions": spec.replicas, "parallelism": spec.replicas, **job_spec}
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(spec, opts), "spec": job_spec}
    raise GpushipError(f"unknown kind {opts.kind!r}", "use deployment, job or daemonset")


def service(spec: DeploySpec, opts: K8sOptions) -> dict[str, object]:
    assert spec.port is not None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, opts),
        "spec": {
            "type": opts.service_type,
            "selector": {"app.kubernetes.io/name": spec.name},
            "ports": [{"name": "http", "port": spec.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def scaled_object(spec: DeploySpec, opts: K8sOptions) -> dict[str, object]:
    keda = opts.keda
    assert keda is not None
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(spec, opts),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicaCount": spec.replicas,
            "maxReplicaCount": keda.max_replicas,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": keda.server,
                        "query": keda.query_for(spec.name),
                        "threshold": keda.threshold,
                    },
                }
            ],
        },
    }


def kubernetes_manifests(spec: DeploySpec, opts: K8sOptions = K8sOptions()) -> list[dict[str, object]]:
    """The objects to apply, in apply order."""
    if opts.keda is not None:
        if opts.kind != "deployment":
            raise GpushipError(f"KEDA scaling needs --kind deployment, not {opts.kind}", "drop --keda-prometheus")
        if not spec.function_runtime:
            raise GpushipError(
                "KEDA scaling reads the function runtime's gpuship_requests_total, and this image does not run it",
                "use entrypoint = { function = ... } or drop --keda-prometheus",
            )
        if opts.keda.max_replicas < max(spec.replicas, 1):
            raise GpushipError(f"--max-replicas {opts.keda.max_replicas} is below --replicas {spec.replicas}")
    docs = [workload(spec, opts)]
    if spec.port is not None and opts.kind != "job":
        docs.append(service(spec, opts))
    if opts.keda is not None:
        docs.append(scaled_object(spec, opts))
    return docs


class _Dumper(yaml.SafeDumper):
    """Block style, insertion order, and lists indented under their key (as kubectl writes them)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def to_yaml(docs: Sequence[Mapping[str, object]], header: str = "") -> str:
    body = "---\n".join(
        yaml.dump(dict(d), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120) for d in docs
    )
    return (f"# {header}\n" if header else "") + body
