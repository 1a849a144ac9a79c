"""The CLI verbs (gpuship login / push) and the registry: output target, run as a user would run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuship.registry import RegistryOptions, pull_image
from gpuship.transports import write_output
from test_registry_support import (
    LocalRegistry,
    make_image,
    secret,
    tls_registry_with_users,
)

pytestmark = pytest.mark.registry

USER = "cliuser"
PASSWORD = secret("cli-pw")


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRegistry, Path]]:
    with tls_registry_with_users(tmp_path_factory.mktemp("cli-registry"), {USER: PASSWORD}) as (r, tls):
        yield r, tls.ca_cert


def gpuship(*args: str, env: dict[str, str], input: str | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", "from gpuship.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        input=input,
        env=full,
        timeout=300,
    )


def test_login_then_push_an_oci_layout(reg, cache, tmp_path):
    r, ca = reg
    env = {"DOCKER_CONFIG": str(tmp_path / "docker"), "GPUSHIP_CACHE": str(cache.root)}
    bad = gpuship("login", r.host, "-u", USER, "--password-stdin", "--ca-file", str(ca), env=env, input="wrong\n")
    assert bad.returncode == 2
    assert bad.stderr.count("error:") == 1 and "refused the credentials of user 'cliuser'" in bad.stderr
    assert "Traceback" not in bad.stderr and "wrong" not in bad.stderr.replace("wrong\n", "")

    ok = gpuship("login", r.host, "-u", USER, "--password-stdin", "--ca-file", str(ca), env=env, input=PASSWORD + "\n")
    assert ok.returncode == 0, ok.stderr
    config = tmp_path / "docker" / "config.json"
    assert (config.stat().st_mode & 0o777) == 0o600
    assert PASSWORD not in ok.stdout + ok.stderr

    img = make_image(cache, [{"opt/app/data.bin": os.urandom(64_000)}, {"opt/app/main.py": b"print(1)\n"}])
    write_output(img, f"oci:{tmp_path / 'layout'}:v1")
    first = gpuship("push", f"oci:{tmp_path / 'layout'}:v1", f"{r.host}/cli/app:v1", "--ca-file", str(ca), env=env)
    assert first.returncode == 0, first.stderr
    assert f"pushed {r.host}/cli/app:v1@{img.digest}: 3 blobs uploaded" in first.stdout
    again = gpuship("push", f"oci:{tmp_path / 'layout'}:v1", f"{r.host}/cli/app:v1", "--ca-file", str(ca), env=env)
    assert again.returncode == 0 and "0 blobs uploaded (0.0 MB), 3 already there" in again.stdout
    assert PASSWORD not in first.stdout + first.stderr + again.stdout + again.stderr

    write_output(img, f"docker-archive:{tmp_path / 'img.tar'}", tag="cli/app:v1")
    arch = gpuship(
        "push", f"docker-archive:{tmp_path / 'img.tar'}", f"{r.host}/cli/from-archive:1", "--ca-file", str(ca), env=env
    )
    assert arch.returncode == 0, arch.stderr

    logout = gpuship("logout", r.host, env=env)
    assert logout.returncode == 0 and r.host not in json.loads(config.read_text()).get("auths", {})


def test_unknown_ca_and_missing_login_exit_2(reg, cache, tmp_path):
    r, ca = reg
    env = {"DOCKER_CONFIG": str(tmp_path / "empty-docker"), "GPUSHIP_CACHE": str(cache.root)}
    img = make_image(cache, [{"etc/x": b"x"}])
    write_output(img, f"oci:{tmp_path / 'layout'}")
    untrusted = gpuship("push", f"oci:{tmp_path / 'layout'}", f"{r.host}/cli/x:1", env=env)
    assert untrusted.returncode == 2
    lines = [line for line in untrusted.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is not trusted" in lines[0] and "--ca-file" in lines[0]
    anon = gpuship("push", f"oci:{tmp_path / 'layout'}", f"{r.host}/cli/x:1", "--ca-file", str(ca), env=env)
    assert anon.returncode == 2 and "requires a login" in anon.stderr and "gpuship login" in anon.stderr


def test_output_registry_target_through_the_sinks_dispatcher(reg, cache, tmp_path, monkeypatch):
    r, ca = reg
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    import base64

    config.write_text(
        json.dumps({"auths": {r.host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(config.parent))
    options = RegistryOptions(ca_file=ca)
    img = make_image(cache, [{"etc/sink": b"via write_output\n"}])
    line = write_output(img, f"registry:{r.host}/cli/sink:1", registry=options)
    assert line.startswith(f"pushed {r.host}/cli/sink:1@{img.digest}")
    from gpuship.transports import read_image

    back = read_image(f"registry:{r.host}/cli/sink:1", "linux/amd64", cache, registry=options)
    assert back.digest == img.digest
    assert pull_image(f"{r.host}/cli/sink:1", "linux/amd64", cache, ca_file=ca).digest == img.digest
