"""Image references: ``[registry[:port]/]repository[:tag][@sha256:digest]``, parsed and checked once.

The rules are Docker's (distribution/reference): the first component is a registry host when it holds a
``.`` or a ``:`` or is ``localhost``; otherwise the reference is on Docker Hub, where a one-component name
gets the ``library/`` prefix. Docker Hub's API lives on another host than its name; :attr:`Reference.endpoint`
says where requests go and :attr:`Reference.registry` is the name credentials are stored under.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..errors import GpushipError
from ..redact import redact

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
#: The key Docker's CLI stores Docker Hub credentials under in ``config.json``.
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
)


def _bad(text: str, why: str) -> GpushipError:
    return GpushipError(
        f"{text!r} is not an image reference: {why}",
        "write it as [registry/]name[:tag][@sha256:digest], e.g. ghcr.io/org/app:1.0",
    )


def normalize_registry(name: str) -> str:
    """The canonical registry name: scheme and path dropped, Docker Hub's aliases folded into ``docker.io``."""
    host = name.strip()
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix) :]
    host = host.split("/", 1)[0].lower()
    if host in ("index.docker.io", DOCKER_HUB_ENDPOINT, "registry.hub.docker.com"):
        return DOCKER_HUB
    return host


@dataclass(frozen=True)
class Reference:
    """A parsed image reference. ``tag`` and ``digest`` may both be set (the digest wins when fetching)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str, *, default_tag: str | None = "latest") -> Reference:
        raw = text.strip()
        if not raw:
            raise _bad(text, "it is empty")
        if "://" in raw:
            raise _bad(text, "leave out the scheme (https://)")
        rest, digest = raw, None
        login, at, after = raw.partition("@")
        if at and "/" not in login and not after.startswith("sha256:"):
            raise GpushipError(
                f"{redact(raw)!r} is an image reference with a login in it, which gpuship never takes",
                f"log in once (gpuship login {normalize_registry(after)}), then give the reference without the login",
            )
        if "@" in rest:
            rest, digest = rest.rsplit("@", 1)
            if not _DIGEST.fullmatch(digest):
                raise _bad(text, f"{digest!r} is not a sha256 digest")
        tag = None
        last_slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > last_slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG.fullmatch(tag):
                raise _bad(text, f"{tag!r} is not a valid tag")
        first, _, remainder = rest.partition("/")
        if remainder and ("." in first or ":" in first or first == "localhost"):
            if not _HOST.fullmatch(first):
                raise _bad(text, f"{first!r} is not a registry host")
            registry, path = normalize_registry(first), remainder
        else:
            registry, path = DOCKER_HUB, rest
        if not path:
            raise _bad(text, "the repository name is missing")
        for comp in path.split("/"):
            if not _COMPONENT.fullmatch(comp):
                raise _bad(text, f"{comp!r} is not a valid name component (lowercase letters, digits, . _ -)")
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        if len(path) > 255:
            raise _bad(text, "the repository name is longer than 255 characters")
        if tag is None and digest is None:
            tag = default_tag
        return cls(registry, path, tag, digest)

    # -- derived ---------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """The host (and port) the API requests go to."""
        return DOCKER_HUB_ENDPOINT if self.registry == DOCKER_HUB else self.registry

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/``: the digest if there is one, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def with_tag(self, tag: str) -> Reference:
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out
