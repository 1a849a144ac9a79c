"""Credentials for private package indexes, found where uv and pip find them, used for downloads only.

uv resolves the lock with the project's index options (credentials and all); the lock it writes keeps each
file's URL *without* them, and so does gpuship's lock. Downloading a locked file then needs the credentials
again; :class:`IndexCredentials` finds them the way uv does (``uv-auth``), in this order, for each file URL:

1. the userinfo of a configured index URL (``index-url = "https://user:token@host/simple"``, ``--index-url`` /
   ``--extra-index-url`` lines of a requirements file, ``UV_INDEX_URL``, ``UV_DEFAULT_INDEX``,
   ``UV_EXTRA_INDEX_URL``, ``UV_INDEX``, ``PIP_INDEX_URL``, ``PIP_EXTRA_INDEX_URL``): the index whose URL is the
   longest prefix of the file's, else any index on the same scheme, host and port (files often live beside the
   index, ``/packages/...``);
2. the netrc file (``NETRC``, else ``~/.netrc``), by host;
3. the ``keyring`` command (``UV_KEYRING_PROVIDER=subprocess`` or ``PIP_KEYRING_PROVIDER=subprocess``, as uv's
   subprocess provider: ``keyring get URL USERNAME``), when the username is known from an index URL.

The credentials travel only in the ``Authorization`` header of requests to that origin (httpx drops it on a
redirect elsewhere); they are never written to the lock, the image, the report or a message.
"""

from __future__ import annotations

import base64
import netrc
import os
import re
import shutil
import subprocess
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from ...redact import strip_userinfo

if TYPE_CHECKING:  # httpx is imported on first use (a rebuild with every file cached never needs it)
    import httpx  # httpx loads slowly: only when an index is asked

#: The environment variables uv and pip read index URLs from.
ENV_URLS = (
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_INDEX",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def _realm(url: str) -> tuple[str, str, int | None]:
    p = urlsplit(url)
    return (p.scheme.lower(), (p.hostname or "").lower(), p.port)


@dataclass(frozen=True)
class Login:
    """One index URL (without userinfo) and the login found in it."""

    prefix: str
    username: str
    password: str | None


@dataclass(frozen=True)
class IndexCredentials:
    """The logins of the index URLs in use; :meth:`for_url` finds the one for a file URL."""

    logins: tuple[Login, ...] = ()

    @classmethod
    def from_urls(cls, urls: Iterable[str], *, environ: bool = True) -> IndexCredentials:
        """From index URLs (and the lines that hold them: ``--index-url https://...``); with ``environ``, the
        URLs in uv's and pip's environment variables too."""
        found: list[str] = []
        for text in urls:
            found += _URL.findall(text)
        if environ:
            for var in ENV_URLS:
                found += _URL.findall(os.environ.get(var, ""))
        logins: list[Login] = []
        for url in dict.fromkeys(found):
            parts = urlsplit(url)
            if parts.username is None:
                continue
            password = unquote(parts.password) if parts.password is not None else None
            logins.append(Login(strip_userinfo(url).rstrip("/") + "/", unquote(parts.username), password))
        return cls(tuple(logins))

    def for_url(self, url: str) -> tuple[str, str] | None:
        """``(username, password)`` for a request to ``url``, or None."""
        target = strip_userinfo(url)
        by_prefix = sorted((lg for lg in self.logins if target.startswith(lg.prefix)), key=lambda lg: -len(lg.prefix))
        same_realm = [lg for lg in self.logins if _realm(lg.prefix) == _realm(target)]
        for login in [*by_prefix, *same_realm]:
            if login.password is not None:
                return login.username, login.password
        from_netrc = _netrc(urlsplit(target).hostname or "")
        if from_netrc is not None:
            return from_netrc
        for login in [*by_prefix, *same_realm]:  # a username without a password: ask the keyring, as uv does
            password = _keyring(login.prefix, login.username)
            if password is not None:
                return login.username, password
        return None

    def auth(self) -> httpx.Auth:
        """An httpx auth that sends the login :meth:`for_url` finds as HTTP basic auth."""
        import httpx  # httpx loads slowly: only when an index is asked

        credentials = self

        class IndexAuth(httpx.Auth):
            def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
                if "Authorization" not in request.headers:
                    login = credentials.for_url(str(request.url))
                    if login is not None:
                        token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
                        request.headers["Authorization"] = f"Basic {token}"
                yield request

        return IndexAuth()


def _netrc(host: str) -> tuple[str, str] | None:
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    if not host or not os.path.isfile(path):
        return None
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (netrc.NetrcParseError, OSError):
        return None  # uv and pip go on without it too
    if entry is None or not entry[2]:
        return None
    return entry[0] or "", entry[2]


def _keyring(url: str, username: str) -> str | None:
    provider = os.environ.get("UV_KEYRING_PROVIDER") or os.environ.get("PIP_KEYRING_PROVIDER")
    exe = shutil.which("keyring")
    if provider != "subprocess" or exe is None:
        return None
    for service in (url, _realm(url)[1]):
        try:
            proc = subprocess.run(
                [exe, "get", service, username], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.rstrip("\n")
    return None
