"""A real registry on loopback for the registry tests, plus the small tools they share.

Debian's ``docker-registry`` (distribution 2.8) runs as a subprocess, configured by a YAML file in a temp
directory, listening on 127.0.0.1:<free port> with its storage in the same temp directory. Optional:
TLS with a throw-away CA (openssl), htpasswd users (``htpasswd -Bbn``), or token auth served by
:class:`TokenServer` (JWTs signed with ``openssl dgst``, trusted by the registry through ``rootcertbundle``).

The tests at the bottom prove the harness itself works (so a broken harness fails here, not elsewhere).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from gpuship.cache import Cache
from gpuship.oci import Entry, Image, ImageConfig, append_layers, build_layer, empty_image

REGISTRY_BIN = "/usr/bin/docker-registry"
HTTP_SECRET = "gpuship-test-secret-not-random"  # fixed, so upload URLs survive a registry restart


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args: str, cwd: Path, input: bytes | None = None) -> bytes:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, input=input, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed: {proc.stderr.decode()}")
    return proc.stdout


@dataclass(frozen=True)
class TLSFiles:
    ca_cert: Path
    cert: Path
    key: Path


def self_signed(directory: Path, name: str, subject: str, *extensions: str) -> Path:
    """A throw-away key ``name.key`` and self-signed certificate ``name.crt`` (2 days) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    addext = [arg for ext in extensions for arg in ("-addext", ext)]
    words = f"req -x509 -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.crt -days 2".split()
    openssl(*words, "-subj", subject, *addext, cwd=directory)
    return directory / f"{name}.crt"


