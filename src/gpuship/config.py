"""The ``[tool.gpuship]`` table: schema, defaults and validation messages.

Every key is documented in the README ("Configuration"). Unknown keys are an error that names the closest
known one, so a typo never silently does nothing.
"""

from __future__ import annotations

import difflib
import os
import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from . import schema
from .errors import ConfigError
from .oci.media import Compression, parse_compression

#: How byte code is written: precompiled with unchecked hashes (reproducible), or not at all.
Bytecode = Literal["unchecked-hash", "none"]
BYTECODES: dict[str, Bytecode] = {"unchecked-hash": "unchecked-hash", "none": "none"}

KNOWN_KEYS = {
    "base": "base image: a profile (debian-bookworm, debian-trixie) or a registry reference",
    "python": "Python version of the image (must match the base)",
    "platforms": "target platforms, e.g. ['linux/amd64', 'linux/arm64']",
    "entrypoint": "command list, a string, or { function = 'pkg.module:func' } for the function runtime",
    "cmd": "default arguments after the entrypoint",
    "env": "extra environment variables",
    "ports": "ports to expose",
    "system-packages": "extra Debian packages (apt-install without apt)",
    "shell": "add a minimal shell: dash as /bin/sh and coreutils (/usr/bin/env, ...) (default false)",
    "keep": "globs of files pruning must keep",
    "drop": "globs of extra files to prune from the environment",
    "include": "project files to include even though they look like secrets or are ignored",
    "exclude": "extra globs of project files to leave out of the app layer",
    "user": "user the container runs as (default: the non-root user 65532)",
    "workdir": "working directory and app location (default /app)",
    "labels": "extra image labels",
    "compression": "layer compression: gzip (default) or zstd",
    "find-libdeps": "add Debian packages for shared libraries the wheels need (default true)",
    "bytecode": "precompile .pyc at build time: 'unchecked-hash' (default, reproducible) or 'none'",
    "gpu": "GPU settings table ([tool.gpuship.gpu])",
    "debian": "Debian repository settings table ([tool.gpuship.debian])",
    "index-url": "Python package index to use instead of uv's default",
    "extra-index-url": "additional Python package indexes",
    "find-links": "directories or pages of wheels to use besides the index",
    "replace-base-packages": "Python packages of a registry base image the project may install over (default: none)",
    "cache": "the shared build cache: registry:REF (docs/ci.md); GPUSHIP_BUILD_CACHE and --cache win",
    "models": "model files: project globs ('!' takes away), hf://ORG/NAME@REVISION, https://...#sha256=..., or "
    "{ mount = '/models/NAME' } for weights mounted at run time (docs/models.md)",
}

#: What ``shell = true`` adds to a Debian-profile base: ``/bin/sh`` (dash) and ``/usr/bin/env`` (coreutils).
SHELL_PACKAGES = ("dash", "coreutils")

DEFAULT_USER = "65532:65532"
DEFAULT_WORKDIR = "/app"


def _check_keys(table: Mapping[str, object], known: Mapping[str, str] | set[str], where: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(sorted(known))}"
            raise ConfigError(f"unknown key '{key}' in {where}", hint)


def _cache_ref(value: str) -> str:
    """``[tool.gpuship] cache``, checked now (``registry:REF`` or ``none``), kept as written."""
    if not value:
        return value
    from .buildcache import parse_cache  # the build cache's module: only for a project that names one

    parse_cache(value, "[tool.gpuship] cache")
    return value


def _str_list(value: object, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    return schema.string_list(value, f"[tool.gpuship] {key}", f'{key} = ["..."]', one_string=True)


_USER_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}"
MAX_ID = 2**31 - 1


