"""``gpuship deploy k8s|compose|slurm|ngc`` and ``gpuship export --format squashfs``."""

from __future__ import annotations

import contextlib
import sys
from enum import StrEnum
from pathlib import Path

import typer

from ..deploy import (
    ComposeOptions,
    DeploySpec,
    K8sOptions,
    Keda,
    NgcOptions,
    SlurmOptions,
    Toleration,
    compose_yaml,
    export_squashfs,
    kubernetes_manifests,
    ngc_script,
    slurm_script,
    spec_from_image,
    to_yaml,
    write_files,
)
from ..deploy.squashfs import COMPRESSIONS
from ..errors import GpushipError
from ..oci import Image, Index
from ..registry.options import RegistryOptions
from .app import app
from .console import cli_progress, err, handles_errors, info, state
from .regopts import CA_FILE, INSECURE
from .regopts import registry_options as regs

deploy_app = typer.Typer(
    help="Write ready-to-apply files that run an image on Kubernetes, Docker Compose, Slurm (pyxis/enroot) or "
    "NGC Base Command. The image is read for its port, entrypoint, workdir and whether it runs the gpuship "
    "function runtime (then health probes and metrics are wired up).",
    no_args_is_help=True,
)
app.add_typer(deploy_app, name="deploy")

IMAGE_HELP = (
    "The image: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG], a path to any of those, "
    "docker:NAME:TAG (an image in the Docker Engine), or registry:REF / a bare registry reference (read from the "
    "registry)."
)
REF_HELP = (
    "The reference the cluster pulls (REGISTRY/NAME:TAG). Default: IMAGE itself when it is a registry reference, "
    "or the NAME:TAG of a docker-archive:FILE:NAME:TAG."
)
OUT_HELP = "Directory to write the files into (made if missing). Default: print to stdout."
NAME_HELP = "Name of the workload (lowercase, digits, '-'). Default: from the image name."
GPUS_HELP = "GPUs per replica (0: none, no GPU reservation)."
SHM_HELP = "Size of /dev/shm (e.g. 8Gi, 2g). Default: the image's dev.gpuship.shm-size label, else 1Gi."
PORT_HELP = "Container port. Default: the runtime's PORT, else the image's first exposed TCP port."
ENV_HELP = "Extra environment KEY=VALUE (repeatable)."
MODEL_HELP = (
    "Where a mounted model of the image comes from, NAME=SOURCE (repeatable; the names are the image's "
    "[tool.gpuship] models mounts). Default: the image's own claim/host for it, else {default}."
)
PLATFORM_HELP = "Which platform of a multi-platform image to read (default linux/amd64, else the only one)."


class Kind(StrEnum):
    deployment = "deployment"
    job = "job"
    daemonset = "daemonset"


class ServiceType(StrEnum):
    ClusterIP = "ClusterIP"
    NodePort = "NodePort"
    LoadBalancer = "LoadBalancer"


class ExportFormat(StrEnum):
    squashfs = "squashfs"


def _status(msg: str):  # noqa: ANN202 - a Rich status or a no-op context
    return contextlib.nullcontext() if state.quiet else err.status(msg)


LOCAL_SCHEMES = ("oci:", "oci-archive:", "docker-archive:", "docker:", "podman:")
_SCHEMES = (*LOCAL_SCHEMES, "registry:")


def _source(image: str) -> str:
    """What to hand read_image: the ref as given, or ``registry:REF`` for a bare registry reference."""
    if image.startswith(_SCHEMES) or Path(image).exists():
        return image
    return "registry:" + image


def _pick(obj: Image | Index, platform: str | None) -> Image:
    if isinstance(obj, Image):
        return obj
    if platform:
        return obj.for_platform(platform)
    if len(obj.images) == 1:
        return obj.images[0]
    for img in obj.images:
        if (img.platform.os, img.platform.architecture) == ("linux", "amd64"):
            return img
    have = ", ".join(str(i.platform) for i in obj.images)
    raise GpushipError(f"the image has several platforms ({have})", "pick one with --platform")


def read_for_deploy(image: str, platform: str | None, registry: RegistryOptions = RegistryOptions()) -> Image:
    from ..transports import read_image  # when the command runs, not for --help

    with _status(f"reading {image}"):
        return _pick(read_image(_source(image), platform, registry=registry), platform)


