"""The layer-group rule: which distributions share a layer, ordered from least to most often changed.

1. ``cuda``       — NVIDIA's CUDA libraries as wheels: ``nvidia-*``, ``cuda-*`` (and TensorRT's library wheels)
2. ``frameworks`` — the big compiled frameworks that pin those libraries (torch, triton, jax, tensorflow,
                    cupy, numba + llvmlite, onnxruntime, ...)
3. ``deps``       — every other dependency
(4. the project itself — the app layer, written by the build)

The first matching group wins; names are compared after PEP 503 normalisation. Two projects on the same torch
(and so the same CUDA wheels) share those two layers byte for byte.
"""

from __future__ import annotations

import fnmatch

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