def parse_user(value: object) -> str:
    """``user``: ``name``, ``uid``, ``name:group`` or ``uid:gid`` (ids 0..2^31-1), as a string or an integer uid."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = schema.string(value, "[tool.gpuship] user", 'user = "65532:65532"')
    parts = text.split(":")
    ok = 1 <= len(parts) <= 2 and all(re.fullmatch(_USER_PART, p) for p in parts)
    if ok:
        ok = all(not p.isdigit() or int(p) <= MAX_ID for p in parts)
    if not ok:
        raise ConfigError(
            f"[tool.gpuship] user = {text!r} is not a user",
            'give NAME, UID, NAME:GROUP or UID:GID (numbers up to 2147483647), e.g. user = "1000:1000"',
        )
    return text


def parse_ports(value: object) -> tuple[str, ...]:
    """``ports``: integers or ``"N"`` / ``"N/tcp"`` / ``"N/udp"``, each 1..65535."""
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        text = str(item) if isinstance(item, (int, str)) and not isinstance(item, bool) else None
        m = re.fullmatch(r"(\d{1,5})(/(tcp|udp|sctp))?", text or "")
        if text is None or m is None or not 1 <= int(m.group(1)) <= 65535:
            raise ConfigError(
                f"[tool.gpuship] ports: {item!r} is not a port",
                'give numbers 1-65535, optionally with /tcp or /udp, e.g. ports = [8000, "9000/udp"]',
            )
        out.append(text)
    return tuple(out)


def parse_env_table(value: object) -> dict[str, str]:
    """``env``: names to strings (numbers are written as TOML writes them); names without ``=`` or NUL."""
    env = schema.string_table(value, "[tool.gpuship] env", 'env = { HF_HOME = "/data" }', numbers=True)
    for k, v in env.items():
        if not k or "=" in k or "\0" in k or "\0" in v:
            raise ConfigError(f"[tool.gpuship] env: {k!r} is not a variable name", "use names like HF_HOME")
    return env


@dataclass(frozen=True)
class Entrypoint:
    """What the container runs: an argv, or a function served by the gpuship function runtime."""

    argv: tuple[str, ...] = ()
    function: str = ""

    @classmethod
    def parse(cls, value: object) -> Entrypoint | None:
        if value is None:
            return None
        if isinstance(value, str):
            try:
                return cls(argv=tuple(shlex.split(value)))
            except ValueError as exc:
                raise ConfigError(
                    f"[tool.gpuship] entrypoint {value!r}: {exc}", "close the quote, or give a list"
                ) from None
        if isinstance(value, list):
            return cls(argv=_str_list(value, "entrypoint"))
        if isinstance(value, dict) and set(value) == {"function"} and isinstance(value["function"], str):
            fn = value["function"]
            if ":" not in fn:
                raise ConfigError(f"entrypoint function '{fn}' must be 'package.module:function'")
            return cls(function=fn)
        raise ConfigError('[tool.gpuship] entrypoint must be a list, a string, or { function = "pkg.module:func" }')


#: Project files taken for model weights unless ``[tool.gpuship] models`` says otherwise (gitignore syntax).
MODEL_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.gguf", "*.onnx")
#: Where fetched models go in the image: the Hugging Face hub cache (``HF_HUB_CACHE``), and plain files.
HF_HUB_DIR = "/opt/huggingface/hub"
MODELS_DIR = "/opt/models"
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _image_path(value: object, workdir: str, what: str) -> str:
    """An absolute path in the image: as given, or relative to the workdir."""
    text = str(value).strip()
    if not text or ".." in text.split("/"):
        raise ConfigError(f"[tool.gpuship] models: {what} path {text!r} is not a usable path", "e.g. /opt/models/NAME")
    return posixpath.normpath(text if text.startswith("/") else posixpath.join(workdir, text))


@dataclass(frozen=True)
class HubModel:
    """``hf://ORG/NAME@REVISION``: a Hugging Face model repository at a pinned commit, fetched at build time."""

    repo: str
    revision: str
    #: file patterns to fetch (fnmatch, as huggingface_hub's allow_patterns); empty: every file
    files: tuple[str, ...] = ()
    #: "" = the hub cache layout under :data:`HF_HUB_DIR` (``from_pretrained`` finds it offline); else a plain
    #: directory in the image holding the files
    path: str = ""

    @property
    def ref(self) -> str:
        return f"hf://{self.repo}@{self.revision}"

    @classmethod
    def parse(cls, text: str, files: tuple[str, ...] = (), path: str = "") -> HubModel:
        body = text.removeprefix("hf://")
        repo, sep, revision = body.partition("@")
        if not _REPO.fullmatch(repo):
            raise ConfigError(f"[tool.gpuship] models: {text!r} is not hf://ORG/NAME@REVISION")
        if not sep or not _HEX40.fullmatch(revision):
            raise ConfigError(
                f"[tool.gpuship] models: {text!r} needs a pinned revision",
                f"write hf://{repo}@<the 40-hex commit id> (the model page's 'Files and versions' history shows it)",
            )
        return cls(repo, revision, files, path)


