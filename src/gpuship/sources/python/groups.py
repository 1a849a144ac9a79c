"""The layer-group rule: which distributions share a layer, ordered from least to most often changed.

1. ``cuda``       — NVIDIA's CUDA libraries as wheels: ``nvidia-*``, ``cuda-*`` (and TensorRT's library wheels)
2. ``frameworks`` — the big compiled frameworks that pin those libraries (torch, triton, jax, tensorflow,
                    cupy, numba + llvmlite, onnxruntime, ...)
3. ``deps``       — every other dependency
(4. the project itself — the app layer, written by the build)

The first matching group wins; names are compared after PEP 503 normalisation.

Within ``cuda`` and ``frameworks``, the big distributions (a wheel of :data:`OWN_LAYER_BYTES` or more: torch, the
big ``nvidia-*`` libraries, jaxlib, cupy, llvmlite, ...) get a layer each, biggest first, at most
:data:`OWN_LAYER_BUDGET` of them, at the bottom of the environment, CUDA's first (:func:`layer_units`). Such a layer depends on its wheel alone (and the venv
path, Python, prune settings and byte-code compiler), so two projects that lock the same torch and CUDA wheels
get the same digests for those layers, whatever else they install: a registry or a node stores them once.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Protocol, TypeVar

from packaging.utils import canonicalize_name

GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cuda", ("nvidia-*", "cuda-*", "tensorrt-cu*-libs")),
    (
        "frameworks",
        (
            "torch",
            "torchvision",
            "torchaudio",
            "triton",
            "pytorch-triton*",
            "xformers",
            "flash-attn",
            "jax",
            "jaxlib",
            "jax-cuda*",
            "tensorflow",
            "tensorflow-*",
            "tf-keras",
            "keras",
            "tensorrt",
            "tensorrt-cu*",
            "cupy",
            "cupy-*",
            "numba",
            "numba-cuda",
            "llvmlite",
            "onnxruntime",
            "onnxruntime-*",
            "bitsandbytes",
        ),
    ),
    ("deps", ("*",)),
)

GROUP_ORDER = tuple(name for name, _ in GROUPS)


def group_of(distribution: str) -> str:
    name = canonicalize_name(distribution)
    for group, patterns in GROUPS:
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return group
    return GROUPS[-1][0]  # pragma: no cover - the last group matches everything


#: A distribution of the ``cuda`` or ``frameworks`` group whose wheel is at least this big gets a layer of its own.
OWN_LAYER_BYTES = 32 << 20
#: At most this many such layers (the biggest); engines refuse more than 125 layers and gpuship stops at 100.
OWN_LAYER_BUDGET = 16
#: The groups whose big distributions get their own layers.
STABLE_GROUPS = ("cuda", "frameworks")


class _Locked(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def size(self) -> int | None: ...


P = TypeVar("P", bound=_Locked)


def layer_units(packages: Sequence[P]) -> list[tuple[str, list[P]]]:
    """The environment's layers, bottom first, as ``(group, packages)``: the big distributions of the stable groups
    alone (at most :data:`OWN_LAYER_BUDGET`, the biggest), those of ``cuda`` first, biggest first within a group;
    then each group's other distributions together, in group order.

    The big ones sit lowest: they are the layers most likely to be shared with other projects, and an engine keeps
    a layer only under its chain prefix, so a small package added above them leaves them in place. The CUDA
    libraries sit lowest of all: they change least (a framework upgrade often keeps them), and they are the
    quickest big layers to make, so a build to an engine starts loading early (:mod:`gpuship.oci.preload`)."""
    candidates = [p for p in packages if group_of(p.name) in STABLE_GROUPS and (p.size or 0) >= OWN_LAYER_BYTES]
    chosen = sorted(candidates, key=lambda p: (-(p.size or 0), p.key))[:OWN_LAYER_BUDGET]
    big = sorted(chosen, key=lambda p: (GROUP_ORDER.index(group_of(p.name)), -(p.size or 0), p.key))
    alone = {p.key for p in big}
    units: list[tuple[str, list[P]]] = [(group_of(p.name), [p]) for p in big]
    for g in GROUP_ORDER:
        rest = sorted((p for p in packages if p.key not in alone and group_of(p.name) == g), key=lambda p: p.key)
        if rest:
            units.append((g, rest))
    return units
