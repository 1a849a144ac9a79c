"""Credentials and references without a network: Docker's config.json (auths, credsStore, credHelpers through a
real helper program), login storage, WWW-Authenticate parsing, Retry-After, reference rules, known limits."""

from __future__ import annotations

import base64
import email.utils
import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from gpuship.errors import GpushipError, RegistryError
from gpuship.oci import Platform, append_layers, empty_image
from gpuship.oci.layer import Layer
from gpuship.registry import ANONYMOUS, Credentials, Reference, lookup_credentials, parse_challenges, store_credentials
from gpuship.registry.auth import erase_credentials
from gpuship.registry.client import RetryPolicy, Transient, retry_after_seconds
from gpuship.registry.limits import limits_for, oversized_layers

HELPER = r"""#!PYTHON
import json, sys, pathlib
store = pathlib.Path(__file__).with_name("helper-store.json")
data = json.loads(store.read_text()) if store.exists() else {}
action = sys.argv[1]
if action == "get":
    url = sys.stdin.read().strip()
    if url not in data:
        print("credentials not found in native keychain"); sys.exit(1)
    print(json.dumps({"ServerURL": url, **data[url]}))
elif action == "store":
    req = json.loads(sys.stdin.read())
    data[req["ServerURL"]] = {"Username": req["Username"], "Secret": req["Secret"]}
    store.write_text(json.dumps(data))
elif action == "erase":
    data.pop(sys.stdin.read().strip(), None); store.write_text(json.dumps(data))
"""


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real docker-credential-* program on PATH (the protocol is the one Docker's helpers speak)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "docker-credential-gpushiptest"
    exe.write_text(HELPER.replace("PYTHON", sys.executable))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return bindir / "helper-store.json"


def write_config(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_auths_entries_in_every_spelling(tmp_path):
    cfg = write_config(
        tmp_path / "config.json",
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hubuser:hubpw")},
                "https://ghcr.io": {"auth": b64("octo:ghp_token:with:colons")},
                "registry.example.com:5000": {"username": "u", "password": "p"},
                "id.example.com": {"identitytoken": "refresh-me"},
            }
        },
    )
    hub = lookup_credentials("docker.io", cfg)
    assert (hub.username, hub.password) == ("hubuser", "hubpw")
    assert lookup_credentials("registry-1.docker.io", cfg) == hub
    gh = lookup_credentials("ghcr.io", cfg)
    assert (gh.username, gh.password) == ("octo", "ghp_token:with:colons")
    assert lookup_credentials("registry.example.com:5000", cfg).password == "p"
    assert lookup_credentials("id.example.com", cfg).identity_token == "refresh-me"
    assert lookup_credentials("nowhere.example.com", cfg) is ANONYMOUS
    assert lookup_credentials("ghcr.io", tmp_path / "missing.json") is ANONYMOUS
    assert "ghp_token" not in repr(gh) and "hubpw" not in repr(hub)


