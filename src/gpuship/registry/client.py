"""The HTTP side of the distribution protocol: one :class:`RegistryClient` per registry host.

It owns the connection pool, TLS trust, authentication (anonymous, Basic, Bearer tokens from the
``WWW-Authenticate`` realm, refreshed when they expire mid-push) and retries with backoff (connection
errors, 5xx, ``Retry-After`` on 429). Higher layers (:mod:`.push`, :mod:`.pull`) speak in blobs and
manifests and never see a token.

Nothing here logs a header, a token, a password or a query string: URLs are logged as their path only.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from .. import __version__, tls
from ..errors import RegistryError
from .auth import Challenge, Credentials, lookup_credentials, parse_challenges
from .reference import DOCKER_HUB, DOCKER_HUB_ENDPOINT, normalize_registry

log = logging.getLogger("gpuship.registry")

#: Docker's per-registry trust directory; the engine and skopeo read it too.
DOCKER_CERTS_D = Path("/etc/docker/certs.d")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

Body = bytes | Callable[[], Iterable[bytes]] | None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a request is tried again (connection errors, 5xx, 429)."""

    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based): exponential, with jitter."""
        d = min(self.max_delay, self.base_delay * (2.0 ** (attempt - 1)))
        return d * (0.5 + random.random() / 2)

    def give_up_after(self, failures: int, exc: Exception, message: str, hint: str) -> None:
        """Raise ``RegistryError(message, hint)`` (caused by ``exc``) once ``failures`` tries have failed: all
        :attr:`attempts` of them. The one rule for a loop that starts a transfer again after it breaks."""
        if failures >= self.attempts:
            raise RegistryError(message, hint) from exc


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def insecure_by_env(registry: str) -> bool:
    """``GPUSHIP_INSECURE_REGISTRIES=host:port,...`` marks registries as insecure, like Docker's
    ``insecure-registries`` setting."""
    listed = os.environ.get("GPUSHIP_INSECURE_REGISTRIES", "")
    names = {normalize_registry(x) for x in listed.split(",") if x.strip()}
    return normalize_registry(registry) in names


def _dns_failure(exc: BaseException) -> str | None:
    """The resolver's words when ``exc`` (or what caused it) is a failed host-name lookup, else None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, socket.gaierror):
            return cur.strerror or str(cur)
        text = str(cur)
        for words in ("Name or service not known", "No address associated with hostname", "nodename nor servname"):
            if words in text:
                return words
        cur = cur.__cause__ or cur.__context__
    return None


def endpoint_of(registry: str) -> str:
    reg = normalize_registry(registry)
    return DOCKER_HUB_ENDPOINT if reg == DOCKER_HUB else reg


def ssl_context(registry: str, *, ca_file: Path | str | None = None) -> ssl.SSLContext:
    """TLS trust for ``registry``: the system bundle (:func:`gpuship.tls.context`), Docker's
    ``/etc/docker/certs.d/<host>/*.crt`` for that host, and ``ca_file``."""
    certs_d = DOCKER_CERTS_D / endpoint_of(registry)
    host_certs = sorted(certs_d.glob("*.crt")) if certs_d.is_dir() else []
    return tls.context(required=[ca_file] if ca_file is not None else [], optional=host_certs)


@dataclass
class _Token:
    value: str
    expires_at: float
    scopes: frozenset[str]

    def fresh(self) -> bool:
        return time.monotonic() < self.expires_at - 5


