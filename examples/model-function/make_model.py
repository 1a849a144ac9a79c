"""Write model/classifier.safetensors and model/config.json (run: python make_model.py [DIR] [--swap]).

Standard library only: the safetensors format is an 8-byte little-endian header length, a JSON header and the
raw little-endian data, so the same inputs give the same bytes. ``--swap`` writes other weights (class i scores
feature 2 - i: a second model, for trying a mounted one).
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path


def write_safetensors(path: Path, tensors: dict[str, tuple[list[int], list[float]]]) -> None:
    """``tensors``: name -> (shape, values in row-major order), stored as float32."""
    header: dict[str, object] = {}
    data = b""
    for name in sorted(tensors):
        shape, values = tensors[name]
        raw = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--swap"]
    out = Path(args[0]) if args else Path(__file__).resolve().parent / "model"
    out.mkdir(parents=True, exist_ok=True)
    rows = [0, 1, 2] if "--swap" not in sys.argv else [2, 1, 0]
    # 3 classes x 4 features: class i scores feature rows[i] (sepal length, sepal width, petal length)
    weight = [1.0 if j == rows[i] else 0.0 for i in range(3) for j in range(4)]
    write_safetensors(out / "classifier.safetensors", {"weight": ([3, 4], weight), "bias": ([3], [0.1, 0.2, 0.3])})
    labels = ["setosa", "versicolor", "virginica"]
    (out / "config.json").write_text(json.dumps({"labels": labels}, indent=2) + "\n")


if __name__ == "__main__":
    main()
