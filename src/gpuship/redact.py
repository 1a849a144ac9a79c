"""Credentials out of everything gpuship writes or says.

An index URL (``https://user:token@host/simple``), an image reference typed with a login
(``user:token@registry/app``) or a URL in a label carries a secret in its *userinfo*. gpuship uses such
credentials where they are needed (downloads, registry requests) but never writes them down: not in an image,
the lock, the build report, the SBOM, a log line or an error message. :func:`redact` is applied where text
leaves the process: every :class:`~gpuship.errors.GpushipError` line, the CLI's output, the build report.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

#: ``scheme://userinfo@`` in a URL.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s@'\"<>]+)@")
#: ``user:password@host/...`` at the start of a word (an image reference typed with a login); never a digest.
_BARE_USERINFO = re.compile(r"(?<![^\s'\"(=,])(?P<userinfo>[^\s/@:'\"]+:[^\s/@'\"]+)@(?!sha256:)(?=[^\s/@]+/)")
MASK = "***"


def redact(text: str) -> str:
    """``text`` with the userinfo of every URL and reference replaced by ``***``."""
    if "@" not in text:
        return text
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _BARE_USERINFO.sub(f"{MASK}@", text)


def strip_userinfo(url: str) -> str:
    """``url`` without its user and password (``https://u:p@host/x`` -> ``https://host/x``)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def redact_all(value: object) -> object:
    """Every string in a JSON-like value, redacted (for reports)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return redact_object(value)
    if isinstance(value, (list, tuple)):
        return [redact_all(v) for v in value]
    return value


def redact_object(value: Mapping[str, object]) -> dict[str, object]:
    """:func:`redact_all` of a JSON object (keys are redacted too)."""
    return {redact(k): redact_all(v) for k, v in value.items()}