class Transient(Exception):
    """A failure worth trying again (connection dropped, 5xx, 429); ``wait`` is a server-requested delay."""

    def __init__(self, message: str, wait: float | None = None, *, free: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.wait = wait
        self.free = free  # retry at once, without counting it as a failed try


def _redact(url: str) -> str:
    parts = urlsplit(url)
    return parts.path or "/"


_URL_QUERY = re.compile(r"""(https?://[^\s'"?]+)\?[^\s'"]*""")


class _DropQueryStrings(logging.Filter):
    """httpx logs every request URL (INFO) and httpcore every response header (DEBUG); upload URLs and blob
    redirects carry signed query strings (``_state``, ``X-Amz-Signature``), so those are cut from the records."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            return True
        if "?" in text:
            record.msg, record.args = _URL_QUERY.sub(r"\1?…", text), ()
        return True


for _name in ("httpx", "httpcore.http11", "httpcore.http2", "httpcore.connection", "httpcore.proxy"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _DropQueryStrings) for f in _logger.filters):
        _logger.addFilter(_DropQueryStrings())


def _error_body(resp: httpx.Response) -> tuple[str, tuple[str, ...]]:
    """The registry's own words from an error body (``{"errors": [{"code", "message"}]}``), short, and its
    error codes."""
    try:
        data = json.loads(resp.read() or b"{}")
        errs = data.get("errors") or []
        parts, codes = [], []
        for e in errs[:3]:
            code, msg = str(e.get("code", "")), str(e.get("message", ""))
            parts.append(f"{code}: {msg}" if code and msg else (code or msg))
            if code:
                codes.append(code)
        if parts:
            return "; ".join(parts), tuple(codes)
    except (ValueError, AttributeError, httpx.HTTPError):
        pass
    return resp.reason_phrase or f"HTTP {resp.status_code}", ()


def _error_detail(resp: httpx.Response) -> str:
    return _error_body(resp)[0]


def _tls_problem(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or "certificate verify failed"
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return text.split("CERTIFICATE_VERIFY_FAILED", 1)[1].strip(" ]():") or "certificate verify failed"
    return None


def _is_not_tls(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(
        s in text for s in ("wrong version number", "record layer failure", "packet length too long", "http request")
    )


class RegistryClient:
    """Requests to one registry, authenticated and retried. Safe to share between threads.

    ``credentials`` default to what Docker's ``config.json`` holds for the registry. ``insecure`` allows
    plain HTTP and skips certificate checks (for a private test registry only); ``ca_file`` adds a CA.
    """

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        insecure: bool = False,
        ca_file: Path | str | None = None,
        retry: RetryPolicy | None = None,
        docker_config: Path | None = None,
        timeout: float = 300.0,
        max_connections: int = 8,
    ) -> None:
        self.registry = normalize_registry(registry)
        self.host = endpoint_of(self.registry)
        self.retry = retry or RetryPolicy()
        insecure = insecure or insecure_by_env(self.registry)
        self.insecure = insecure
        self._docker_config = docker_config
        self._creds = credentials
        self._scopes: set[str] = set()
        self._token: _Token | None = None
        self._challenge: Challenge | None = None
        self._basic = False
        self._lock = threading.RLock()
        self._scheme = "https"
        verify: ssl.SSLContext | bool = False if insecure else ssl_context(self.registry, ca_file=ca_file)
        self._http = httpx.Client(
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=20.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"User-Agent": f"gpuship/{__version__}"},
            follow_redirects=False,
        )

    # -- lifecycle -------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- credentials and scopes ------------------------------------------------------------------------------
    @property
    def credentials(self) -> Credentials:
        with self._lock:
            if self._creds is None:
                self._creds = lookup_credentials(self.registry, self._docker_config)
            return self._creds

    def add_scope(self, repository: str, actions: str = "pull") -> None:
        """Ask for ``actions`` on ``repository`` in the next token (e.g. ``pull`` on a mount source)."""
        scope = f"repository:{repository}:{actions}"
        with self._lock:
            if scope in self._scopes:
                return
            self._scopes.add(scope)
            if self._token is not None and scope not in self._token.scopes:
                self._token = None  # fetched again, with the wider scope, before the next request

    @property
    def scopes(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._scopes)

    # -- URLs ------------------------------------------------------------------------------------------------
    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return f"{self._scheme}://{self.host}{path_or_url}"

    def resolve(self, base: str, location: str) -> str:
        """A ``Location`` header made absolute (registries may answer with a path)."""
        return urljoin(self.url(base), location)

    # -- requests --------------------------------------------------------------------------------------------
    def _auth_header(self) -> tuple[str | None, _Token | str | None]:
        """The Authorization value to send, and what it was (the token, ``"basic"``, or None)."""
        with self._lock:
            if self._challenge is not None and (self._token is None or not self._token.fresh()):
                self._token = self._fetch_token(self._challenge)
            if self._token is not None:
                return f"Bearer {self._token.value}", self._token
            if self._basic:
                return self.credentials.basic_header(), "basic"
            return None, None

    def _send_once(
        self, method: str, url: str, headers: dict[str, str], content: Body, stream: bool, follow: bool
    ) -> tuple[httpx.Response, _Token | str | None]:
        auth, token = self._auth_header()
        hdrs = dict(headers)
        if auth:
            hdrs["Authorization"] = auth
        body = content() if callable(content) else content
        req = self._http.build_request(method, url, headers=hdrs, content=body)
        resp = self._http.send(req, stream=stream, follow_redirects=follow)
        log.debug("%s %s -> %s", method, _redact(url), resp.status_code)
        return resp, token

    def send(
        self,
        method: str,
        path_or_url: str,
        *,
        headers: dict[str, str] | None = None,
        content: Body = None,
        ok: Sequence[int] = (200,),
        retries: bool = True,
        stream: bool = False,
        what: str = "",
    ) -> httpx.Response:
        """Send a request; returns a response whose status is in ``ok``.

        Authentication is answered transparently (one 401 per request triggers a token fetch or Basic).
        With ``retries``, connection errors, 5xx and 429 are retried with backoff; without, they raise
        :class:`Transient` so the caller can resynchronise (an upload resumes from the registry's offset).
        Other statuses raise a :class:`RegistryError` with the registry's message.
        """
        attempt = 0
        authed = False
        follow = method in ("GET", "HEAD")
        while True:
            attempt += 1
            url = self.url(path_or_url)
            try:
                try:
                    resp, used = self._send_once(method, url, headers or {}, content, stream, follow)
                except httpx.TransportError as exc:
                    raise self._transport_problem(exc, url) from exc
                if resp.status_code == 401 and not authed:
                    authed = True
                    self._answer_401(resp, used)
                    resp.close()
                    attempt -= 1
                    continue
                if resp.status_code in RETRY_STATUSES:
                    wait = (
                        retry_after_seconds(resp.headers.get("retry-after")) if resp.status_code in (429, 503) else None
                    )
                    detail = _error_detail(resp)
                    resp.close()
                    raise Transient(f"{self.host} answered {resp.status_code} ({detail})", wait)
            except Transient as exc:
                if exc.free:
                    attempt -= 1
                    continue
                if not retries or attempt >= self.retry.attempts:
                    if not retries:
                        raise
                    raise RegistryError(
                        f"{what or method + ' ' + _redact(url)} failed after {attempt} tries: {exc.message}",
                        "the registry is down or overloaded; try again later",
                    ) from exc
                delay = self.retry.delay(attempt)
                if exc.wait is not None:
                    delay = min(max(delay, exc.wait), self.retry.max_retry_after)
                log.info("retrying %s %s in %.1fs: %s", method, _redact(url), delay, exc.message)
                time.sleep(delay)
                continue
            if resp.status_code == 401:
                challenge = parse_challenges(resp.headers.get("www-authenticate", ""))
                resp.close()
                if (
                    any(c.params.get("error") == "insufficient_scope" for c in challenge)
                    and not self.credentials.anonymous
                ):
                    raise RegistryError(
                        f"{self.host} denied {what or method + ' ' + _redact(url)}: the account has no access to it",
                        "check the repository name and the account's permissions",
                    )
                raise self._refused()
            if resp.status_code not in ok:
                raise self.error(resp, what or f"{method} {_redact(url)}")
            return resp

    def _transport_problem(self, exc: httpx.TransportError, url: str) -> Exception:
        tls = _tls_problem(exc)
        if tls is not None:
            return RegistryError(
                f"the TLS certificate of {self.host} is not trusted ({tls})",
                f"pass --ca-file with the registry's CA certificate (or put it in {DOCKER_CERTS_D}/{self.host}/ca.crt); "
                "--insecure skips the check",
            )
        dns = _dns_failure(exc)
        if dns is not None:  # a name that does not resolve will not resolve on the next try either
            return RegistryError(
                f"cannot resolve the registry host {urlsplit(url).hostname or self.host}: {dns}",
                "check the host name in the reference, and this machine's DNS and network",
            )
        if isinstance(exc, httpx.ConnectError) and _is_not_tls(exc):
            if self.insecure and urlsplit(url).scheme == "https" and urlsplit(url).netloc == self.host:
                self._scheme = "http"  # an insecure registry that speaks plain HTTP, like Docker's fallback
                log.info("%s speaks plain HTTP; using http:// (insecure)", self.host)
                return Transient(f"{self.host} speaks plain HTTP", free=True)
            return RegistryError(
                f"{self.host} does not answer TLS (it may be a plain-HTTP registry)",
                f"use --insecure (or GPUSHIP_INSECURE_REGISTRIES={self.host}) for a private plain-HTTP registry",
            )
        kind = type(exc).__name__
        return Transient(f"connection to {self.host} failed ({kind}: {exc or 'no detail'})")

    def error(self, resp: httpx.Response, what: str) -> RegistryError:
        detail, codes = _error_body(resp)
        resp.close()
        status = resp.status_code
        if status == 403:
            message = f"{self.host} denied {what}: {detail}"
            hint: str | None = (
                f"the account has no access; check the repository name and its permissions (gpuship login {self.registry})"
            )
        elif status == 404:
            message, hint = f"{what}: not found on {self.host} ({detail})", "check the repository name and tag"
        else:
            message, hint = f"{what} failed on {self.host}: HTTP {status} ({detail})", None
        return RegistryError(message, hint, status=status, codes=codes, detail=detail)

    def _refused(self) -> RegistryError:
        creds = self.credentials
        if creds.anonymous:
            return RegistryError(
                f"{self.host} requires a login", f"run gpuship login {self.registry} -u USER --password-stdin"
            )
        who = f"user {creds.username!r}" if creds.username else "the stored token"
        return RegistryError(
            f"{self.host} refused the credentials of {who} ({creds.source or 'given'})",
            f"check the password or token, then run gpuship login {self.registry} again",
        )

    # -- authentication --------------------------------------------------------------------------------------
    def _answer_401(self, resp: httpx.Response, used: _Token | str | None) -> None:
        challenges = parse_challenges(resp.headers.get("www-authenticate", ""))
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        with self._lock:
            if bearer is not None and bearer.realm:
                if self._token is not None and self._token is not used:
                    return  # another thread already refreshed it
                for scope in bearer.scope.split():
                    self._scopes.add(scope)
                self._challenge = bearer
                self._token = self._fetch_token(bearer)
                return
            if basic is not None:
                if self.credentials.anonymous or used == "basic":
                    raise self._refused()
                self._basic = True  # (another thread may have set it already: then this request just retries)
                return
        raise RegistryError(
            f"{self.host} asked for authentication gpuship does not speak ({resp.headers.get('www-authenticate', 'none')[:60]})"
        )

    def _fetch_token(self, challenge: Challenge) -> _Token:
        creds = self.credentials
        scopes = frozenset(self._scopes)
        realm = challenge.realm
        attempt = 0
        while True:
            attempt += 1
            try:
                if creds.identity_token:
                    form = {
                        "grant_type": "refresh_token",
                        "refresh_token": creds.identity_token,
                        "client_id": "gpuship",
                    }
                    if challenge.service:
                        form["service"] = challenge.service
                    if scopes:
                        form["scope"] = " ".join(sorted(scopes))
                    resp = self._http.post(realm, data=form)
                else:
                    params: list[tuple[str, str]] = []
                    if challenge.service:
                        params.append(("service", challenge.service))
                    params += [("scope", s) for s in sorted(scopes)]
                    headers = {}
                    if not creds.anonymous:
                        params.append(("account", creds.username))
                        headers["Authorization"] = creds.basic_header()
                    resp = self._http.get(realm, params=tuple(params), headers=headers, follow_redirects=True)
            except httpx.TransportError as exc:
                problem = self._transport_problem(exc, realm)
                if isinstance(problem, Transient) and attempt < self.retry.attempts:
                    time.sleep(self.retry.delay(attempt))
                    continue
                if isinstance(problem, Transient):
                    raise RegistryError(f"cannot reach the token service of {self.host}: {problem.message}") from exc
                raise problem from exc
            log.debug("token request to %s -> %s", _redact(realm), resp.status_code)
            if resp.status_code in RETRY_STATUSES and attempt < self.retry.attempts:
                resp.close()
                time.sleep(self.retry.delay(attempt))
                continue
            if resp.status_code in (401, 403):
                resp.close()
                raise self._refused()
            if resp.status_code != 200:
                raise self.error(resp, "the token request")
            try:
                data = resp.json()
                value = str(data.get("token") or data.get("access_token") or "")
                expires_in = float(data.get("expires_in") or 60)
            except (ValueError, AttributeError, TypeError) as exc:
                raise RegistryError(f"the token service of {self.host} answered no JSON token") from exc
            if not value:
                raise RegistryError(f"the token service of {self.host} answered without a token")
            return _Token(value, time.monotonic() + max(expires_in, 10.0), scopes)

    # -- small helpers for the protocol ----------------------------------------------------------------------
    def ping(self) -> None:
        """``GET /v2/``: proves the registry answers and that the credentials (if any) are accepted."""
        self.send("GET", "/v2/", ok=(200,), what="the registry check (GET /v2/)").close()

    def stream_body(self, resp: httpx.Response, chunk: int = 1 << 20) -> Iterator[bytes]:
        try:
            yield from resp.iter_bytes(chunk)
        except httpx.TransportError as exc:
            raise Transient(f"download from {self.host} broke off ({type(exc).__name__})") from exc
        finally:
            resp.close()

    def describe(self) -> dict[str, object]:
        return {"registry": self.registry, "host": self.host, "scheme": self._scheme, "scopes": sorted(self.scopes)}
