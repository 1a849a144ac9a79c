"""Image size figures: built, after GPU architecture pruning, after traced slimming, against the physical floor.

For each example the image is built with ``gpuship.build.build`` (one shared cache), and its compressed size
(the sum of its gzip layer blobs, what a registry stores) is reported:

* ``unpruned``: built with ``prune-archs = false`` (only for examples with ``[tool.gpuship.gpu] targets``);
* ``built``: built as the example says — for GPU examples, with the fatbin code of GPUs outside ``targets`` pruned
  (the build does it: ``gpuship.slim.archs``);
* ``slim``: ``built``, then traced slimming (``gpuship.slim.slim_image``) with the image's own command as the
  workload (torch-status: ``GET /status`` on its function runtime), proven by a second run on the slimmed image;
* ``slim_unpruned``: traced slimming alone (of ``unpruned``), to tell the two apart;
* ``floor``: the physical floor — the compressed inputs the image is made of: the wheels (their sizes in the
  example's ``gpuship.lock``) and the .debs (their ``Size`` in the Debian index the base came from).

    uv run python bench/sizes.py                     # numpy-hello and numba-matmul, a table
    uv run python bench/sizes.py --json              # the same as JSON on stdout
    uv run python bench/sizes.py --torch             # also examples/torch-status (CUDA torch from PyPI: ~3 GB)
    uv run python bench/sizes.py --examples numpy-hello --json

Slimming runs the workload in the built-in runner, so it needs root (runc or the namespaced chroot); without it
the slim figures are left out with the reason. ``collect(examples, work)`` is the hook ``bench/run.py`` calls.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ("numpy-hello", "numba-matmul")
HEAVY = ("torch-status",)


def log(msg: str) -> None:
    print(f"[sizes] {msg}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _copy(name: str, dest: Path, prune: bool) -> Path:
    src = ROOT / "examples" / name
    target = dest / (name if prune else f"{name}-unpruned")
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
    if not prune:
        py = target / "pyproject.toml"
        text = py.read_text()
        if "[tool.gpuship.gpu]\n" not in text:
            raise ValueError(f"{name} has no [tool.gpuship.gpu] table")
        py.write_text(text.replace("[tool.gpuship.gpu]\n", "[tool.gpuship.gpu]\nprune-archs = false\n", 1))
    return target


def _has_targets(name: str) -> bool:
    data = tomllib.loads((ROOT / "examples" / name / "pyproject.toml").read_text())
    gpu = data.get("tool", {}).get("gpuship", {}).get("gpu", {})
    return bool(gpu.get("targets")) and gpu.get("prune-archs", True) is not False


def _sizes(image: Any) -> dict[str, int]:
    return {
        "compressed": image.size,
        "uncompressed": sum(layer.uncompressed_size for layer in image.layers),
        "layers": len(image.layers),
    }


def wheel_floor(project: Path, platform: str) -> dict[str, Any]:
    """The wheels of ``gpuship.lock`` for ``platform``: count and total size (bytes as downloaded)."""
    lock = tomllib.loads((project / "gpuship.lock").read_text())
    for target in lock.get("target", []):
        if target.get("platform") == platform:
            pkgs = target.get("package", [])
            return {
                "wheels": len(pkgs),
                "bytes": sum(int(p.get("size") or 0) for p in pkgs),
                "unsized": [p["name"] for p in pkgs if not p.get("size")],
            }
    raise ValueError(f"{project}/gpuship.lock has no target {platform}")


def deb_floor(result: Any, cache: Any) -> dict[str, Any]:
    """The .debs of the image's Debian base: their ``Size`` in the index they were resolved from."""
    from gpuship.sources.debian import get_profile
    from gpuship.sources.debian.aptsources import suites_for
    from gpuship.sources.debian.repository import Repository

    plan = result.plan
    cfg = plan.config
    plat = result.platforms[0]
    suites = suites_for(
        get_profile(plan.base).codename, mirror=cfg.debian_mirror(), security_mirror=cfg.debian.get("security-mirror")
    )
    repo = Repository(suites, cache)
    try:
        index = repo.index(plat.platform.architecture)
        total = 0
        missing: list[str] = []
        for name, version, _arch in plat.debian_packages:
            cand = index.get(name)
            if cand is None or cand.version != version:  # the index moved on since the build
                missing.append(f"{name}={version}")
                continue
            total += cand.size
        return {"debs": len(plat.debian_packages), "bytes": total, "unsized": missing}
    finally:
        repo.close()


def _build(project: Path, cache: Any) -> Any:
    from gpuship.build import build
    from gpuship.plan import BuildOptions

    return build(BuildOptions(project_dir=project), cache=cache)


def _probe(name: str, image: Any) -> Any:
    from gpuship.slim import Probe

    if name == "torch-status":
        port = _free_port()
        return Probe(http="/status", port=port, env={"PORT": str(port)}, timeout=900)
    return Probe(timeout=900)


def _slim(name: str, image: Any, cache: Any) -> dict[str, Any]:
    from gpuship.slim import SlimOptions, slim_image

    started = time.monotonic()
    res = slim_image(
        image, SlimOptions(probe=_probe(name, image), allow_failure=True), cache=cache, progress=lambda m: log(f"  {m}")
    )
    proof = res.verified
    return {
        **_sizes(res.image),
        "digest": res.image.digest,
        "files_removed": len(res.removed),
        "bytes_removed": res.bytes_removed,
        "proof": proof.to_json() if proof else None,
        "kept_by_rule": res.kept.reasons(),
        "whole_distributions": list(res.whole_distributions),
        "seconds": round(time.monotonic() - started, 1),
    }