def make_tls(directory: Path) -> TLSFiles:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it."""
    ca_cert = self_signed(
        directory,
        "ca",
        "/CN=gpuship test CA",
        "basicConstraints=critical,CA:TRUE",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=directory,
    )
    (directory / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=directory,
    )
    return TLSFiles(ca_cert, directory / "server.crt", directory / "server.key")


@contextlib.contextmanager
def tls_registry_with_users(root: Path, users: dict[str, str]) -> Iterator[tuple[LocalRegistry, TLSFiles]]:
    """A started registry under ``root`` with TLS (a throw-away CA: ``root/tls``) and htpasswd ``users``; stopped
    after the block."""
    have_tools()
    tls = make_tls(root / "tls")
    reg = LocalRegistry(root / "reg", tls=tls, users=users).start()
    try:
        yield reg, tls
    finally:
        reg.stop()


def docker_login(directory: Path, host: str, user: str, password: str) -> Path:
    """``directory`` holding a Docker ``config.json`` with the login, as CI systems write it (for DOCKER_CONFIG)."""
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return directory


def htpasswd_line(user: str, password: str) -> str:
    proc = subprocess.run(["htpasswd", "-Bbn", user, password], capture_output=True, text=True, check=True)
    return proc.stdout.strip() + "\n"


# -- the token service ------------------------------------------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A minimal Docker token service: ``GET /token?service=&scope=`` with optional Basic auth.

    Known users get every action they ask for; anonymous callers get ``pull`` only (when ``anonymous_pull``).
    ``lifetime`` is how long the registry accepts a token (its 60 s leeway is taken off), while clients are
    told ``expires_in`` = 300 s, like Docker Hub: a short lifetime makes a token expire mid-push.
    """

    ISSUER = "gpuship-test-issuer"
    SERVICE = "gpuship-test-registry"

    def __init__(self, directory: Path, users: dict[str, str], *, anonymous_pull: bool = True) -> None:
        self.dir = directory
        self.cert = self_signed(directory, "sign", "/CN=gpuship test token signer")
        der = openssl("x509", "-in", "sign.crt", "-outform", "DER", cwd=directory)
        self._x5c = base64.b64encode(der).decode()
        self.users = users
        self.refresh_tokens: dict[str, str] = {}  # OAuth2 refresh (identity) token -> user
        self.anonymous_pull = anonymous_pull
        self.lifetime = 3600
        self.issued: list[str] = []
        self.requests: list[dict[str, object]] = []
        self.port = free_port()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                server._handle(self)

            def do_POST(self) -> None:  # noqa: N802
                server._handle_refresh(self)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        q = parse_qs(urlsplit(h.path).query)
        user = None
        auth = h.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            name, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            if self.users.get(name) != pw:
                h.send_response(401)
                h.end_headers()
                return
            user = name
        scopes = [s for v in q.get("scope", []) for s in v.split(" ")]
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = (
                actions.split(",")
                if user
                else (["pull"] if self.anonymous_pull and "pull" in actions.split(",") else [])
            )
            if kind == "repository" and granted:
                access.append({"type": "repository", "name": name, "actions": granted})
        self.requests.append({"user": user, "scopes": scopes, "service": q.get("service", [""])[0]})
        if user is None and not self.anonymous_pull:
            h.send_response(401)
            h.end_headers()
            return
        token = self._sign(user or "", access)
        self.issued.append(token)
        body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _handle_refresh(self, h: http.server.BaseHTTPRequestHandler) -> None:
        """``POST /token`` with ``grant_type=refresh_token`` (how Docker uses an identity token)."""
        form = parse_qs(h.rfile.read(int(h.headers.get("Content-Length") or 0)).decode())
        user = self.refresh_tokens.get(form.get("refresh_token", [""])[0])
        scopes = [s for v in form.get("scope", []) for s in v.split(" ")]
        self.requests.append(
            {"user": user, "scopes": scopes, "service": form.get("service", [""])[0], "grant": "refresh_token"}
        )
        if form.get("grant_type") != ["refresh_token"] or user is None:
            h.send_response(401)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        token = self._sign(user, access)
        self.issued.append(token)
        body = json.dumps({"access_token": token, "expires_in": 300}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _sign(self, subject: str, access: list[dict[str, object]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": self.ISSUER,
            "sub": subject,
            "aud": self.SERVICE,
            "iat": now,
            "nbf": now - 1,
            "exp": now + self.lifetime - 60,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = openssl("dgst", "-sha256", "-sign", "sign.key", cwd=self.dir, input=signing_input.encode())
        return f"{signing_input}.{_b64url(sig)}"


# -- the registry ----------------------------------------------------------------------------------------------
@dataclass
class LocalRegistry:
    """One ``docker-registry`` process; ``kill()`` and ``start()`` keep the port and the storage."""

    root: Path
    tls: TLSFiles | None = None
    users: dict[str, str] = field(default_factory=dict)
    token: TokenServer | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    def _config(self) -> Path:
        lines = [
            "version: 0.1",
            "log:",
            "  level: error",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            f"  addr: {self.host}",
            f"  secret: {HTTP_SECRET}",
        ]
        if self.tls:
            lines += ["  tls:", f"    certificate: {self.tls.cert}", f"    key: {self.tls.key}"]
        if self.users:
            htpasswd = self.root / "htpasswd"
            htpasswd.write_text("".join(htpasswd_line(u, p) for u, p in self.users.items()))
            lines += ["auth:", "  htpasswd:", "    realm: gpuship-test", f"    path: {htpasswd}"]
        elif self.token:
            lines += [
                "auth:",
                "  token:",
                f"    realm: {self.token.realm}",
                f"    service: {TokenServer.SERVICE}",
                f"    issuer: {TokenServer.ISSUER}",
                f"    rootcertbundle: {self.token.cert}",
            ]
        path = self.root / "config.yml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> LocalRegistry:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self._config()
        log = open(self.root / "registry.log", "ab")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"docker-registry exited: {(self.root / 'registry.log').read_text()[-2000:]}")
            try:
                httpx.get(f"{self.url}/v2/", verify=False, timeout=2)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("docker-registry did not answer within 20 s")

    def kill(self) -> None:
        """SIGKILL: the process dies mid-request, like a crash or a dropped network."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    # -- looking inside, as an operator would -------------------------------------------------------------------
    def tags(self, repository: str) -> list[str]:
        d = self.storage / "docker/registry/v2/repositories" / repository / "_manifests/tags"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    def uploads_in_progress(self, repository: str) -> list[str]:
        d = self.storage / "docker/registry/v2/repositories" / repository / "_uploads"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


# -- test images -------------------------------------------------------------------------------------------------
def make_image(
    cache: Cache,
    layers: Iterable[dict[str, bytes] | list[Entry]],
    platform: str = "linux/amd64",
    env: tuple[str, ...] = ("PATH=/usr/local/bin:/usr/bin:/bin",),
) -> Image:
    """An image made directly with gpuship.oci: each layer from {path: bytes} or a list of entries, gzip-compressed
    as a registry holds it (a plain layer would be compressed by the sinks, changing the digest)."""
    img = empty_image(platform, ImageConfig(env=env, cmd=("/bin/true",)))
    built = []
    for files in layers:
        entries = [Entry.file(p, data) for p, data in files.items()] if isinstance(files, dict) else files
        built.append(build_layer(entries, cache, compression="gzip"))
    return append_layers(img, built)


def secret(prefix: str = "pw") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def have_tools() -> None:
    for tool in (REGISTRY_BIN, "openssl", "htpasswd"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: apt-get install docker-registry openssl apache2-utils")


# -- the harness proves itself -----------------------------------------------------------------------------------
def test_registry_harness_serves_tls_with_htpasswd(tmp_path: Path) -> None:
    with tls_registry_with_users(tmp_path, {"alice": "s3cret"}) as (reg, tls):
        trust = ssl.create_default_context(cafile=str(tls.ca_cert))
        r = httpx.get(f"{reg.url}/v2/", verify=trust)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert httpx.get(f"{reg.url}/v2/", verify=trust, auth=("alice", "s3cret")).status_code == 200
        assert httpx.get(f"{reg.url}/v2/", verify=trust, auth=("alice", "nope")).status_code == 401
    assert reg.proc is None  # stopped after the block


def test_token_server_tokens_are_accepted_by_the_registry(tmp_path: Path) -> None:
    have_tools()
    tokens = TokenServer(tmp_path / "tok", {"bob": "pw"})
    reg = LocalRegistry(tmp_path / "reg", token=tokens).start()
    try:
        r = httpx.get(f"{reg.url}/v2/some/repo/tags/list")
        assert r.status_code == 401 and 'realm="' + tokens.realm in r.headers["www-authenticate"]
        tok = httpx.get(
            tokens.realm, params={"service": TokenServer.SERVICE, "scope": "repository:some/repo:pull"}
        ).json()["token"]
        r = httpx.get(f"{reg.url}/v2/some/repo/tags/list", headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 404  # authorised; the repository just does not exist yet
    finally:
        reg.stop()
        tokens.close()