@dataclass(frozen=True)
class UrlModel:
    """``https://HOST/PATH#sha256=HEX``: one file, fetched at build time and checked against its hash."""

    url: str  # without the fragment
    sha256: str
    path: str  # where in the image

    @classmethod
    def parse(cls, text: str, workdir: str, path: str = "", sha256: str = "") -> UrlModel:
        url, _, fragment = text.partition("#")
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname or not parts.path.strip("/"):
            raise ConfigError(f"[tool.gpuship] models: {redact_url(url)!r} is not an https://HOST/PATH URL")
        if parts.username or parts.password:
            raise ConfigError(
                f"[tool.gpuship] models: {redact_url(url)} has credentials in its URL, which would ship in the image"
                " with pyproject.toml",
                "put them in ~/.netrc (gpuship's downloads read it) and drop them from the URL",
            )
        if fragment.startswith("sha256="):
            sha256 = sha256 or fragment.removeprefix("sha256=")
        sha256 = sha256.lower()
        if not _HEX64.fullmatch(sha256):
            raise ConfigError(
                f"[tool.gpuship] models: {redact_url(url)} has no #sha256= of 64 hex digits",
                "add the file's hash: URL#sha256=$(sha256sum FILE)",
            )
        name = posixpath.basename(parts.path.rstrip("/"))
        dest = _image_path(path, workdir, "url") if path else f"{MODELS_DIR}/{name}"
        return cls(url, sha256, dest)


@dataclass(frozen=True)
class MountedModel:
    """Weights kept outside the image (shared storage), mounted at ``path`` at run time."""

    name: str
    path: str
    env: str  # set to ``path`` in the image
    host: str = ""  # default host directory: bind mount (compose, slurm, run) or hostPath (k8s)
    claim: str = ""  # default PersistentVolumeClaim (k8s)

    def to_json(self) -> dict[str, str]:
        d = {"name": self.name, "path": self.path, "env": self.env}
        d.update({k: v for k, v in (("host", self.host), ("claim", self.claim)) if v})
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> MountedModel:
        return cls(str(d["name"]), str(d["path"]), str(d["env"]), str(d.get("host", "")), str(d.get("claim", "")))


_TABLE_KEYS = {
    "hf": "a Hugging Face model: hf://ORG/NAME@REVISION",
    "files": "hf: which files of the repository (patterns; default all)",
    "url": "a file to fetch: https://HOST/PATH#sha256=HEX",
    "sha256": "url: the file's SHA-256 (instead of #sha256= in the URL)",
    "path": "where the fetched model goes in the image",
    "mount": "mounted at run time at this path in the image",
    "name": "mount: the model's name (deploy --model NAME=SOURCE)",
    "env": "mount: the variable set to the mount path (default GPUSHIP_MODEL_<NAME>)",
    "host": "mount: default host directory (bind mount, hostPath)",
    "claim": "mount: default PersistentVolumeClaim (Kubernetes)",
}


