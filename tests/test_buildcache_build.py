"""``gpuship build --cache registry:REF`` end to end, as CI runs it: the real CLI, a registry with TLS and a login
in Docker's config.json, a fresh machine (an empty gpuship cache and uv cache) that may not reach the package
index (HTTPS goes to a dead proxy; the loopback registry is exempt)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from build_support import copy_example, gpuship
from gpuship.cache import Cache
from gpuship.registry import Registry, RegistryOptions
from gpuship.registry.buildcache import open_store
from test_registry_support import (
    LocalRegistry,
    docker_login,
    free_port,
    make_image,
    secret,
    tls_registry_with_users,
)

pytestmark = pytest.mark.registry

USER = "ciuser"
PASSWORD = secret("ci-pw")


@pytest.fixture(scope="module")
def ci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRegistry, dict[str, str]]]:
    """The registry, and the environment a CI job gives gpuship: the login in ``$DOCKER_CONFIG/config.json``
    (and, under ``CA``, the registry's CA certificate for ``--ca-file``)."""
    root = tmp_path_factory.mktemp("ci-registry")
    with tls_registry_with_users(root, {USER: PASSWORD}) as (reg, tls):
        docker = docker_login(root / "docker", reg.host, USER, PASSWORD)
        yield reg, {"DOCKER_CONFIG": str(docker), "CA": str(tls.ca_cert)}


def offline(tmp_path: Path) -> dict[str, str]:
    """No HTTPS but to the loopback registry (the package index is out of reach), and an empty uv cache."""
    dead = f"http://127.0.0.1:{free_port()}"
    return {
        "HTTPS_PROXY": dead,
        "https_proxy": dead,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
    }


def ci_build(
    project: Path, ci_env: dict[str, str], *args: str, cache: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``gpuship build PROJECT ARGS`` as the CI job runs it: the registry's CA and the login (``env`` on top)."""
    return gpuship("build", "--ca-file", ci_env["CA"], str(project), *args, cache=cache, env={**ci_env, **(env or {})})


def built(proc) -> str:  # type: ignore[no-untyped-def]
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout.strip().splitlines()[-1]


def layer_rows(stderr: str) -> list[str]:
    """The rows of the layer tables: group, short digest, sizes, new/cached, contents."""
    return [
        line
        for line in stderr.splitlines()
        if re.match(r"(\S+)\s+[0-9a-f]{12}\s", line) and line.split()[0] in LAYER_GROUPS
    ]


LAYER_GROUPS = {"base", "venv", "cuda", "frameworks", "deps", "project", "gpu-check", "app", "runtime", "model"}


def wheel_digests(project: Path) -> set[str]:
    lock = tomllib.loads((project / "gpuship.lock").read_text())
    found = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "sha256" and isinstance(v, str):
                    found.add(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(lock)
    assert found, "the lock names no file"
    return found


def blobs(cache: Path) -> set[str]:
    d = cache / "blobs" / "sha256"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def image_layers(layout: Path) -> set[str]:
    """Every layer digest of the images in an OCI layout."""
    out = set()
    index = json.loads((layout / "index.json").read_text())
    todo = [m["digest"] for m in index["manifests"]]
    while todo:
        doc = json.loads((layout / "blobs" / "sha256" / todo.pop()[7:]).read_text())
        todo += [m["digest"] for m in doc.get("manifests", [])]
        out |= {x["digest"][7:] for x in doc.get("layers", [])}
    return out


def test_a_fresh_machine_builds_both_platforms_from_the_cache_without_the_index(ci, tmp_path, build_cache):
    reg, env = ci
    project = copy_example("numpy-hello", tmp_path)
    cache_ref = f"registry:{reg.host}/ci/numpy-hello:cache"
    both = ("--platform", "linux/amd64,linux/arm64")
    first = built(
        ci_build(
            project,
            env,
            *both,
            "-o",
            f"oci:{tmp_path / 'first'}",
            cache=build_cache,
            env={"GPUSHIP_BUILD_CACHE": cache_ref},
        )
    )

    # fresh CI machines, the index out of reach: everything comes from the cache; nothing is built or compressed.
    # The image goes up as its two configs and three manifests: its layers are in the cache's repository already
    # (same repository: nothing is sent) or mounted from there (another repository of the same registry)
    for n, (repo, sent) in enumerate(
        (("ci/numpy-hello", "12 already there, 0 mounted"), ("ci/other", "0 already there, 12 mounted"))
    ):
        fresh = tmp_path / f"fresh{n}"
        proc = ci_build(
            project, env, *both, "--locked", "-o", f"registry:{reg.host}/{repo}:1",
            cache=fresh, env={**offline(tmp_path), "GPUSHIP_BUILD_CACHE": cache_ref},
        )  # fmt: skip
        assert built(proc) == first
        rows = layer_rows(proc.stderr)
        assert len(rows) == 14 and all(" cached " in r for r in rows), proc.stderr
        said = " ".join(proc.stderr.split())
        assert f"2 blobs uploaded (0.0 MB), {sent}" in said, said
        assert "is up to date" in said  # the cache it read is the cache it would write
        assert not blobs(fresh) & image_layers(tmp_path / "first"), "a layer was pulled or built"
        assert not blobs(fresh) & wheel_digests(project), "a wheel was downloaded"

    # another fresh machine with a local output pulls the layers (checked) and writes the same image
    again = tmp_path / "again"
    proc = ci_build(
        project, env, *both, "--locked", "-o", f"oci:{tmp_path / 'again-layout'}",
        cache=again, env={**offline(tmp_path), "GPUSHIP_BUILD_CACHE": cache_ref},
    )  # fmt: skip
    assert built(proc) == first
    assert image_layers(tmp_path / "first") <= blobs(again)
    assert not blobs(again) & wheel_digests(project)


def _write_lie(env: dict[str, str], monkeypatch, honest: str, target: str, how) -> str:  # type: ignore[no-untyped-def]
    """The honest mapping changed by ``how(mapping)``, written as ``target`` (every blob it names is mounted into
    target's repository from the honest one)."""
    monkeypatch.setenv("DOCKER_CONFIG", env["DOCKER_CONFIG"])
    scratch = Cache(Path(env["DOCKER_CONFIG"]).parent / "scratch")
    with Registry(RegistryOptions(ca_file=Path(env["CA"])), scratch) as registry:
        source = open_store(honest, registry)
        mapping = source.read()
        assert mapping is not None
        open_store(target, registry).write(how(mapping), {}, scratch, mount_from=[source.repository])
    return f"registry:{target}"


def _numpy_blob(mapping):  # type: ignore[no-untyped-def]
    """The key of numpy's compressed layer (the biggest blob) and that blob."""
    blob = max(mapping.blobs, key=lambda b: b.size)
    return next(k for k, v in mapping.layers.items() if v["digest"] == blob.digest), blob


def _pointing(mapping, key: str, digest: str, size: int):  # type: ignore[no-untyped-def]
    layers = {k: dict(v) for k, v in mapping.layers.items()}
    layers[key] = {**layers[key], "digest": digest, "size": size}
    return replace(mapping, layers=layers)


def test_wrong_missing_or_mismatched_cache_entries_cost_time_not_correctness(ci, tmp_path, build_cache, monkeypatch):
    reg, env = ci
    project = copy_example("numpy-hello", tmp_path)
    honest = f"{reg.host}/fb/numpy-hello:honest"
    digest = built(
        ci_build(project, env, "-o", f"oci:{tmp_path / 'honest'}", "--cache", f"registry:{honest}", cache=build_cache)
    )
    wheels = wheel_digests(project) & blobs(build_cache)

    def machine(name: str) -> Path:
        """A fresh machine with numpy's wheel already there: a layer it builds again needs no download."""
        root = tmp_path / name / "blobs" / "sha256"
        root.mkdir(parents=True)
        for w in wheels:
            shutil.copy(build_cache / "blobs" / "sha256" / w, root / w)
        return root.parent.parent

    def other_layers_blob(mapping):  # type: ignore[no-untyped-def]
        key, big = _numpy_blob(mapping)
        small = min((b for b in mapping.blobs if b.digest != big.digest), key=lambda b: b.size)
        return _pointing(mapping, key, small.digest, small.size)  # numpy's key names the app layer's blob

    # a blob that is in the repository, with the size the lie gives it, but another layer's content
    stray = make_image(Cache(tmp_path / "stray"), [{"opt/stray.bin": os.urandom(300_000)}])
    with Registry(RegistryOptions(ca_file=Path(env["CA"])), Cache(tmp_path / "stray")) as registry:
        monkeypatch.setenv("DOCKER_CONFIG", env["DOCKER_CONFIG"])
        registry.push(stray, f"{reg.host}/fb/mismatch:stray")
    stray_layer = stray.layers[0]

    def unpacks_otherwise(mapping):  # type: ignore[no-untyped-def]
        key, big = _numpy_blob(mapping)
        lie = _pointing(mapping, key, stray_layer.digest, stray_layer.size)
        return replace(lie, blobs=(*lie.blobs, replace(big, digest=stray_layer.digest, size=stray_layer.size)))

    wrong = _write_lie(env, monkeypatch, honest, f"{reg.host}/fb/wrong:cache", other_layers_blob)
    missing = _write_lie(env, monkeypatch, honest, f"{reg.host}/fb/missing:cache", lambda m: m)
    _, big = _numpy_blob(open_mapping(env, honest))
    link = reg.storage / "docker/registry/v2/repositories/fb/missing/_layers/sha256" / big.digest[7:]
    shutil.rmtree(link)  # the repository no longer holds numpy's blob
    mismatch = _write_lie(env, monkeypatch, honest, f"{reg.host}/fb/mismatch:cache", unpacks_otherwise)

    cases = [
        ("wrong", wrong, f"oci:{tmp_path / 'o1'}", "diff IDs"),
        ("wrong", wrong, f"registry:{reg.host}/fb/out:1", "diff IDs"),
        ("missing", missing, f"oci:{tmp_path / 'o2'}", "lacks"),
        ("missing", missing, f"registry:{reg.host}/fb/out:2", "lacks"),
        ("mismatch", mismatch, f"oci:{tmp_path / 'o3'}", "unpacks to"),
    ]
    for n, (case, ref, output, said) in enumerate(cases):
        proc = ci_build(
            project, env, "--locked", "-o", output, "--cache", ref, "--cache-mode", "read",  # the lie stays
            cache=machine(f"m{n}"),
        )  # fmt: skip
        assert built(proc) == digest, (case, output, proc.stderr[-3000:])  # the same image: correct
        assert said in " ".join(proc.stderr.split()), (case, output, proc.stderr[-3000:])  # and it says why
        rebuilt = [r.split()[0] for r in layer_rows(proc.stderr) if " new " in r]
        assert "deps" in rebuilt, (case, output, rebuilt)  # the layer the lie was about was built again


def open_mapping(env: dict[str, str], ref: str):  # type: ignore[no-untyped-def]
    with Registry(
        RegistryOptions(ca_file=Path(env["CA"])), Cache(Path(env["DOCKER_CONFIG"]).parent / "scratch")
    ) as registry:
        mapping = open_store(ref, registry).read()
    assert mapping is not None
    return mapping


@pytest.mark.slow
def test_numba_matmul_again_on_a_wiped_machine_downloads_no_wheel_and_compresses_no_layer(ci, tmp_path, monkeypatch):
    """The issue's test: build numba-matmul with the cache, wipe gpuship's cache and uv's (private ones), build
    again with a registry output: no wheel downloaded (the index is out of reach), no layer built or compressed,
    the same digest, and only the config and the manifest sent."""
    reg, env = ci
    project = copy_example("numba-matmul", tmp_path)
    machine, uv = tmp_path / "gpuship-cache", tmp_path / "uv-cache"
    cache_env = {**env, "GPUSHIP_BUILD_CACHE": f"registry:{reg.host}/key/numba-matmul:cache"}
    first = built(
        ci_build(
            project,
            cache_env,
            "-o",
            f"registry:{reg.host}/key/numba-matmul:1",
            cache=machine,
            env={"UV_CACHE_DIR": str(uv)},
        )
    )
    assert wheel_digests(project) <= blobs(machine)  # the first build did download the wheels
    shutil.rmtree(machine)
    shutil.rmtree(uv, ignore_errors=True)

    proc = ci_build(
        project, cache_env, "--locked", "-o", f"registry:{reg.host}/key/copy:1", cache=machine, env=offline(tmp_path)
    )
    assert built(proc) == first
    rows = layer_rows(proc.stderr)
    assert len(rows) >= 10 and all(" cached " in r for r in rows), proc.stderr
    said = " ".join(proc.stderr.split())
    assert f"1 blobs uploaded (0.0 MB), 0 already there, {len(rows)} mounted" in said, said  # the config
    assert not blobs(machine) & wheel_digests(project), "a wheel was downloaded"
    monkeypatch.setenv("DOCKER_CONFIG", env["DOCKER_CONFIG"])
    with Registry(RegistryOptions(ca_file=Path(env["CA"])), Cache(tmp_path / "look")) as registry:
        mapping = open_store(f"{reg.host}/key/numba-matmul:cache", registry).read()
    assert mapping is not None
    made = {str(v["digest"])[7:] for v in mapping.layers.values()}
    assert not blobs(machine) & made, "a layer was built, compressed or pulled"
