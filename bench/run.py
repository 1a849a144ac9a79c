"""``make bench``: gpuship against ``docker build``, in one run on one machine.

Each example is built three ways — ``gpuship build`` (into the Docker Engine), ``docker build`` of the Dockerfile
that ``gpuship dockerfile`` exports, and ``docker build`` of a naive single-stage Dockerfile (bench/naive.py) —
and for each way the run measures:

* cold build: no cache of that tool (a fresh GPUSHIP_CACHE; ``docker build --no-cache``), downloads included;
  the lock (gpuship.lock / requirements.lock.txt) is made once beforehand and shared, and the Debian base image
  of the Docker builds is already in the engine (no registry here: it is made once with debootstrap);
* a second cold build, to tell whether two builds give the same image (gpuship: manifest digest; Docker: image
  ID, and how many layers are the same);
* a rebuild with nothing changed, and a rebuild after a one-line edit of the app's entry module;
* image size: uncompressed (the engine's figure) and compressed (each layer gzip -6, as a push stores it);
* that the image runs: the same smoke command for all three.

Also: gpuship's peak memory (ru_maxrss of the build process), gpuship cold builds for linux/arm64 against
linux/amd64 (both to an OCI archive, fresh caches), the compressed Debian base against the debian:bookworm-slim
equivalent, the function runtime under load (bench/serve_load.py) and, when bench/slim_figures.py exists, the slim
engineer's figures.

    uv run python bench/run.py                       # everything; BENCH_EXAMPLES="numpy-hello conda-env" to choose
    uv run python bench/run.py --no-docs             # leave docs/benchmarks.md alone

Results: bench/results.json and the tables (stdout, and docs/benchmarks.md between its bench markers).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from measure import LocalRegistry, docker, image_sizes, inspect, machine, timed
from naive import write_naive

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = (
    "numpy-hello",
    "conda-env",
    "numba-matmul",
    "cuda-ptx-matmul",
    "cuda-kernel-lib",
    "torch-status",
    "model-function",
    "cog-predictor",
)
#: Examples whose images are gigabytes (CUDA torch): rebuilds are measured once, and no arm64 cross-build.
HEAVY = frozenset({"torch-status"})
WAYS = ("gpuship", "dockerfile", "naive")
BASE_TAG = "gpuship-local/debian:bookworm-slim"
#: The app file the one-line edit goes into, and the smoke command each image must pass (argv, expected text,
#: expected exit code). This machine has no GPU: the GPU-only apps must say so (exit 1) rather than crash.
EDIT = {
    "numpy-hello": "main.py",
    "conda-env": "main.py",
    "numba-matmul": "src/matmul/main.py",
    "cuda-ptx-matmul": "src/ptx_matmul/main.py",
    "cuda-kernel-lib": "main.py",
    "torch-status": "src/torch_status/app.py",
    "model-function": "classifier.py",
    "cog-predictor": "predict.py",
}
SMOKE: dict[str, tuple[list[str], str, int]] = {
    "numpy-hello": ([], "hello from numpy", 0),
    "conda-env": ([], "conda env ok", 0),
    "numba-matmul": ([], "verified", 0),
    "cuda-ptx-matmul": ([], "no GPU visible", 1),
    "cuda-kernel-lib": ([], "no GPU visible", 1),
    "torch-status": (
        ["--entrypoint", "python", "{tag}", "-c", "from torch_status.app import handle; print(handle({'n': 8}))"],
        "'result_ok': True",
        0,
    ),
    "model-function": (
        [
            "--entrypoint",
            "python",
            "{tag}",
            "-c",
            "from classifier import classify; print(classify({'features': [1, 5, 2, 0]}))",
        ],
        "'label': 'versicolor'",
        0,
    ),
    "cog-predictor": (
        [
            "--entrypoint",
            "python",
            "{tag}",
            "-c",
            "from predict import Predictor; p = Predictor(); p.setup(); print(p.predict(values='1,2,3.5', scale=2.0))",
        ],
        "n=3 mean=4.333 max=7.000",
        0,
    ),
}
#: No-change and edit rebuilds are repeated; the median goes into the table (the machine may be shared).
REPEAT = 3
DOCS_START, DOCS_END = "<!-- bench:start -->", "<!-- bench:end -->"


def _median(xs: list[float]) -> float:
    ys = sorted(xs)
    return ys[len(ys) // 2]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _sent(line: str) -> dict[str, Any]:
    """What a docker: output sent, from its line ("... (1 of 7 layers sent, 0.0 MB)" or "... tagged)")."""
    m = re.search(r"(\d+) of (\d+) layers sent, ([\d.]+) MB", line)
    if m is None:
        return {"layers_sent": 0, "mb": 0.0, "tagged_only": "tagged" in line, "ahead": 0, "ahead_mb": 0.0}
    a = re.search(r"(\d+) layers \(([\d.]+) MB\) loaded ahead", line)  # sent while the image was being built
    ahead = {"ahead": int(a[1]), "ahead_mb": float(a[2])} if a else {"ahead": 0, "ahead_mb": 0.0}
    return {"layers_sent": int(m[1]), "of": int(m[2]), "mb": float(m[3]), "tagged_only": False, **ahead}


def _pushed(line: str) -> dict[str, Any]:
    """A registry push's summary line: "pushed REF@DIGEST: N blobs uploaded (X MB), M already there, K mounted"."""
    m = re.search(r"(\d+) blobs uploaded \(([\d.]+) MB\), (\d+) already there", line)
    if m is None:
        raise RuntimeError(f"cannot read the push summary: {line!r}")
    return {"blobs": int(m[1]), "bytes": int(float(m[2]) * 1e6), "skipped": int(m[3])}


