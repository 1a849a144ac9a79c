"""A linear classifier whose weights live in a safetensors file: loaded once, at start, by the runtime's warm-up.

The weights come from ``$CUSTOM_MODEL_DIR`` when a model is mounted there (``gpuship run --model custom=DIR``,
``gpuship deploy ... --model custom=SOURCE``), else from the ``model/`` directory baked into the image.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

BAKED = Path(__file__).resolve().parent / "model"
_model: dict[str, Any] = {}


def model_dir() -> Path:
    mounted = Path(os.environ.get("CUSTOM_MODEL_DIR") or "/nonexistent")
    return mounted if (mounted / "classifier.safetensors").is_file() else BAKED


def load() -> None:
    """Read the weights and labels (the runtime calls this before it reports ready)."""
    where = model_dir()
    weights = where / "classifier.safetensors"
    tensors = load_file(str(weights))
    _model.update(
        w=tensors["weight"],
        b=tensors["bias"],
        labels=json.loads((where / "config.json").read_text())["labels"],
        source="mounted" if where != BAKED else "baked",
        sha256=hashlib.sha256(weights.read_bytes()).hexdigest(),
    )


def classify(payload: dict[str, Any]) -> dict[str, Any]:
    """``{"features": [4 numbers]}`` -> the label with the highest score, and every score."""
    if not _model:
        load()
    x = np.asarray(payload["features"], dtype=np.float32)
    scores = _model["w"] @ x + _model["b"]
    return {
        "label": _model["labels"][int(np.argmax(scores))],
        "scores": [round(float(s), 4) for s in scores],
        "model": _model["source"],
        "weights_sha256": _model["sha256"],
    }


classify.warmup = load  # type: ignore[attr-defined]
