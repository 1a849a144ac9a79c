"""TLS trust, made in one place for every client gpuship opens (registries, the Debian mirror, package indexes).

The system bundle is trusted (``SSL_CERT_FILE`` first, so an intercepting proxy's CA set for pip and uv is
trusted here too), plus the certificates a caller adds: ``optional`` ones (Docker's per-host
``/etc/docker/certs.d``) are skipped with a warning when unreadable, ``required`` ones (``--ca-file``) are a user
error.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

from .errors import GpushipError

#: Debian's CA bundle: the host's, and the one in every gpuship image.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

log = logging.getLogger("gpuship.tls")


def context(*, required: Sequence[Path | str] = (), optional: Sequence[Path | str] = ()) -> ssl.SSLContext:
    """A client context trusting the system bundle, ``optional`` and ``required`` certificates (PEM)."""
    bundle = os.environ.get("SSL_CERT_FILE") or (SYSTEM_CA_BUNDLE if os.path.isfile(SYSTEM_CA_BUNDLE) else None)
    ctx = ssl.create_default_context(cafile=bundle)
    for crt in optional:
        try:
            ctx.load_verify_locations(cafile=str(crt))
        except (OSError, ssl.SSLError):
            log.warning("ignoring unreadable CA certificate %s", crt)
    for crt in required:
        try:
            ctx.load_verify_locations(cafile=str(crt))
        except (OSError, ssl.SSLError) as exc:
            raise GpushipError(f"cannot use {crt} as a CA certificate: {exc}", "give a PEM file with the CA") from exc
    return ctx
