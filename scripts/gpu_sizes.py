"""Compressed sizes of the torch image that goes to the GPU host (scripts/gpu-validation.sh prepare torch).

    uv run python scripts/gpu_sizes.py PROJECT UNPRUNED PRUNED SLIM PARTS_JSON   # prints a table, JSON on --json

PROJECT's gpuship.lock gives the wheels (their sizes as downloaded); UNPRUNED, PRUNED and SLIM are image
references (the build with prune-archs = false, the build for the targets, the traced-slimmed one); PARTS_JSON is
the manifest of SLIM's parts. Sizes are the layers' compressed bytes, as a registry stores them.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

from gpuship.oci.readers import read_image


def wheels(project: Path) -> tuple[int, int]:
    lock = tomllib.loads((project / "gpuship.lock").read_text())
    pkgs = next(t for t in lock["target"] if t["platform"] == "linux/amd64")["package"]
    return len(pkgs), sum(int(p.get("size") or 0) for p in pkgs)


def main(argv: list[str]) -> int:
    as_json = "--json" in argv
    project, unpruned, pruned, slim, parts = [a for a in argv if a != "--json"]
    n, floor = wheels(Path(project))
    rows = {"wheels": floor}
    for name, ref in (("unpruned", unpruned), ("pruned", pruned), ("slim", slim)):
        img = read_image(ref)
        rows[name] = img.size  # type: ignore[union-attr]
    manifest = json.loads(Path(parts).read_text())
    if as_json:
        print(json.dumps({**rows, "wheel_count": n, "parts": len(manifest["parts"]), "archive": manifest["size"]}))
        return 0
    print("torch-status, CUDA torch from PyPI (compressed MB; x = against the wheels)")
    labels = {
        "wheels": f"its {n} wheels (gpuship.lock)",
        "unpruned": "image, all architectures (prune-archs = false)",
        "pruned": 'image, targets = ["H100"] (sm_90 only)',
        "slim": "that image traced-slimmed (GET /status)",
    }
    for key, label in labels.items():
        print(f"  {label:<48} {rows[key] / 1e6:9,.1f}  ({rows[key] / floor:.2f}x)")
    print(
        f"  oci-archive of the slimmed image: {manifest['size'] / 1e6:,.1f} MB in {len(manifest['parts'])} parts of "
        f"at most {max(p['size'] for p in manifest['parts']) / 2**20:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
