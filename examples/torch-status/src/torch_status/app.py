"""Answer with the device torch runs on (``cuda`` or ``cpu``) and a small verified computation on it."""

from __future__ import annotations

from typing import Any

import torch


def handle(payload: dict[str, Any]) -> dict[str, Any]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n = int(payload.get("n", 64))
    x = torch.ones((n, n), device=device)
    total = float((x @ x).sum().item())
    return {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "result_ok": total == float(n**3),
    }
