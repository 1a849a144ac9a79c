"""What some public container registries are known to refuse, checked before an upload starts.

A row matches a registry host by suffix. Sizes are the vendors' documented limits (sources in
docs/registry.md); a layer above one is warned about before any byte is sent, because the registry would
otherwise refuse it only at the end of a long upload.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..oci.image import Image, Index

GB = 1000**3
MiB = 1 << 20


@dataclass(frozen=True)
class RegistryLimits:
    suffix: str
    name: str
    max_layer: int | None = None
    min_chunk: int | None = None  # chunks of a chunked upload smaller than this are refused (except the last)
    note: str = ""


#: Known limits by host suffix; the first match wins.
KNOWN_LIMITS: tuple[RegistryLimits, ...] = (
    RegistryLimits("ghcr.io", "GitHub Container registry", max_layer=10 * GB),
    RegistryLimits("public.ecr.aws", "Amazon ECR Public", max_layer=10_000 * MiB, min_chunk=5 * MiB),
    RegistryLimits(".amazonaws.com", "Amazon ECR", max_layer=52_000 * MiB, min_chunk=5 * MiB),
    RegistryLimits(
        "nvcr.io",
        "NVIDIA NGC",
        note="log in with the user name $oauthtoken and an NGC API key as the password",
    ),
)


def limits_for(host: str) -> RegistryLimits | None:
    h = host.lower().split(":", 1)[0]
    for row in KNOWN_LIMITS:
        if h == row.suffix.lstrip(".") or h.endswith(row.suffix if row.suffix.startswith(".") else "." + row.suffix):
            return row
    return None


def oversized_layers(obj: Image | Index, host: str) -> list[str]:
    """One warning line per layer larger than ``host``'s known per-layer limit."""
    row = limits_for(host)
    if row is None or row.max_layer is None:
        return []
    images = obj.images if isinstance(obj, Index) else (obj,)
    seen: set[str] = set()
    out: list[str] = []
    for img in images:
        for layer in img.layers:
            if layer.size > row.max_layer and layer.digest not in seen:
                seen.add(layer.digest)
                out.append(
                    f"layer {layer.digest[:19]} is {layer.size / GB:.1f} GB; {row.name} refuses layers over "
                    f"{row.max_layer / GB:.1f} GB (split it into smaller layer groups)"
                )
    return out