@dataclass(frozen=True)
class ModelsConfig:
    """``[tool.gpuship] models``: which project files are model weights, what to fetch, what is mounted."""

    #: gitignore-style patterns after :data:`MODEL_PATTERNS` (last match wins; ``!PATTERN`` takes away)
    patterns: tuple[str, ...] = ()
    hub: tuple[HubModel, ...] = ()
    urls: tuple[UrlModel, ...] = ()
    mounts: tuple[MountedModel, ...] = ()

    @classmethod
    def parse(cls, value: object, workdir: str = DEFAULT_WORKDIR) -> ModelsConfig:
        if value is None:
            return cls()
        if not isinstance(value, list):
            raise ConfigError(
                "[tool.gpuship] models must be a list", 'e.g. models = ["weights/", "hf://ORG/NAME@REVISION"]'
            )
        patterns: list[str] = []
        hub: list[HubModel] = []
        urls: list[UrlModel] = []
        mounts: list[MountedModel] = []
        for item in value:
            if isinstance(item, str) and item.startswith("hf://"):
                hub.append(HubModel.parse(item))
            elif isinstance(item, str) and item.startswith(("https://", "http://")):
                urls.append(UrlModel.parse(item, workdir))
            elif isinstance(item, str) and item.strip():
                patterns.append(item.strip())
            elif isinstance(item, dict):
                _check_keys(item, _TABLE_KEYS, "a [tool.gpuship] models table")
                kinds = [k for k in ("hf", "url", "mount") if k in item]
                if len(kinds) != 1:
                    raise ConfigError(
                        "[tool.gpuship] models: each table needs exactly one of hf, url or mount",
                        'e.g. { mount = "/models/llama" }',
                    )
                if kinds == ["hf"]:
                    path = _image_path(item["path"], workdir, "hf") if "path" in item else ""
                    hub.append(HubModel.parse(str(item["hf"]), _str_list(item.get("files"), "models files"), path))
                elif kinds == ["url"]:
                    urls.append(
                        UrlModel.parse(str(item["url"]), workdir, str(item.get("path", "")), item.get("sha256", ""))
                    )
                else:
                    mounts.append(_mounted(item))
            else:
                raise ConfigError(f"[tool.gpuship] models: {item!r} is not a path, a reference or a table")
        _unique([m.name for m in mounts], "mount name")
        _unique([m.path for m in mounts] + [u.path for u in urls] + [h.path for h in hub if h.path], "model path")
        return cls(tuple(patterns), tuple(hub), tuple(urls), tuple(mounts))

    def env(self) -> dict[str, str]:
        """What the image's environment gets: each mount's variable, and the hub cache for hub models."""
        env = {m.env: m.path for m in self.mounts}
        if any(not h.path for h in self.hub):
            env.update(HF_HUB_CACHE=HF_HUB_DIR, HF_HUB_OFFLINE="1")
        return env


def _mounted(item: Mapping[str, object]) -> MountedModel:
    path = str(item["mount"])
    if not path.startswith("/") or posixpath.normpath(path) == "/" or ".." in path.split("/"):
        raise ConfigError(f"[tool.gpuship] models: mount {path!r} must be an absolute directory", "e.g. /models/llama")
    path = posixpath.normpath(path)
    name = str(item.get("name") or posixpath.basename(path)).lower().replace("_", "-")
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"[tool.gpuship] models: mount name {name!r} is not usable", "use lowercase letters, digits, '-'"
        )
    env = str(item.get("env") or "GPUSHIP_MODEL_" + name.upper().replace("-", "_"))
    if not _ENV.fullmatch(env):
        raise ConfigError(f"[tool.gpuship] models: env {env!r} is not a variable name", "e.g. MODEL_DIR")
    host = str(item.get("host", ""))
    if host and not host.startswith("/"):
        raise ConfigError(f"[tool.gpuship] models: host {host!r} must be an absolute path")
    return MountedModel(name, path, env, host, str(item.get("claim", "")))


def _unique(values: list[str], what: str) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise ConfigError(f"[tool.gpuship] models: the {what} {v!r} is given twice")
        seen.add(v)