def pull_ref(image: str, ref: str | None) -> str:
    """The reference a cluster pulls, from --ref or IMAGE."""
    if ref:
        return ref
    if image.startswith("registry:"):
        return image.removeprefix("registry:")
    if image.startswith("docker-archive:"):
        from ..oci.readers import parse_source  # when the command runs, not for --help

        _, _, name = parse_source(image)
        if name:
            return name
    elif not image.startswith(_SCHEMES) and not Path(image).exists():
        return image
    raise GpushipError(
        f"{image} is a local image; a cluster pulls images by reference",
        "push it (gpuship image convert IMAGE registry:REF) and pass --ref REF",
    )


def default_name(image: str, reference: str | None) -> str:
    """The workload's name: from the pulled reference, else from a local image's tag or file name."""
    from ..deploy.spec import dns_name, name_from_ref  # when the command runs, not for --help
    from ..oci.readers import parse_source  # when the command runs, not for --help

    if reference is not None:
        return name_from_ref(reference)
    _, path, tag = parse_source(image)
    if tag:
        return dns_name(tag.rsplit("/", 1)[-1].split(":", 1)[0])
    stem = path.resolve().name
    for suffix in (".tar", ".oci", ".docker", ".sqsh"):
        stem = stem.removesuffix(suffix)
    return dns_name(stem)


def _spec(
    image: str,
    ref: str | None,
    name: str | None,
    gpus: int,
    replicas: int,
    shm_size: str | None,
    port: int | None,
    env: list[str] | None,
    platform: str | None,
    need_ref: bool = True,
    models: list[str] | None = None,
    registry: RegistryOptions = RegistryOptions(),
) -> DeploySpec:
    local = image.startswith(LOCAL_SCHEMES) or (not image.startswith("registry:") and Path(image).exists())
    if need_ref:
        reference = pull_ref(image, ref)
    else:
        reference = ref or image.removeprefix("registry:")
    name = name or default_name(image, None if local and not ref else reference)
    img = read_for_deploy(image, platform, registry)
    return spec_from_image(
        img,
        reference,
        name=name,
        gpus=gpus,
        replicas=replicas,
        shm_size=shm_size,
        port=port,
        env=env or (),
        models=models or (),
    )


def _emit(files: dict[str, str], out: Path | None, executable: tuple[str, ...] = ()) -> None:
    if out is None:
        for text in files.values():
            sys.stdout.write(text)
        sys.stdout.flush()
        return
    for path in write_files(files, out, executable=executable):
        info(f"wrote {path}")


