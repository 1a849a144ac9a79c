"""The registry options every command that reads or writes a registry takes, the same everywhere.

``--insecure`` and ``--ca-file`` (and their equivalents without a flag: ``GPUSHIP_INSECURE_REGISTRIES=host:port,...``
for plain-HTTP or self-signed registries, Docker's ``/etc/docker/certs.d/HOST/*.crt`` and ``SSL_CERT_FILE`` for
trust) reach :class:`gpuship.registry.RegistryOptions` the same way in build, push, login, image convert/ls,
inspect, run, check, slim, export and deploy.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..registry.options import RegistryOptions

INSECURE_HELP = (
    "Allow plain HTTP and skip TLS certificate checks for registries (a private test registry only; "
    "GPUSHIP_INSECURE_REGISTRIES=host:port,... does it per registry)."
)
CA_HELP = "A PEM file with the CA that signed the registry's certificate (also read: /etc/docker/certs.d/HOST/*.crt)."

INSECURE = typer.Option(False, "--insecure", help=INSECURE_HELP)
CA_FILE = typer.Option(None, "--ca-file", exists=True, dir_okay=False, help=CA_HELP)


def registry_options(insecure: bool = False, ca_file: Path | None = None, **more: object) -> RegistryOptions:
    """The flags as one value (``more``: jobs, chunk_size, ... where a command has them)."""
    return RegistryOptions(insecure=insecure, ca_file=ca_file, **more)  # type: ignore[arg-type]  # more: the typer options of the command, by name