def measure(name: str, work: Path, cache: Any) -> dict[str, Any]:
    """Every figure of one example (module doc)."""
    out: dict[str, Any] = {}
    log(f"{name}: build")
    project = _copy(name, work, prune=True)
    started = time.monotonic()
    built = _build(project, cache)
    image = built.platforms[0].image
    out["built"] = {**_sizes(image), "digest": image.digest, "seconds": round(time.monotonic() - started, 1)}
    archs = (built.platforms[0].pruned or {}).get("gpu_archs")
    if archs:
        out["built"]["pruned_for"] = archs.get("targets")
        out["built"]["fatbin_bytes_pruned"] = archs.get("saved")
    platform = str(built.platforms[0].platform)
    out["platform"] = platform
    wheels = wheel_floor(project, platform)
    debs = deb_floor(built, cache)
    out["floor"] = {"compressed": wheels["bytes"] + debs["bytes"], "wheels": wheels, "debs": debs}

    unpruned = None
    if _has_targets(name):
        log(f"{name}: build with prune-archs = false")
        unpruned = _build(_copy(name, work, prune=False), cache).platforms[0].image
        out["unpruned"] = {**_sizes(unpruned), "digest": unpruned.digest}

    if os.geteuid() != 0:
        out["slim"] = {"skipped": "traced slimming runs the workload in the built-in runner, which needs root"}
        return out
    log(f"{name}: traced slimming")
    out["slim"] = _slim(name, image, cache)
    if unpruned is not None:
        log(f"{name}: traced slimming of the unpruned image")
        out["slim_unpruned"] = _slim(name, unpruned, cache)
    return out


def table(results: dict[str, Any]) -> list[str]:
    """Markdown lines: compressed MB per stage, and each stage against the floor."""

    def mb(d: dict[str, Any] | None) -> str:
        return "–" if not d or "compressed" not in d else f"{d['compressed'] / 1e6:,.1f}"

    def x(d: dict[str, Any] | None, floor: int) -> str:
        return "" if not d or "compressed" not in d or not floor else f" ({d['compressed'] / floor:.2f}×)"

    lines = [
        "| example | floor (wheels + .debs) | built, all archs | arch-pruned | arch-pruned + traced slim | traced slim only |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} | | | | |")
            continue
        floor = r["floor"]["compressed"]
        unpruned = r.get("unpruned") or r["built"]
        lines.append(
            f"| {name} | {floor / 1e6:,.1f} | {mb(unpruned)}{x(unpruned, floor)} | {mb(r['built'])}{x(r['built'], floor)} "
            f"| {mb(r.get('slim'))}{x(r.get('slim'), floor)} | {mb(r.get('slim_unpruned') or r.get('slim'))}"
            f"{x(r.get('slim_unpruned') or r.get('slim'), floor)} |"
        )
    lines.append("")
    lines.append("Compressed MB (gzip layers, as a registry stores them); × = against the floor.")
    return lines


def collect(
    examples: list[str] | None = None, work: Path | None = None, *, torch: bool | None = None
) -> dict[str, Any]:
    """``bench/run.py``'s hook: the figures for the examples it runs that this script covers, plus a table.

    torch-status when it is among ``examples`` (``BENCH_SLIM_TORCH=0`` leaves it out), with ``torch=True`` or with
    ``BENCH_SLIM_TORCH=1`` (it downloads CUDA torch: ~3 GB).
    """
    from gpuship.cache import Cache

    if torch is None:  # with torch-status among the examples, unless BENCH_SLIM_TORCH=0
        flag = os.environ.get("BENCH_SLIM_TORCH")
        torch = flag == "1" or (flag != "0" and "torch-status" in (examples or ()))
    wanted = [e for e in (examples or DEFAULT) if e in DEFAULT or (torch and e in HEAVY)]
    if torch and "torch-status" not in wanted:
        wanted.append("torch-status")
    if work is not None:
        Path(work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpuship-sizes-", dir=work))
    cache = Cache()
    results: dict[str, Any] = {}
    try:
        for name in wanted:
            started = time.monotonic()
            try:
                results[name] = measure(name, work, cache)
            except Exception as exc:  # noqa: BLE001 - one failed example is reported, the others still run
                log(f"{name} failed: {type(exc).__name__}: {exc}")
                results[name] = {"error": f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"}
            results[name]["total_seconds"] = round(time.monotonic() - started, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"examples": results, "table": table(results)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    ap.add_argument("--examples", help=f"comma-separated (default: {','.join(DEFAULT)})")
    ap.add_argument("--torch", action="store_true", help="also examples/torch-status (heavy: CUDA torch from PyPI)")
    ap.add_argument("--work", type=Path, help="where to copy the projects to (default: the temporary folder)")
    args = ap.parse_args(argv)
    examples = [e.strip() for e in args.examples.split(",")] if args.examples else list(DEFAULT)
    if args.torch and "torch-status" not in examples:
        examples.append("torch-status")
    res = collect(examples, args.work, torch=args.torch or "torch-status" in examples)
    if args.json:
        print(json.dumps(res, indent=2, sort_keys=True))
    else:
        print("\n".join(res["table"]))
    return 1 if any("error" in r for r in res["examples"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