def _kv(pairs: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in pairs or []:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise GpushipError(f"{what} {p!r} is not KEY=VALUE", "e.g. nvidia.com/gpu.present=true")
        out[k] = v
    return out


@deploy_app.command("k8s")
@handles_errors
def k8s(
    image: str = typer.Argument(..., help=IMAGE_HELP),
    ref: str = typer.Option(None, "--ref", help=REF_HELP),
    out: Path = typer.Option(None, "--out", "-o", help=OUT_HELP),
    name: str = typer.Option(None, "--name", help=NAME_HELP),
    kind: Kind = typer.Option(
        Kind.deployment, "--kind", help="Deployment (a service), Job (runs to completion) or DaemonSet (one per node)."
    ),
    replicas: int = typer.Option(
        1, "--replicas", help="Replicas (Deployment), or completions run in parallel (Job). With KEDA: the minimum."
    ),
    gpus: int = typer.Option(1, "--gpus", help=GPUS_HELP + " Requested as the nvidia.com/gpu limit."),
    shm_size: str = typer.Option(None, "--shm-size", help=SHM_HELP + " A memory-backed emptyDir at /dev/shm."),
    port: int = typer.Option(None, "--port", help=PORT_HELP),
    env: list[str] = typer.Option(None, "--env", "-e", help=ENV_HELP),
    namespace: str = typer.Option(
        None, "--namespace", "-n", help="Namespace written into the objects (default: none, kubectl's)."
    ),
    runtime_class: str = typer.Option(
        None,
        "--runtime-class",
        help="runtimeClassName, e.g. nvidia (clusters where the NVIDIA runtime is not the default).",
    ),
    node_selector: list[str] = typer.Option(
        None,
        "--node-selector",
        help="Node label KEY=VALUE the pods need (repeatable), e.g. nvidia.com/gpu.present=true.",
    ),
    toleration: list[str] = typer.Option(
        None,
        "--toleration",
        help="Extra toleration KEY[=VALUE][:EFFECT] (repeatable). GPU pods always tolerate nvidia.com/gpu:NoSchedule.",
    ),
    service_type: ServiceType = typer.Option(
        ServiceType.ClusterIP, "--service-type", help="Type of the Service in front of the port."
    ),
    memory: str = typer.Option(
        None, "--memory", help="Memory request and limit (e.g. 16Gi); /dev/shm counts toward it."
    ),
    cpu: str = typer.Option(None, "--cpu", help="CPU request (e.g. 4)."),
    keda_prometheus: str = typer.Option(
        None, "--keda-prometheus", help="Prometheus URL: add a KEDA ScaledObject scaling on the runtime's request rate."
    ),
    max_replicas: int = typer.Option(10, "--max-replicas", help="KEDA: the most replicas."),
    keda_threshold: str = typer.Option(
        "10", "--keda-threshold", help="KEDA: requests per second one replica takes before another is added."
    ),
    keda_query: str = typer.Option(
        None, "--keda-query", help='KEDA: the PromQL query (default: sum(rate(gpuship_requests_total{app="NAME"}[2m])).'
    ),
    model: list[str] = typer.Option(
        None,
        "--model",
        help=MODEL_HELP.format(default="a PersistentVolumeClaim named NAME")
        + " SOURCE: pvc:CLAIM, or an absolute host path (a hostPath volume). Mounted read-only.",
    ),
    platform: str = typer.Option(None, "--platform", help=PLATFORM_HELP),
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
) -> None:
    """Kubernetes: a Deployment/Job/DaemonSet with GPU limits, /dev/shm, probes, a Service, optional KEDA."""
    spec = _spec(
        image, ref, name, gpus, replicas, shm_size, port, env, platform, models=model, registry=regs(insecure, ca_file)
    )
    opts = K8sOptions(
        kind=kind.value,
        namespace=namespace,
        runtime_class=runtime_class,
        node_selector=_kv(node_selector, "--node-selector"),
        tolerations=tuple(Toleration.parse(t) for t in toleration or ()),
        service_type=service_type.value,
        memory=memory,
        cpu=cpu,
        keda=Keda(keda_prometheus, max_replicas, keda_threshold, keda_query) if keda_prometheus else None,
    )
    docs = kubernetes_manifests(spec, opts)
    _emit({f"{spec.name}.yaml": to_yaml(docs, header=f"gpuship deploy k8s {spec.image}")}, out)


@deploy_app.command("compose")
@handles_errors
def compose(
    image: str = typer.Argument(..., help=IMAGE_HELP),
    ref: str = typer.Option(None, "--ref", help="The image name the engine runs (default: as for k8s)."),
    out: Path = typer.Option(None, "--out", "-o", help=OUT_HELP + " The file is compose.yaml."),
    name: str = typer.Option(None, "--name", help=NAME_HELP + " (the service name)"),
    gpus: int = typer.Option(1, "--gpus", help=GPUS_HELP + " Reserved as nvidia devices with the gpu capability."),
    all_gpus: bool = typer.Option(False, "--all-gpus", help="Reserve all the host's GPUs (count: all)."),
    shm_size: str = typer.Option(None, "--shm-size", help=SHM_HELP),
    port: int = typer.Option(None, "--port", help=PORT_HELP),
    host_port: int = typer.Option(None, "--host-port", help="Host port to publish on (default: the container port)."),
    env: list[str] = typer.Option(None, "--env", "-e", help=ENV_HELP),
    model: list[str] = typer.Option(
        None,
        "--model",
        help=MODEL_HELP.format(default="./models/NAME beside compose.yaml")
        + " SOURCE: a host directory, bind-mounted read-only.",
    ),
    platform: str = typer.Option(None, "--platform", help=PLATFORM_HELP),
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
) -> None:
    """Docker Compose: GPU device reservation, shm_size, memlock/stack ulimits, a health check on /readyz."""
    spec = _spec(
        image, ref, name, gpus, 1, shm_size, port, env, platform, models=model, registry=regs(insecure, ca_file)
    )
    _emit({"compose.yaml": compose_yaml(spec, ComposeOptions(host_port=host_port, all_gpus=all_gpus))}, out)


@deploy_app.command("slurm")
@handles_errors
def slurm(
    image: str = typer.Argument(..., help=IMAGE_HELP),
    out: Path = typer.Option(None, "--out", "-o", help=OUT_HELP + " The file is NAME.sbatch."),
    name: str = typer.Option(None, "--name", help=NAME_HELP + " (the job name)"),
    image_file: str = typer.Option(
        None,
        "--image-file",
        help="The squashfs file srun runs (default NAME.sqsh beside the script; make it with gpuship export).",
    ),
    gpus: int = typer.Option(1, "--gpus", help=GPUS_HELP + " As #SBATCH --gpus-per-node."),
    nodes: int = typer.Option(1, "--nodes", help="Nodes (one task each)."),
    port: int = typer.Option(None, "--port", help=PORT_HELP),
    env: list[str] = typer.Option(
        None, "--env", "-e", help=ENV_HELP + " Passed with --container-env so they win over the image's."
    ),
    mount: list[str] = typer.Option(
        None, "--mount", help="Extra bind mount SRC:DST[:FLAGS] (repeatable); $RESULTS_DIR is always at /results."
    ),
    time: str = typer.Option(None, "--time", help="#SBATCH --time (e.g. 01:00:00)."),
    partition: str = typer.Option(None, "--partition", help="#SBATCH --partition."),
    account: str = typer.Option(None, "--account", help="#SBATCH --account."),
    cpus_per_task: int = typer.Option(None, "--cpus-per-task", help="#SBATCH --cpus-per-task."),
    mem: str = typer.Option(None, "--mem", help="#SBATCH --mem (e.g. 64G)."),
    model: list[str] = typer.Option(
        None,
        "--model",
        help=MODEL_HELP.format(default="$MODELS_DIR/NAME ($MODELS_DIR defaults to ./models beside the script)")
        + " SOURCE: a directory on the nodes, bind-mounted read-only.",
    ),
    platform: str = typer.Option(None, "--platform", help=PLATFORM_HELP),
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
) -> None:
    """Slurm: an sbatch script running the image's squashfs file with pyxis (srun --container-image)."""
    spec = _spec(image, None, name, gpus, 1, None, port, env, platform, False, model, registry=regs(insecure, ca_file))
    opts = SlurmOptions(
        image_file=image_file or "",
        mounts=tuple(mount or ()),
        time=time,
        partition=partition,
        account=account,
        cpus_per_task=cpus_per_task,
        memory=mem,
        nodes=nodes,
    )
    _emit({f"{spec.name}.sbatch": slurm_script(spec, opts)}, out, executable=(f"{spec.name}.sbatch",))


@deploy_app.command("ngc")
@handles_errors
def ngc(
    image: str = typer.Argument(..., help=IMAGE_HELP),
    ref: str = typer.Option(None, "--ref", help="The NGC registry reference (nvcr.io/ORG[/TEAM]/NAME:TAG)."),
    out: Path = typer.Option(None, "--out", "-o", help=OUT_HELP + " The file is NAME-ngc.sh."),
    name: str = typer.Option(None, "--name", help=NAME_HELP + " (the job name)"),
    gpus: int = typer.Option(1, "--gpus", help="GPUs (chooses the default instance)."),
    instance: str = typer.Option(None, "--instance", help="Instance type (default dgxa100.80g.<gpus>.norm)."),
    ace: str = typer.Option(None, "--ace", help="The ACE to run in."),
    org: str = typer.Option(None, "--org", help="NGC org."),
    team: str = typer.Option(None, "--team", help="NGC team."),
    result: str = typer.Option("/results", "--result", help="Directory kept as the job's result."),
    total_runtime: str = typer.Option(None, "--total-runtime", help="Job time limit (e.g. 1h, 2D)."),
    port: int = typer.Option(None, "--port", help=PORT_HELP),
    env: list[str] = typer.Option(None, "--env", "-e", help=ENV_HELP),
    platform: str = typer.Option(None, "--platform", help=PLATFORM_HELP),
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
) -> None:
    """NGC Base Command: the `ngc batch run` command line (image, instance, commandline, result, port)."""
    spec = _spec(image, ref, name, gpus, 1, None, port, env, platform, registry=regs(insecure, ca_file))
    opts = NgcOptions(instance=instance, ace=ace, org=org, team=team, result=result, total_runtime=total_runtime)
    _emit({f"{spec.name}-ngc.sh": ngc_script(spec, opts)}, out, executable=(f"{spec.name}-ngc.sh",))


@app.command("export")
@handles_errors
def export(
    image: str = typer.Argument(..., help=IMAGE_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="The file to write (e.g. image.sqsh)."),
    format: ExportFormat = typer.Option(
        ExportFormat.squashfs,
        "--format",
        help="squashfs: one file enroot and pyxis run (srun --container-image=./image.sqsh).",
    ),
    compression: str = typer.Option(
        "gzip", "--compression", help="squashfs compression: " + ", ".join(COMPRESSIONS) + "."
    ),
    platform: str = typer.Option(None, "--platform", help=PLATFORM_HELP),
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
) -> None:
    """Export an image's root filesystem (with enroot's /etc/rc and /etc/environment) as a reproducible squashfs."""
    img = read_for_deploy(image, platform, regs(insecure, ca_file))
    with cli_progress() as progress:
        progress.step("exporting…")
        export_squashfs(img, output, compression=compression, progress=progress)
    info(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, {img.platform})")