def test_broken_config_is_one_clear_error(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(GpushipError, match="cannot read"):
        lookup_credentials("ghcr.io", bad)
    write_config(bad, {"auths": {"ghcr.io": {"auth": b64("no-colon-here")}}})
    with pytest.raises(GpushipError, match="no ':'"):
        lookup_credentials("ghcr.io", bad)


def test_cred_helpers_and_creds_store(tmp_path, helper):
    helper.write_text(
        json.dumps(
            {
                "ghcr.io": {"Username": "octo", "Secret": "from-helper"},
                "https://index.docker.io/v1/": {"Username": "<token>", "Secret": "identity-from-helper"},
            }
        )
    )
    cfg = write_config(
        tmp_path / "config.json",
        {
            "credHelpers": {"ghcr.io": "gpushiptest"},
            "credsStore": "gpushiptest",
            "auths": {"quay.io": {"auth": b64("q:fallback")}},
        },
    )
    assert lookup_credentials("ghcr.io", cfg).password == "from-helper"
    hub = lookup_credentials("docker.io", cfg)  # through credsStore; "<token>" means an identity token
    assert hub.identity_token == "identity-from-helper" and not hub.password
    assert lookup_credentials("quay.io", cfg).password == "fallback"  # the helper has none: auths is used
    write_config(cfg, {"credsStore": "not-installed-helper"})
    with pytest.raises(GpushipError, match="docker-credential-not-installed-helper is not installed"):
        lookup_credentials("ghcr.io", cfg)


def test_store_goes_to_the_helper_when_one_is_configured(tmp_path, helper):
    cfg = write_config(tmp_path / "config.json", {"credsStore": "gpushiptest", "auths": {}})
    where = store_credentials("nvcr.io", Credentials("$oauthtoken", "ngc-api-key"), cfg)
    assert where == "docker-credential-gpushiptest"
    assert json.loads(helper.read_text())["nvcr.io"] == {"Username": "$oauthtoken", "Secret": "ngc-api-key"}
    assert "ngc-api-key" not in cfg.read_text()
    assert lookup_credentials("nvcr.io", cfg).password == "ngc-api-key"
    assert erase_credentials("nvcr.io", cfg)
    assert lookup_credentials("nvcr.io", cfg) is ANONYMOUS


def test_store_in_auths_keeps_other_settings_and_is_private(tmp_path):
    cfg = write_config(
        tmp_path / "d" / "config.json",
        {"auths": {"https://ghcr.io": {"auth": b64("old:old")}}, "psFormat": "table {{.ID}}"},
    )
    os.chmod(cfg, 0o644)
    store_credentials("ghcr.io", Credentials("octo", "new"), cfg)
    store_credentials("docker.io", Credentials("hub", "hubpw"), cfg)
    data = json.loads(cfg.read_text())
    assert data["psFormat"] == "table {{.ID}}"
    assert data["auths"] == {
        "ghcr.io": {"auth": b64("octo:new")},
        "https://index.docker.io/v1/": {"auth": b64("hub:hubpw")},
    }
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert [p.name for p in cfg.parent.iterdir()] == ["config.json"]  # no temp file left


def test_docker_config_env(tmp_path, monkeypatch):
    write_config(tmp_path / "alt" / "config.json", {"auths": {"ghcr.io": {"auth": b64("env:pw")}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "alt"))
    assert lookup_credentials("ghcr.io").username == "env"


def test_registry_auth_file_is_read_before_docker_config(tmp_path, monkeypatch):
    """podman, skopeo and buildah keep logins in REGISTRY_AUTH_FILE (or $XDG_RUNTIME_DIR/containers/auth.json):
    CI jobs that log in with them need no docker login."""
    write_config(tmp_path / "docker" / "config.json", {"auths": {"ghcr.io": {"auth": b64("docker:pw")}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    write_config(tmp_path / "podman.json", {"auths": {"ghcr.io": {"auth": b64("podman:pw")}}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "podman.json"))
    assert lookup_credentials("ghcr.io").username == "podman"
    assert lookup_credentials("quay.io") is ANONYMOUS
    write_config(tmp_path / "podman.json", {"auths": {"quay.io": {"auth": b64("q:pw")}}})
    assert lookup_credentials("ghcr.io").username == "docker"  # not there: Docker's config next
    monkeypatch.delenv("REGISTRY_AUTH_FILE")
    write_config(tmp_path / "run" / "containers" / "auth.json", {"auths": {"ghcr.io": {"auth": b64("login:pw")}}})
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert lookup_credentials("ghcr.io").username == "login"


def test_www_authenticate_parsing():
    [c] = parse_challenges(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:a/b:pull,push repository:c:pull"'
    )
    assert (c.scheme, c.realm, c.service) == ("bearer", "https://auth.example.com/token", "registry.example.com")
    assert c.scope.split() == ["repository:a/b:pull,push", "repository:c:pull"]
    both = parse_challenges('Basic realm="Registry Realm", Bearer realm="https://t/x",error="insufficient_scope"')
    assert [x.scheme for x in both] == ["basic", "bearer"]
    assert both[1].params["error"] == "insufficient_scope"


def test_retry_after():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds(later) <= 31  # type: ignore[operator]


def test_retry_gives_up_after_its_last_attempt():
    policy = RetryPolicy(attempts=3)
    cause = Transient("connection reset")
    policy.give_up_after(2, cause, "upload kept failing", "try again later")  # one try left: no error
    with pytest.raises(RegistryError) as info:
        policy.give_up_after(3, cause, "upload kept failing", "try again later")
    assert info.value.__cause__ is cause
    assert "upload kept failing" in info.value.line() and "try again later" in info.value.line()


@pytest.mark.parametrize(
    "text,expected",
    [
        ("ubuntu", ("docker.io", "library/ubuntu", "latest", None)),
        ("nvcr.io/nvidia/pytorch:24.03-py3", ("nvcr.io", "nvidia/pytorch", "24.03-py3", None)),
        ("localhost:5000/a/b", ("localhost:5000", "a/b", "latest", None)),
        ("127.0.0.1:5000/x@sha256:" + "a" * 64, ("127.0.0.1:5000", "x", None, "sha256:" + "a" * 64)),
        ("ghcr.io/o/r:t@sha256:" + "b" * 64, ("ghcr.io", "o/r", "t", "sha256:" + "b" * 64)),
        ("index.docker.io/library/debian:12", ("docker.io", "library/debian", "12", None)),
    ],
)
def test_reference_parsing(text, expected):
    r = Reference.parse(text)
    assert (r.registry, r.repository, r.tag, r.digest) == expected


def test_reference_errors_say_how_to_write_one():
    for bad in ("", "https://ghcr.io/a", "UPPER/case", "a:b:c:d", "ghcr.io/a@sha256:123"):
        with pytest.raises(GpushipError, match="not an image reference") as info:
            Reference.parse(bad)
        assert "e.g." in info.value.line()
    assert Reference.parse("ubuntu").endpoint == "registry-1.docker.io"


def test_known_limits_warn_before_upload():
    assert limits_for("ghcr.io").max_layer == 10 * 1000**3  # type: ignore[union-attr]
    assert limits_for("123456789012.dkr.ecr.us-east-1.amazonaws.com").min_chunk == 5 << 20  # type: ignore[union-attr]
    assert limits_for("registry.example.com") is None
    big = Layer("sha256:" + "1" * 64, "sha256:" + "2" * 64, 11 * 1000**3, 12 * 1000**3, "gzip")
    small = Layer("sha256:" + "3" * 64, "sha256:" + "4" * 64, 1000, 2000, "gzip")
    img = append_layers(empty_image(Platform()), [big, small])
    [line] = oversized_layers(img, "ghcr.io")
    assert "11.0 GB" in line and "GitHub Container registry" in line
    assert oversized_layers(img, "registry.example.com") == []
