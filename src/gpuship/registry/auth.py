"""Credentials: where they come from (Docker's ``config.json`` and credential helpers) and where login puts them.

Lookup follows the Docker CLI: ``credHelpers[registry]`` first, then ``credsStore``, then the ``auths`` entry
(``auth`` is base64 ``user:password``; ``identitytoken`` is an OAuth2 refresh token). The file is
``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``.

Secrets never reach a log or an error message: :class:`Credentials` hides them from ``repr`` and nothing in
this package formats them into text.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GpushipError
from ..tools import INSTALL_HINTS, which
from .reference import DOCKER_HUB, DOCKER_HUB_AUTH_KEY, normalize_registry

log = logging.getLogger("gpuship.registry")

#: Docker's credential helpers print this when they hold nothing for a server.
_NOT_FOUND = "credentials not found"


@dataclass(frozen=True)
class Credentials:
    """A user name and a secret (password or token). ``identity_token`` is an OAuth2 refresh token."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    source: str = ""  # where they came from, for messages: "auths", "credHelpers:ecr-login", "--password-stdin"

    @property
    def anonymous(self) -> bool:
        return not (self.password or self.identity_token)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


ANONYMOUS = Credentials(source="anonymous")


def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    env = os.environ.get("DOCKER_CONFIG")
    base = Path(env) if env else Path.home() / ".docker"
    return base / "config.json"