def redact_url(url: str) -> str:
    """``url`` without user, password and query (where tokens and signatures live): safe for reports and logs."""
    parts = urlsplit(url.partition("#")[0])
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class GpushipConfig:
    base: str = "debian-bookworm"
    python: str = ""
    platforms: tuple[str, ...] = ()
    entrypoint: Entrypoint | None = None
    cmd: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[str, ...] = ()
    system_packages: tuple[str, ...] = ()
    shell: bool = False
    keep: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    user: str = DEFAULT_USER
    workdir: str = DEFAULT_WORKDIR
    labels: Mapping[str, str] = field(default_factory=dict)
    compression: Compression = "gzip"
    find_libdeps: bool = True
    bytecode: Bytecode = "unchecked-hash"
    gpu: Mapping[str, object] = field(default_factory=dict)
    debian: Mapping[str, str] = field(default_factory=dict)
    index_url: str = ""
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    replace_base_packages: tuple[str, ...] = ()
    models: ModelsConfig = field(default_factory=lambda: ModelsConfig())
    cache: str = ""

    @classmethod
    def from_table(cls, table: Mapping[str, object] | None) -> GpushipConfig:
        table = dict(table or {})
        _check_keys(table, KNOWN_KEYS, "[tool.gpuship]")

        def text(key: str, default: str, example: str) -> str:
            return schema.string(table.get(key, default), f"[tool.gpuship] {key}", example)

        compression = parse_compression(
            text("compression", "gzip", 'compression = "zstd"'), "[tool.gpuship] compression"
        )
        bytecode = BYTECODES.get(text("bytecode", "unchecked-hash", 'bytecode = "none"'))
        if bytecode is None:
            raise ConfigError(
                f"[tool.gpuship] bytecode must be 'none' or 'unchecked-hash', not {table.get('bytecode')!r}"
            )
        workdir = text("workdir", DEFAULT_WORKDIR, 'workdir = "/app"')
        if not workdir.startswith("/") or "\0" in workdir or ".." in workdir.split("/"):
            raise ConfigError(f"[tool.gpuship] workdir must be an absolute path without '..', not {workdir!r}")
        for sub in ("gpu", "debian"):
            if sub in table:
                schema.table(table[sub], f"[tool.gpuship.{sub}]")
        debian_table = schema.table(table.get("debian") or {}, "[tool.gpuship.debian]")
        _check_keys(debian_table, {"mirror", "security-mirror"}, "[tool.gpuship.debian]")
        debian = {
            k: schema.string(v, f"[tool.gpuship.debian] {k}", f'{k} = "http://..."') for k, v in debian_table.items()
        }
        python = table.get("python", "")
        if isinstance(python, float):
            raise ConfigError(
                f"[tool.gpuship] python must be a string, not a float ({python})", 'quote it: python = "3.11"'
            )
        return cls(
            base=text("base", "debian-bookworm", 'base = "debian-bookworm"'),
            python=schema.string(python, "[tool.gpuship] python", 'python = "3.11"'),
            platforms=_str_list(table.get("platforms"), "platforms"),
            entrypoint=Entrypoint.parse(table.get("entrypoint")),
            cmd=_str_list(table.get("cmd"), "cmd"),
            env=parse_env_table(table.get("env", {})),
            ports=parse_ports(table.get("ports")),
            system_packages=_str_list(table.get("system-packages"), "system-packages"),
            shell=schema.boolean(table.get("shell", False), "[tool.gpuship] shell"),
            keep=_str_list(table.get("keep"), "keep"),
            drop=_str_list(table.get("drop"), "drop"),
            include=_str_list(table.get("include"), "include"),
            exclude=_str_list(table.get("exclude"), "exclude"),
            user=parse_user(table.get("user", DEFAULT_USER)),
            workdir=workdir,
            labels=schema.string_table(
                table.get("labels", {}), "[tool.gpuship] labels", 'labels = { team = "ml" }', numbers=True
            ),
            compression=compression,
            find_libdeps=schema.boolean(table.get("find-libdeps", True), "[tool.gpuship] find-libdeps"),
            bytecode=bytecode,
            gpu=schema.table(table.get("gpu") or {}, "[tool.gpuship.gpu]"),
            debian=debian,
            index_url=text("index-url", "", 'index-url = "https://host/simple"'),
            extra_index_urls=_str_list(table.get("extra-index-url"), "extra-index-url"),
            find_links=_str_list(table.get("find-links"), "find-links"),
            replace_base_packages=_str_list(table.get("replace-base-packages"), "replace-base-packages"),
            models=ModelsConfig.parse(table.get("models"), workdir),
            cache=_cache_ref(text("cache", "", 'cache = "registry:ghcr.io/org/app:cache"')),
        )

    def debian_packages(self) -> tuple[str, ...]:
        """The Debian packages added to a profile base: ``system-packages``, and the shell when asked for."""
        extra = SHELL_PACKAGES if self.shell else ()
        return tuple(dict.fromkeys((*self.system_packages, *extra)))

    def debian_mirror(self) -> str | None:
        """The Debian mirror from config or ``GPUSHIP_DEBIAN_MIRROR``; None means the host's apt sources."""
        return os.environ.get("GPUSHIP_DEBIAN_MIRROR") or self.debian.get("mirror") or None
