"""docs/ci.md's recipes work as written: the GitHub Actions workflow and the GitLab CI job are linted (yamllint,
and their services' schemas through check-jsonschema), then their gpuship commands run, in order, the way the
runner would run them — a fresh machine (empty gpuship cache), the login the recipe makes (Docker's config.json
through ``gpuship login``; a containers auth file through ``REGISTRY_AUTH_FILE``), a registry with TLS — against
a local registry standing in for ghcr.io and the GitLab registry."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from build_support import ROOT, copy_example, gpuship
from test_registry_support import LocalRegistry, docker_login, secret, tls_registry_with_users

pytestmark = pytest.mark.registry

DOC = ROOT / "docs" / "ci.md"
BIN = Path(sys.executable).parent
USER = "ci-bot"
PASSWORD = secret("ci-token")
YAMLLINT = "{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}}}"


def recipes() -> tuple[str, str]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 2, "docs/ci.md has the GitHub workflow, then the GitLab job"
    return blocks[0], blocks[1]


@pytest.mark.parametrize("which,schema", [(0, "vendor.github-workflows"), (1, "vendor.gitlab-ci")])
def test_the_recipes_are_valid_yaml_for_their_service(which, schema, tmp_path):
    path = tmp_path / ("workflow.yml" if which == 0 else ".gitlab-ci.yml")
    path.write_text(recipes()[which])
    lint = subprocess.run([BIN / "yamllint", "-s", "-d", YAMLLINT, str(path)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    check = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", schema, str(path)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRegistry, Path]]:
    """A registry with TLS and a user; and a CA bundle that trusts it besides the system's (SSL_CERT_FILE)."""
    root = tmp_path_factory.mktemp("ci-docs-registry")
    with tls_registry_with_users(root, {USER: PASSWORD}) as (reg, tls):
        bundle = root / "bundle.pem"
        system = Path("/etc/ssl/certs/ca-certificates.crt")
        bundle.write_text((system.read_text() if system.is_file() else "") + tls.ca_cert.read_text())
        yield reg, bundle


GITHUB = {
    "github.repository": "acme/numpy-hello",
    "github.sha": "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
    "github.event_name == 'pull_request' && 'read' || 'readwrite'": "readwrite",
    "github.actor": USER,
    "secrets.GITHUB_TOKEN": PASSWORD,
}


def _github(text: str, host: str) -> str:
    """The workflow's expressions as GitHub would fill them in; ghcr.io is the local registry."""

    def expr(m: re.Match[str]) -> str:
        key = m.group(1).strip()
        assert key in GITHUB, f"docs/ci.md uses ${{{{ {key} }}}}, which this test does not know"
        return GITHUB[key]

    return re.sub(r"\$\{\{(.*?)\}\}", expr, text).replace("ghcr.io", host)


def _run(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{script}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def _machine(tmp_path: Path, bundle: Path, name: str) -> dict[str, str]:
    """A fresh runner: its own empty gpuship cache and Docker config, gpuship on the PATH."""
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "GPUSHIP_CACHE": str(tmp_path / name / "gpuship-cache"),
        "DOCKER_CONFIG": str(tmp_path / name / "docker"),
        "SSL_CERT_FILE": str(bundle),
        "HOME": str(tmp_path / name / "home"),
    }


@pytest.fixture
def project(registry, tmp_path, build_cache) -> Path:
    """numpy-hello with its lock committed, and both recipes' caches filled by an earlier run (as on main)."""
    reg, bundle = registry
    project = copy_example("numpy-hello", tmp_path)
    login = docker_login(tmp_path / "warm-docker", reg.host, USER, PASSWORD)
    for repo in ("acme/numpy-hello", "gl/numpy-hello"):
        proc = gpuship(
            "build", str(project), "--platform", "linux/amd64,linux/arm64", "-o", f"oci:{tmp_path / 'warm'}",
            "--cache", f"registry:{reg.host}/{repo}:buildcache",
            cache=build_cache, env={"DOCKER_CONFIG": str(login), "SSL_CERT_FILE": str(bundle)},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
    return project


def test_the_github_workflow_runs_as_written(registry, project, tmp_path):
    reg, bundle = registry
    workflow = yaml.safe_load(_github(recipes()[0], reg.host))
    job = workflow["jobs"]["image"]
    env = {**_machine(tmp_path, bundle, "github"), **{k: str(v) for k, v in job["env"].items()}}
    ran = []
    for step in job["steps"]:
        script = step.get("run")
        if script is None or "uv tool install" in script:
            continue  # actions and the install: the runner's business; gpuship is installed here
        ran.append(_run(script, project, env))
    assert len(ran) == 3  # login, build and push, manifests
    assert "2 blobs uploaded (0.0 MB)" in " ".join(ran[1].stderr.split())  # the layers came from the cache
    assert reg.tags("acme/numpy-hello") == sorted(["buildcache", GITHUB["github.sha"]])
    manifest = (project / "k8s" / "numpy-hello.yaml").read_text()
    assert f"image: {reg.host}/acme/numpy-hello:{GITHUB['github.sha']}" in manifest


def test_the_gitlab_job_runs_as_written(registry, project, tmp_path):
    reg, bundle = registry
    doc = yaml.safe_load(recipes()[1])
    job = doc["image-build"]
    ci = {
        "CI_REGISTRY": reg.host,
        "CI_REGISTRY_IMAGE": f"{reg.host}/gl/numpy-hello",
        "CI_REGISTRY_USER": USER,
        "CI_REGISTRY_PASSWORD": PASSWORD,
        "CI_COMMIT_SHORT_SHA": "4b825dc6",
        "CI_PROJECT_DIR": str(project),
    }
    env = {**_machine(tmp_path, bundle, "gitlab"), **ci}
    for key, value in {**doc["variables"], **job.get("variables", {})}.items():
        env[key] = re.sub(r"\$(\w+)", lambda m: env[m.group(1)], str(value))  # as GitLab expands them
    script = [line for line in job["before_script"] if not re.search(r"apt-get|curl|uv tool install", line)]
    assert not script, "before_script only sets up the runner"
    proc = _run("\n".join(job["script"]), project, env)
    assert (Path(env["HOME"]) / ".config/containers/auth.json").is_file()  # the login went to REGISTRY_AUTH_FILE
    assert not (Path(env["DOCKER_CONFIG"]) / "config.json").exists()
    said = " ".join(proc.stderr.split())
    assert "2 blobs uploaded (0.0 MB)" in said, said[-3000:]
    assert reg.tags("gl/numpy-hello") == ["4b825dc6", "buildcache"]
    assert f"image: {reg.host}/gl/numpy-hello:4b825dc6" in (project / "k8s" / "numpy-hello.yaml").read_text()