def _load_config(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise GpushipError(f"cannot read {path}: {exc}", "fix or remove the file, then run gpuship login") from exc
    if not isinstance(data, dict):
        raise GpushipError(f"{path} is not a JSON object", "fix or remove the file, then run gpuship login")
    return data


def auth_key(registry: str) -> str:
    """The key ``config.json`` stores ``registry``'s credentials under (Docker Hub has its historic URL)."""
    reg = normalize_registry(registry)
    return DOCKER_HUB_AUTH_KEY if reg == DOCKER_HUB else reg


def _helper_for(config: Mapping[str, object], registry: str) -> str | None:
    helpers = config.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if normalize_registry(str(key)) == registry and name:
                return str(name)
    store = config.get("credsStore")
    return str(store) if store else None


def _helper_exe(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise GpushipError(f"credential helper name {name!r} is not valid", "fix credHelpers/credsStore in config.json")
    exe = f"docker-credential-{name}"
    path = which(exe)
    if path is None:
        hint = INSTALL_HINTS.get(exe, f"install {exe}, or remove it from credHelpers/credsStore in config.json")
        raise GpushipError(f"credential helper {exe} is not installed", hint)
    return path


def _run_helper(name: str, action: str, payload: bytes) -> subprocess.CompletedProcess[bytes]:
    exe = _helper_exe(name)
    try:
        return subprocess.run([exe, action], input=payload, capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired as exc:
        raise GpushipError(
            f"credential helper {exe} did not answer in 60 s", "check the helper (is it waiting for a prompt?)"
        ) from exc


def _helper_get(name: str, registry: str) -> Credentials | None:
    proc = _run_helper(name, "get", auth_key(registry).encode())
    if proc.returncode != 0:
        text = (proc.stdout + proc.stderr).decode(errors="replace")
        if _NOT_FOUND in text.lower():
            return None
        last = text.strip().splitlines()[-1] if text.strip() else f"exit code {proc.returncode}"
        raise GpushipError(f"credential helper docker-credential-{name} failed: {last}", "check the helper's own login")
    try:
        data = json.loads(proc.stdout)
        user, secret = str(data.get("Username", "")), str(data.get("Secret", ""))
    except (ValueError, AttributeError) as exc:
        raise GpushipError(f"credential helper docker-credential-{name} printed no JSON", "check the helper") from exc
    if not secret:
        return None
    source = f"credential helper {name}"
    if user == "<token>":  # Docker's convention: the secret is an identity (refresh) token
        return Credentials("", "", secret, source)
    return Credentials(user, secret, "", source)


def _from_auths(config: Mapping[str, object], registry: str, path: Path) -> Credentials | None:
    auths = config.get("auths") or {}
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        if normalize_registry(str(key)) != registry or not isinstance(entry, dict):
            continue
        user, password = str(entry.get("username") or ""), str(entry.get("password") or "")
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(str(entry["auth"]), validate=False).decode()
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise GpushipError(
                    f"the auth entry for {key} in {path} is not base64 of user:password",
                    f"run gpuship login {registry} again",
                ) from exc
            user, sep, password = decoded.partition(":")
            if not sep:
                raise GpushipError(
                    f"the auth entry for {key} in {path} has no ':' between user and password",
                    f"run gpuship login {registry} again",
                )
        token = str(entry.get("identitytoken") or "")
        if password or token:
            return Credentials(user, password, token, f"{path} auths")
    return None


def containers_auth_paths() -> list[Path]:
    """The auth files of podman, skopeo and buildah (containers-auth.json), read before Docker's config:
    ``$REGISTRY_AUTH_FILE`` if set, else ``$XDG_RUNTIME_DIR/containers/auth.json`` (where ``podman login``
    writes). Same format as ``config.json``'s ``auths`` and ``credHelpers``."""
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        return [Path(env)]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return [Path(runtime) / "containers" / "auth.json"] if runtime else []


def lookup_credentials(registry: str, config_path: Path | None = None) -> Credentials:
    """The credentials for ``registry`` (:data:`ANONYMOUS` when there are none): from ``config_path`` if given,
    else from the containers auth file (:func:`containers_auth_paths`), then Docker's ``config.json``."""
    reg = normalize_registry(registry)
    paths = [config_path] if config_path is not None else [*containers_auth_paths(), docker_config_path()]
    for path in paths:
        found = _lookup_in(path, reg)
        if found is not None:
            return found
    return ANONYMOUS


def _lookup_in(path: Path, reg: str) -> Credentials | None:
    config = _load_config(path)
    helper = _helper_for(config, reg)
    if helper:
        found = _helper_get(helper, reg)
        if found is not None:
            return found
    return _from_auths(config, reg, path)


def _write_config(path: Path, config: Mapping[str, object]) -> None:
    """Replace ``config.json`` atomically with mode 0600 (it holds secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmpname = tempfile.mkstemp(dir=path.parent, prefix=".config.json.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(config, fh, indent="\t")
            fh.write("\n")
        os.replace(tmpname, path)
    finally:
        Path(tmpname).unlink(missing_ok=True)


def store_credentials(registry: str, creds: Credentials, config_path: Path | None = None) -> str:
    """Save ``creds`` the way Docker would: through the configured helper, else as ``auths`` (0600 file).

    Returns where they went, for the user ("docker-credential-pass" or the config path).
    """
    reg = normalize_registry(registry)
    path = config_path or docker_config_path()
    config = _load_config(path)
    helper = _helper_for(config, reg)
    if helper:
        username, secret = (
            (creds.username, creds.password) if not creds.identity_token else ("<token>", creds.identity_token)
        )
        payload = json.dumps({"ServerURL": auth_key(reg), "Username": username, "Secret": secret}).encode()
        proc = _run_helper(helper, "store", payload)
        if proc.returncode != 0:
            raise GpushipError(
                f"credential helper docker-credential-{helper} could not store the login",
                "check the helper, or remove credsStore/credHelpers from config.json",
            )
        auths = config.setdefault("auths", {})
        if isinstance(auths, dict):
            auths.pop(auth_key(reg), None)
            _write_config(path, config)
        return f"docker-credential-{helper}"
    auths = config.get("auths")
    if not isinstance(auths, dict):
        auths = config["auths"] = {}
    for key in [k for k in auths if normalize_registry(str(k)) == reg]:
        del auths[key]
    entry: dict[str, str] = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    if creds.identity_token:
        entry = {"identitytoken": creds.identity_token}
    auths[auth_key(reg)] = entry
    _write_config(path, config)
    return str(path)


def erase_credentials(registry: str, config_path: Path | None = None) -> bool:
    """Forget ``registry``'s login (helper and ``auths``). True if something was removed."""
    reg = normalize_registry(registry)
    path = config_path or docker_config_path()
    config = _load_config(path)
    removed = False
    helper = _helper_for(config, reg)
    if helper:
        removed = _run_helper(helper, "erase", auth_key(reg).encode()).returncode == 0
    auths = config.get("auths")
    if isinstance(auths, dict):
        for key in [k for k in auths if normalize_registry(str(k)) == reg]:
            del auths[key]
            removed = True
        if removed:
            _write_config(path, config)
    return removed


# -- WWW-Authenticate -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: ``Bearer`` (a token service) or ``Basic``."""

    scheme: str
    params: Mapping[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scope(self) -> str:
        return self.params.get("scope", "")


_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` header (quoted strings, commas inside quotes, several challenges)."""
    out: list[Challenge] = []
    pos = 0
    header = header.strip()
    while pos < len(header):
        m = re.compile(r"\s*([A-Za-z][A-Za-z0-9_-]*)\s*").match(header, pos)
        if not m:
            break
        scheme = m.group(1).lower()
        pos = m.end()
        params: dict[str, str] = {}
        while pos < len(header):
            pm = _PARAM.match(header, pos)
            if not pm:
                break
            # a bare word followed by a space is the next challenge's scheme, not a parameter
            params[pm.group(1).lower()] = pm.group(2).replace('\\"', '"') if pm.group(2) is not None else pm.group(3)
            pos = pm.end()
        out.append(Challenge(scheme, params))
        if pos < len(header) and header[pos] == ",":
            pos += 1
    return out