class Bench:
    def __init__(self, work: Path, ca: Path | None, registry: LocalRegistry | None = None) -> None:
        self.registry = registry
        self.work = work
        self.ca = ca
        self.tags: list[str] = []
        self.images: set[str] = set()  # every image ID the bench made (re-tagged ones become dangling)
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.gpuship = [sys.executable, "-m", "gpuship"]
        self.n = 0

    def logfile(self, name: str) -> Path:
        self.n += 1
        return self.logs / f"{self.n:03d}-{name}.log"

    def tag(self, example: str, way: str, n: str) -> str:
        t = f"gpuship-bench/{example}-{way}:{n}"
        self.tags.append(t)
        return t

    # -- the three ways --------------------------------------------------------------------------------
    def gpuship_build(
        self,
        src: Path,
        tag: str,
        cache: Path,
        *,
        platform: str = "linux/amd64",
        output: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> tuple[Any, dict]:
        report = self.work / f"report-{tag.replace('/', '_').replace(':', '_')}.json"
        argv = [
            *self.gpuship,
            "-q",
            "build",
            str(src),
            "--platform",
            platform,
            "-t",
            tag,
            "-o",
            output or f"docker:{tag}",
            "--report",
            str(report),
            *extra,
        ]
        # PYTHONDONTWRITEBYTECODE is cleared: an installed gpuship runs from compiled byte code, as uv installs it
        env = {"GPUSHIP_CACHE": str(cache), "PYTHONDONTWRITEBYTECODE": ""}
        if (output and output.startswith("registry:")) or "--cache" in extra:  # the bench's registry is plain HTTP
            argv.insert(argv.index("build") + 1, "--insecure")
        t = timed(argv, env=env, log=self.logfile(f"gpuship-{tag.split('/')[-1]}"))
        t.check(f"gpuship build {src.name}")
        if not output:
            self.images.add(inspect(tag)["Id"])
        return t, json.loads(report.read_text())

    def push_after_edit(self, name: str, src: Path, cache: Path) -> dict[str, Any]:
        """Push the image to a local registry, make a one-line edit, push again: what the second push sends."""
        assert self.registry is not None
        repo = f"{self.registry.host}/bench/{name}"
        t1, r1 = self.gpuship_build(src, f"bench/{name}:push1", cache, output=f"registry:{repo}:push1")
        self._edit(src, name)
        t2, r2 = self.gpuship_build(src, f"bench/{name}:push2", cache, output=f"registry:{repo}:push2")
        first, edit = _pushed(r1["written"][0]), _pushed(r2["written"][0])
        layers = len(r2["platforms"][0]["layers"])
        before = {x["digest"] for x in r1["platforms"][0]["layers"]}
        new_layers = [x for x in r2["platforms"][0]["layers"] if x["digest"] not in before]
        return {
            "first_push_s": t1.seconds,
            "first_push_bytes": first["bytes"],
            "edit_push_s": t2.seconds,
            "edit_push_bytes": edit["bytes"],
            "edit_push_blobs": edit["blobs"],
            "edit_push_skipped": edit["skipped"],
            "edit_push_new_layers": len(new_layers),
            "edit_push_new_layer_bytes": sum(x["size"] for x in new_layers),
            "layers": layers,
            "app_layer_bytes": r2["platforms"][0]["layers"][-1]["size"],
            "line": r2["written"][0],
        }

    def fresh_ci(self, name: str, src: Path, cache: Path) -> dict[str, Any]:
        """A fresh CI machine (an empty gpuship cache) whose registry holds the build cache an earlier build wrote
        (``--cache registry:REF``): the build to a registry (what CI pushes: layers by descriptor, mounted) and to
        Docker (the cache's layers pulled and checked)."""
        assert self.registry is not None
        repo = f"{self.registry.host}/bench/{name}"
        ref = ("--cache", f"registry:{repo}:buildcache")
        log(f"{name}: a fresh CI machine with the registry build cache")
        warm, _ = self.gpuship_build(src, f"bench/{name}:warm", cache, output=f"registry:{repo}:warm", extra=ref)
        out: dict[str, Any] = {"write_cache_s": warm.seconds}
        # a fresh CI machine's engine holds none of the example's layers: the images of the builds before go
        docker("rmi", *(f"gpuship-bench/{name}-gpuship:{n}" for n in ("cold2", "nochange", "edit")), check=False)
        for key, output in (("registry", f"registry:{repo}:ci"), ("docker", None)):
            fresh = self.work / "caches" / f"{name}-fresh-{key}"
            shutil.rmtree(fresh, ignore_errors=True)
            tag = self.tag(name, "gpuship", f"fresh-{key}")
            t, r = self.gpuship_build(src, tag, fresh, output=output, extra=(*ref, "--cache-mode", "read"))
            out[f"to_{key}_s"] = t.seconds
            out[f"to_{key}_new_layers"] = sum(1 for p in r["platforms"] for x in p["layers"] if not x["reused"])
            out[f"to_{key}_written"] = r["written"]
            if key == "docker":
                out["smoke"] = self.smoke(name, tag)
            shutil.rmtree(fresh, ignore_errors=True)
        return out

    def docker_build(self, src: Path, dockerfile: str, tag: str, *, no_cache: bool) -> Any:
        argv = [
            "docker",
            "build",
            "-q",
            "--force-rm",
            "-t",
            tag,
            "-f",
            str(src / dockerfile),
            "--build-arg",
            f"BASE={BASE_TAG}",
        ]
        if no_cache:
            argv.append("--no-cache")
        t = timed([*argv, str(src)], log=self.logfile(f"docker-{tag.split('/')[-1]}"))
        t.check(f"docker build {src.name} ({dockerfile})")
        self.images.add(inspect(tag)["Id"])
        return t

    def smoke(self, example: str, tag: str) -> bool:
        extra, expect, rc = SMOKE[example]
        argv = [a.replace("{tag}", tag) for a in extra] if extra else [tag]
        proc = subprocess.run(["docker", "run", "--rm", *argv], capture_output=True, text=True, timeout=600)
        ok = proc.returncode == rc and expect in proc.stdout
        if not ok:
            log(f"smoke test of {tag} failed: {(proc.stdout + proc.stderr)[-800:]}")
        return ok

    # -- one example ------------------------------------------------------------------------------------
    def example(self, name: str, arm64: bool, ways: tuple[str, ...] = WAYS) -> dict[str, Any]:
        from gpuship.dockerfile import export_dockerfile, plan_dockerfile

        log(f"{name}: preparing the three build folders (lock once, export the Dockerfile)")
        ex = ROOT / "examples" / name
        dirs = {w: self.work / w / name for w in WAYS}
        for d in dirs.values():
            if d.exists():
                shutil.rmtree(d)
            shutil.copytree(ex, d, ignore=shutil.ignore_patterns("gpuship.lock", "__pycache__"))
        from gpuship.cache import Cache

        with Cache().in_use():  # as a gpuship command does: another one does not take our temp files for leftovers
            export_dockerfile(dirs["dockerfile"], ca_bundle=self.ca)
            spec = plan_dockerfile(dirs["dockerfile"], libdeps=False)
        shutil.copy2(dirs["dockerfile"] / "gpuship.lock", dirs["gpuship"] / "gpuship.lock")
        layers_src = dirs["dockerfile"] / ".gpuship" / "docker" / "layers"
        if layers_src.exists():
            shutil.copytree(layers_src, dirs["naive"] / ".gpuship" / "docker" / "layers")
        from gpuship.project import load_project

        write_naive(dirs["naive"], spec, list(load_project(ex).requirements), self.ca)
        out: dict[str, Any] = {"packages": spec.package_count}

        repeat = 1 if name in HEAVY else REPEAT
        if "gpuship" in ways:
            out.update(self._gpuship_way(name, dirs["gpuship"], arm64=arm64, repeat=repeat))

        # docker build of the exported Dockerfile, and of the naive one
        for way, dockerfile in (("dockerfile", "Dockerfile"), ("naive", "Dockerfile.naive")):
            if way not in ways:
                continue
            log(f"{name}: docker build ({way}) cold x2, then rebuilds")
            src = dirs[way]
            ta = self.tag(name, way, "cold1")
            tb = self.tag(name, way, "cold2")
            d1 = self.docker_build(src, dockerfile, ta, no_cache=True)
            d2 = self.docker_build(src, dockerfile, tb, no_cache=True)
            d3 = [
                self.docker_build(src, dockerfile, self.tag(name, way, "nochange"), no_cache=False)
                for _ in range(repeat)
            ]
            d4 = []
            for _ in range(repeat):
                self._edit(src, name)
                d4.append(self.docker_build(src, dockerfile, self.tag(name, way, "edit"), no_cache=False))
            ia, ib = inspect(ta), inspect(tb)
            la, lb = ia["RootFS"]["Layers"], ib["RootFS"]["Layers"]
            out[way] = {
                "cold_runs_s": [d1.seconds, d2.seconds],
                "cold_s": min(d1.seconds, d2.seconds),
                "nochange_runs_s": [t.seconds for t in d3],
                "nochange_s": _median([t.seconds for t in d3]),
                "edit_runs_s": [t.seconds for t in d4],
                "edit_s": _median([t.seconds for t in d4]),
                "digests": [ia["Id"], ib["Id"]],
                "same_digest": ia["Id"] == ib["Id"],
                "same_layers": sum(1 for x, y in zip(la, lb, strict=False) if x == y),
                "layer_count": len(la),
                # a no-change build reuses the newest cached steps: those of the second cold build
                "nochange_same_digest": inspect(f"gpuship-bench/{name}-{way}:nochange")["Id"] == ib["Id"],
                **self._sizes(ta),
                "smoke": self.smoke(name, ta),
            }
            docker("rmi", tb, f"gpuship-bench/{name}-{way}:nochange", f"gpuship-bench/{name}-{way}:edit", check=False)
        return out  # what is left of the example's images goes in cleanup(), when it ends

    def _gpuship_way(self, name: str, src: Path, *, arm64: bool, repeat: int) -> dict[str, Any]:
        """gpuship's figures for one example: cold x2, rebuilds, sizes, smoke; and the arm64/amd64 cold builds."""
        log(f"{name}: gpuship cold build x2")
        caches = [self.work / "caches" / f"{name}-{i}" for i in (1, 2)]
        for c in caches:
            shutil.rmtree(c, ignore_errors=True)
        t1, r1 = self.gpuship_build(src, self.tag(name, "gpuship", "cold1"), caches[0])
        # the same inputs give the same image: with cold1 still in the engine, cold2 would only tag it
        docker("rmi", self.tag(name, "gpuship", "cold1"), check=False)
        t2, r2 = self.gpuship_build(src, self.tag(name, "gpuship", "cold2"), caches[1])
        for n, r in (("cold1", r1), ("cold2", r2)):
            sent = _sent(r["written"][0])
            if sent["tagged_only"] or sent["layers_sent"] + sent["ahead"] < sent.get("of", 0):
                log(
                    f"{name}: warning: the engine already held layers of {n} ({r['written'][0]}): another image "
                    "shares them, so that cold build sent less than a cold engine would take"
                )
        shutil.rmtree(caches[1], ignore_errors=True)
        log(f"{name}: gpuship rebuilds ({repeat}x no change, {repeat}x after a one-line edit)")
        nochange = [self.gpuship_build(src, self.tag(name, "gpuship", "nochange"), caches[0]) for _ in range(repeat)]
        edits = []
        for _ in range(repeat):
            self._edit(src, name)
            edits.append(self.gpuship_build(src, self.tag(name, "gpuship", "edit"), caches[0]))
        engine_sent = [_sent(r["written"][0]) for _, r in edits]
        g_tag = self.tag(name, "gpuship", "cold2")
        sizes, smoke = self._sizes(g_tag), self.smoke(name, g_tag)
        push = self.push_after_edit(name, src, caches[0]) if self.registry is not None else None
        fresh_ci = self.fresh_ci(name, src, caches[0]) if self.registry is not None else None
        own = sum(layer["size"] for p in r1["platforms"] for layer in p["layers"])
        out: dict[str, Any] = {
            "gpuship": {
                "cold_runs_s": [t1.seconds, t2.seconds],
                "cold_written": [r1["written"], r2["written"]],
                "cold_s": min(t1.seconds, t2.seconds),
                "nochange_runs_s": [t.seconds for t, _ in nochange],
                "nochange_s": _median([t.seconds for t, _ in nochange]),
                "edit_runs_s": [t.seconds for t, _ in edits],
                "edit_s": _median([t.seconds for t, _ in edits]),
                "digests": [r1["digest"], r2["digest"]],
                "same_digest": r1["digest"] == r2["digest"],
                "nochange_same_digest": all(r["digest"] == r1["digest"] for _, r in nochange),
                "peak_rss_mb": round(max(t1.max_rss_mb, t2.max_rss_mb), 1),
                "peak_rss_mb_rebuilds": round(max(t.max_rss_mb for t, _ in nochange + edits), 1),
                "nochange_written": nochange[-1][1]["written"],
                "edit_engine_sent": engine_sent,
                "push_after_edit": push,
                "fresh_ci": fresh_ci,
                "own_compressed": own,
                **sizes,
                "smoke": smoke,
            }
        }
        if arm64 and name not in HEAVY:
            log(f"{name}: gpuship cold builds for linux/amd64 and linux/arm64 (OCI archives)")
            self._lock_both(src)
            res = {}
            for plat in ("linux/amd64", "linux/arm64"):
                c = self.work / "caches" / f"{name}-{plat.replace('/', '-')}"
                shutil.rmtree(c, ignore_errors=True)
                archive = self.work / f"{name}-{plat.replace('/', '-')}.oci.tar"
                t, _ = self.gpuship_build(
                    src, f"{name}:{plat.split('/')[1]}", c, platform=plat, output=f"oci-archive:{archive}"
                )
                res[plat] = {
                    "cold_s": t.seconds,
                    "peak_rss_mb": round(t.max_rss_mb, 1),
                    "archive_bytes": archive.stat().st_size,
                }
                archive.unlink()
                shutil.rmtree(c, ignore_errors=True)
            res["ratio_arm64_over_amd64"] = res["linux/arm64"]["cold_s"] / res["linux/amd64"]["cold_s"]
            out["arch"] = res
        shutil.rmtree(caches[0], ignore_errors=True)
        return out

    def _lock_both(self, src: Path) -> None:
        """``src``'s lock made for linux/amd64 and linux/arm64 (not timed): neither cold build then locks. With the
        exported Dockerfile's lock (amd64 alone) the arm64 build resolved again, and the ratio measured the
        resolver (cog-predictor: 1.36)."""
        from gpuship.cache import Cache
        from gpuship.dockerfile import export_dockerfile

        scratch = self.work / "lock-both" / src.name
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(src, scratch)
        with Cache().in_use():
            export_dockerfile(scratch, platforms=("linux/amd64", "linux/arm64"), libdeps=False, ca_bundle=self.ca)
        shutil.copy2(scratch / "gpuship.lock", src / "gpuship.lock")

    def _edit(self, src: Path, name: str) -> None:
        f = src / EDIT[name]
        f.write_text(f.read_text() + f"\n# one-line edit by the benchmark at {time.time():.0f}\n")

    def _sizes(self, tag: str) -> dict[str, int]:
        s = image_sizes(tag)
        return {"size_uncompressed": s["uncompressed"], "size_compressed": s["compressed"], "layers": s["layers"]}

    # -- the rest ---------------------------------------------------------------------------------------
    def base_sizes(self) -> dict[str, Any]:
        """gpuship's Debian base (with CPython) against the debian:bookworm-slim equivalent, compressed."""
        from gpuship.cache import Cache
        from gpuship.sources.debian import build_base

        cache = Cache(self.work / "caches" / "base")
        out: dict[str, Any] = {}
        for arch in ("amd64", "arm64"):
            b = build_base("debian-bookworm", f"linux/{arch}", cache=cache, compression="gzip")
            out[f"gpuship_debian_bookworm_{arch}"] = {
                "compressed": sum(layer.size for layer in b.layers),
                "uncompressed": sum(layer.uncompressed_size for layer in b.layers),
                "packages": len(b.packages),
                "python": b.python.version,
            }
        slim = image_sizes(BASE_TAG)
        out["debian_bookworm_slim_equivalent_amd64"] = {
            "compressed": slim["compressed"],
            "uncompressed": slim["uncompressed"],
            "python": None,
            "how": "debootstrap --variant=minbase + debuerreotype slimify (gpuship.dockerfile.import_debian_base)",
        }
        shutil.rmtree(self.work / "caches" / "base", ignore_errors=True)
        return out

    def cleanup(self, dangling_before: set[str]) -> None:
        """Remove every image the bench made so far (run after each example, and at the end)."""
        for t in self.tags:
            docker("rmi", t, check=False)
        for image in sorted(self.images):
            docker("rmi", image, check=False)
        self.tags.clear()
        self.images.clear()
        # the builder stages of the bench's builds (FROM the imported base, which carries this label)
        now = set(
            docker("images", "-q", "--no-trunc", "-f", "dangling=true", "-f", "label=dev.gpuship.debian-base").split()
        )
        for image in sorted(now - dangling_before):
            docker("rmi", image, check=False)


def serve_figures() -> dict[str, Any]:
    proc = subprocess.run(
        [
            *(sys.executable, str(ROOT / "bench" / "serve_load.py"), "--requests", "2000", "--concurrency", "64"),
            *("--slow-clients", "8", "--burst", "100"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0 and not proc.stdout.strip():
        return {"error": (proc.stderr or "no output")[-1000:]}
    return json.loads(proc.stdout)


def slim_figures(examples: list[str], work: Path) -> dict[str, Any] | None:
    """The slim engineer's hook: bench/slim_figures.py with ``collect(examples, work) -> dict``; its optional
    ``"table"`` (markdown lines) goes into the report."""
    if not (ROOT / "bench" / "slim_figures.py").is_file():
        return None
    import importlib

    mod = importlib.import_module("slim_figures")
    return mod.collect(examples, work)


# -- report ----------------------------------------------------------------------------------------------


def _mb(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e6:,.1f}"


def _ratio(x: float, g: float) -> str:
    if not g:
        return ""
    r = x / g
    return f" ({r:.2f}×)" if r < 0.1 else f" ({r:.1f}×)"


def tables(res: dict[str, Any]) -> str:
    lines = [
        "| example | way | cold build s | no-change rebuild s | rebuild after edit s | compressed MB | uncompressed MB "
        "| same digest twice | runs |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, ex in res["examples"].items():
        if "error" in ex:
            lines.append(f"| {name} | (failed: {ex['error'].splitlines()[0][:80]}) | | | | | | | |")
            continue
        g = ex["gpuship"]
        for way in WAYS:
            r = ex.get(way)
            if r is None:  # not measured (BENCH_WAYS)
                continue
            label = {"gpuship": "gpuship build", "dockerfile": "exported Dockerfile", "naive": "naive Dockerfile"}[way]
            same = (
                "yes"
                if r["same_digest"]
                else (f"no ({r['same_layers']}/{r['layer_count']} layers equal)" if "same_layers" in r else "no")
            )
            lines.append(
                f"| {name} | {label} | {r['cold_s']:.1f}{_ratio(r['cold_s'], g['cold_s'])} "
                f"| {r['nochange_s']:.1f}{_ratio(r['nochange_s'], g['nochange_s'])} "
                f"| {r['edit_s']:.1f}{_ratio(r['edit_s'], g['edit_s'])} "
                f"| {_mb(r['size_compressed'])}{_ratio(r['size_compressed'], g['size_compressed'])} "
                f"| {_mb(r['size_uncompressed'])}{_ratio(r['size_uncompressed'], g['size_uncompressed'])} "
                f"| {same} | {'yes' if r['smoke'] else 'NO'} |"
            )
    heavy = sorted(n for n in res["examples"] if n in HEAVY)
    lines += [
        "",
        "Cold: the better of two cold builds; rebuilds: the median of three"
        + (f" ({', '.join(heavy)}: one of each; no arm64 build)" if heavy else "")
        + ". In brackets: the ratio to gpuship build (above 1: slower or bigger than gpuship). runs: the "
        'example\'s smoke command passes (GPU-only apps: they say "no GPU visible" and exit 1, this machine '
        "has no GPU).",
        "",
    ]
    lines += [
        "| example | gpuship peak memory MB | cold linux/amd64 s | cold linux/arm64 s | arm64 / amd64 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, ex in res["examples"].items():
        if "error" in ex:
            continue
        a = ex.get("arch")
        arch = (
            (f"{a['linux/amd64']['cold_s']:.1f} | {a['linux/arm64']['cold_s']:.1f} | {a['ratio_arm64_over_amd64']:.2f}")
            if a
            else "– | – | –"
        )
        rss = ex["gpuship"].get("peak_rss_mb")
        lines.append(f"| {name} | {'–' if rss is None else f'{rss:.0f}'} | {arch} |")
    sent_rows = []
    for name, ex in res["examples"].items():
        g = ex.get("gpuship") if "error" not in ex else None
        if not g or "edit_engine_sent" not in g:
            continue
        sent = g["edit_engine_sent"][-1]
        engine = (
            f"{sent['layers_sent']} of {sent.get('of', '?')} ({sent['mb']:.1f} MB)" if not sent["tagged_only"] else "–"
        )
        push = g.get("push_after_edit")
        pushed = (
            f"{push['edit_push_blobs']} blobs uploaded, {push['edit_push_skipped']} already there; new layers: "
            f"{push.get('edit_push_new_layers', '?')}, {push.get('edit_push_new_layer_bytes', 0) / 1e3:,.1f} kB "
            f"(first push {push['first_push_bytes'] / 1e6:,.1f} MB)"
            if push
            else "–"
        )
        tagged = "tagged only" if any("tagged" in w for w in g.get("nochange_written", [])) else "loaded"
        sent_rows.append(f"| {name} | {engine} | {pushed} | {tagged} |")
    if sent_rows:
        lines += [
            "",
            "| example | layers sent to Docker after an edit | push to a registry after an edit | no-change rebuild |",
            "| --- | --- | --- | --- |",
            *sent_rows,
        ]
    ci_rows = []
    for name, ex in res["examples"].items():
        g = ex.get("gpuship") if "error" not in ex else None
        f = g.get("fresh_ci") if g else None
        if not f:
            continue
        d = ex.get("dockerfile")
        ci_rows.append(
            f"| {name} | {g['cold_s']:.1f} | {f['to_registry_s']:.1f} ({g['cold_s'] / f['to_registry_s']:.0f}x) "
            f"| {f['to_docker_s']:.1f} ({g['cold_s'] / f['to_docker_s']:.0f}x) "
            f"| {d['cold_s']:.1f}{_ratio(d['cold_s'], f['to_registry_s'])} |"
            if d
            else f"| {name} | {g['cold_s']:.1f} | {f['to_registry_s']:.1f} | {f['to_docker_s']:.1f} | – |"
        )
    if ci_rows:
        lines += [
            "",
            "| example | fresh CI machine, no cache: gpuship cold s | with the registry build cache, to a registry s "
            "| to Docker s | docker build of the exported Dockerfile, cold s |",
            "| --- | ---: | ---: | ---: | ---: |",
            *ci_rows,
            "",
            "Fresh CI machine: an empty gpuship cache; the registry holds the build cache (`--cache registry:REF`) an "
            "earlier build wrote. To a registry the layers go by descriptor (mounted from the cache's repository); "
            "to Docker they are pulled and checked. In brackets: how many times faster than the cold build "
            "(the Dockerfile column: against the build to a registry).",
        ]
    base = res.get("base")
    if base:
        lines += [
            "",
            "| base (compressed / uncompressed MB) | with CPython | compressed | uncompressed |",
            "| --- | --- | ---: | ---: |",
        ]
        for k, v in base.items():
            lines.append(
                f"| {k} | {'yes ' + v['python'] if v.get('python') else 'no'} "
                f"| {_mb(v['compressed'])} | {_mb(v['uncompressed'])} |"
            )
    serve = res.get("serve")
    if serve and "latency_ms" in serve:
        lat = serve["latency_ms"]
        lines += [
            "",
            f"Function runtime under load (bench/serve_load.py): {serve['requests']} requests, "
            f"{serve['concurrency']} concurrent: p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
            f"{serve['throughput_rps']} requests/s, {serve['failed']} failed"
            + (
                f", with {serve['slow_clients']['count']} slow clients trickling bodies."
                if "slow_clients" in serve
                else "."
            ),
        ]
        burst = serve.get("burst")
        if burst:
            lines.append(
                f"A burst of {burst['requests']} at once, default settings: "
                + ", ".join(f"{n} x {code}" for code, n in burst["statuses"].items())
                + f", p99 {burst['latency_ms']['p99']} ms."
            )
    slim = res.get("slim")
    if slim and slim.get("table"):
        lines += ["", *slim["table"]]
    return "\n".join(lines)


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['nproc']} CPUs ({m['cpu']}), {m['memory_gb']} GB memory, {m['disk_total_gb']} GB disk "
        f"({m['disk_free_gb']} GB free), Docker Engine {m['docker_server']} ({m['storage_driver']}, "
        f"{m['builder']} builder), CLI {m['docker_client']}, kernel {m['kernel']}"
    )


def write_docs(res: dict[str, Any], path: Path) -> None:
    text = path.read_text() if path.is_file() else f"# Benchmarks\n\n{DOCS_START}\n{DOCS_END}\n"
    if DOCS_START not in text or DOCS_END not in text:
        text += f"\n{DOCS_START}\n{DOCS_END}\n"
    runs = res.get("runs") or [res]
    if len(runs) > 1:
        head_line = (
            "_Runs (one machine, one day; each figure comes from the run that measured it, see `measured` in "
            "bench/results.json):_\n\n"
            + "\n".join(f"* {r['started']}, commit {str(r['commit'])[:12]}: `{r['command']}`" for r in runs)
        )
        command = ""
    else:
        head_line = (
            f"_Run {res['started']} (gpuship {res['gpuship']}, commit {res['commit'][:12]}), "
            f"examples: {', '.join(res['examples'])}._"
        )
        command = f"Command: `{res['command']}`\n\n"
    block = (
        f"{DOCS_START}\n{head_line}\n\nMachine: {machine_line(res['machine'])}.\n\n{command}{tables(res)}\n{DOCS_END}"
    )
    head, rest = text.split(DOCS_START, 1)
    tail = rest.split(DOCS_END, 1)[1]
    path.write_text(head + block + tail)


def ensure_tools() -> None:
    if shutil.which("debootstrap") is None:
        if os.geteuid() != 0:
            raise SystemExit("bench: debootstrap is missing (apt-get install debootstrap)")
        log("installing debootstrap")
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "debootstrap"],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            stdout=subprocess.DEVNULL,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="gpuship against docker build (see the module doc)")
    ap.add_argument(
        "--examples",
        default=os.environ.get("BENCH_EXAMPLES") or " ".join(EXAMPLES),
        help="space- or comma-separated examples (BENCH_EXAMPLES)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    ap.add_argument(
        "--no-arm64",
        action="store_true",
        default=os.environ.get("BENCH_ARM64") == "0",
        help="skip the linux/arm64 builds (BENCH_ARM64=0)",
    )
    ap.add_argument(
        "--no-serve",
        action="store_true",
        default=os.environ.get("BENCH_SERVE") == "0",
        help="skip the function-runtime load test (BENCH_SERVE=0)",
    )
    ap.add_argument(
        "--no-slim",
        action="store_true",
        default=os.environ.get("BENCH_SLIM") == "0",
        help="skip the slimming figures of bench/slim_figures.py (BENCH_SLIM=0)",
    )
    ap.add_argument(
        "--ways",
        default=os.environ.get("BENCH_WAYS") or ",".join(WAYS),
        help="which of gpuship,dockerfile,naive to build (BENCH_WAYS)",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        default=os.environ.get("BENCH_MERGE") == "1",
        help="add to --out instead of replacing it: the examples and ways run now replace theirs, the rest "
        "is kept, and each run is listed (BENCH_MERGE=1)",
    )
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder, removed)")
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="build nothing: print the tables of --out (bench/results.json) and update the docs",
    )
    args = ap.parse_args(argv)
    if args.render_only:
        res = json.loads(args.out.read_text())
        print(f"Machine: {machine_line(res['machine'])}\n\n{tables(res)}")
        if not args.no_docs:
            write_docs(res, args.docs)
        return 0
    examples = [e for e in args.examples.replace(",", " ").split() if e]
    ways = tuple(w for w in WAYS if w in args.ways.replace(",", " ").split())
    if not ways:
        raise SystemExit(f"bench: --ways names none of {', '.join(WAYS)}")
    for e in examples:
        if not (ROOT / "examples" / e).is_dir():
            raise SystemExit(f"bench: no example {e!r} (choose from {', '.join(EXAMPLES)})")

    ensure_tools()
    from gpuship import __version__
    from gpuship.dockerfile import import_debian_base

    log(f"making sure the Debian base {BASE_TAG} is in the engine (debootstrap, once)")
    import_debian_base(BASE_TAG, "bookworm")
    ca_env = os.environ.get("SSL_CERT_FILE")
    ca = Path(ca_env) if ca_env and Path(ca_env).is_file() else None
    work = args.work or Path(tempfile.mkdtemp(prefix="gpuship-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    dangling = set(
        docker("images", "-q", "--no-trunc", "-f", "dangling=true", "-f", "label=dev.gpuship.debian-base").split()
    )
    # the byte code of gpuship and its libraries, written once (as an installed gpuship has it) before timing
    subprocess.run(
        [sys.executable, "-m", "gpuship", "--help"],
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
        capture_output=True,
        check=True,
    )
    registry = LocalRegistry(work / "registry") if shutil.which("docker-registry") else None
    if registry is None:
        log("docker-registry is not installed: the push after an edit is not measured")
    bench = Bench(work, ca, registry)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    command = "make bench" + (f' BENCH_EXAMPLES="{" ".join(examples)}"' if examples != list(EXAMPLES) else "")
    command += f" BENCH_WAYS={','.join(ways)}" if ways != WAYS else ""
    command += " BENCH_MERGE=1" if args.merge else ""
    run_started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    this_run = {"started": run_started, "commit": commit, "command": command, "examples": examples, "ways": list(ways)}
    prev: dict[str, Any] = json.loads(args.out.read_text()) if args.merge and args.out.is_file() else {}
    runs = prev.get("runs") or (
        [
            {k: prev.get(k) for k in ("started", "commit", "command", "finished")}
            | {"examples": list(prev.get("examples") or {})}
        ]
        if prev
        else []
    )
    res: dict[str, Any] = {
        **{k: v for k, v in prev.items() if k in ("base", "serve", "slim")},
        "started": run_started,
        "gpuship": __version__,
        "commit": commit,
        "machine": machine(),
        "command": command,
        "examples": dict(prev.get("examples") or {}),
        "runs": [*runs, this_run],
    }
    try:
        for name in examples:
            started = time.monotonic()
            try:
                got = bench.example(name, arm64=not args.no_arm64, ways=ways)
                stamp = {w: {"started": run_started, "commit": commit} for w in ways}
                kept = res["examples"].get(name) if args.merge else None
                if kept and "error" not in kept:  # the ways not run now keep their figures from the earlier run
                    got = {**kept, **got, "measured": {**kept.get("measured", {}), **stamp}}
                else:
                    got["measured"] = stamp
                res["examples"][name] = got
            except Exception as exc:  # one failed example is reported, the others still run
                log(f"{name} failed: {exc}")
                res["examples"][name] = {"error": str(exc)}
            log(f"{name}: done in {time.monotonic() - started:.0f}s")
            args.out.write_text(json.dumps(res, indent=2) + "\n")
            # every image of this example goes, the edit builds' re-tagged (dangling) ones too: they share the
            # Debian base layers with the next example, whose cold builds would then load less than a cold engine
            bench.cleanup(dangling)
        log("base sizes")
        res["base"] = bench.base_sizes()
        if not args.no_serve:
            log("function runtime under load")
            res["serve"] = serve_figures()
        slim = None if args.no_slim else slim_figures(examples, work)
        if slim is not None:
            res["slim"] = slim
    finally:
        bench.cleanup(dangling)
        if registry is not None:
            registry.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    res["finished"] = this_run["finished"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    order = {e: i for i, e in enumerate(EXAMPLES)}
    res["examples"] = dict(sorted(res["examples"].items(), key=lambda kv: order.get(kv[0], len(order))))
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"Machine: {machine_line(res['machine'])}\n\n{tables(res)}")
    if not args.no_docs:
        write_docs(res, args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
