"""Measuring helpers for the benchmark: timed child processes (wall time, peak RSS), image sizes in the engine
(uncompressed, and gzip-compressed the way a registry push would store them), and facts about the machine."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Timed:
    seconds: float
    returncode: int
    max_rss_mb: float
    stdout: str
    stderr: str

    def check(self, what: str) -> Timed:
        if self.returncode != 0:
            tail = "\n".join((self.stderr or self.stdout).strip().splitlines()[-25:])
            raise RuntimeError(f"{what} failed (exit {self.returncode}):\n{tail}")
        return self


# Runs the measured command and writes its wall time and peak RSS to the pipe whose fd is argv[1]. The measuring is
# done in this small process, not the benchmark's own, because Linux carries a process's peak RSS across fork and
# exec: a child of the benchmark (hundreds of MB by then) reported at least the benchmark's peak, whatever it used.
_LAUNCHER = """
import os, sys, time
report, argv = int(sys.argv[1]), sys.argv[2:]
start = time.monotonic()
pid = os.fork()
if pid == 0:
    os.close(report)
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
os.write(report, f"{time.monotonic() - start} {usage.ru_maxrss}".encode())
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def timed(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None, log: Path | None = None
) -> Timed:
    """Run ``argv``; its wall time and peak resident memory (``ru_maxrss`` of wait4: the command and the
    descendants it waited for, as the largest of them), measured by a small launcher (see ``_LAUNCHER``)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    out_f = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115
    report_r, report_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(report_w), *argv],
            env=full_env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=out_f,
            text=True,
            pass_fds=(report_w,),
        )
    finally:
        os.close(report_w)
    stdout = proc.stdout.read() if proc.stdout else ""
    proc.wait()
    with os.fdopen(report_r, "rb") as fh:
        report = fh.read().decode().split()
    if len(report) != 2:
        raise RuntimeError(f"the launcher of {argv[0]} reported nothing (exit {proc.returncode})")
    seconds, max_rss_kb = float(report[0]), int(report[1])
    stderr = ""
    if log:
        out_f.close()  # type: ignore[union-attr]
        stderr = log.read_text(errors="replace")
    return Timed(seconds, proc.returncode, max_rss_kb / 1024, stdout, stderr)


def docker(*args: str, check: bool = True, input: bytes | None = None) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    return proc.stdout.decode(errors="replace")


def inspect(tag: str) -> dict:
    return json.loads(docker("image", "inspect", tag))[0]


def image_sizes(tag: str) -> dict[str, int]:
    """``uncompressed``: what the engine reports (the layers' unpacked size); ``compressed``: the sum of the
    layers' tar streams gzip-compressed (level 6, as a push does), each distinct layer once."""
    uncompressed = int(inspect(tag)["Size"])
    proc = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    compressed = 0
    layers = 0
    seen: set[str] = set()
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith("layer.tar") or member.name in seen:
                continue
            seen.add(member.name)
            layers += 1
            fh = tar.extractfile(member)
            assert fh is not None
            comp = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip wrapper
            while chunk := fh.read(1 << 20):
                compressed += len(comp.compress(chunk))
            compressed += len(comp.flush())
    if proc.wait() != 0:
        raise RuntimeError(f"docker save {tag} failed")
    return {"uncompressed": uncompressed, "compressed": compressed, "layers": layers}


def machine() -> dict[str, object]:
    mem = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    docker_root = docker("info", "--format", "{{.DockerRootDir}}", check=False).strip() or "/var/lib/docker"
    du = shutil.disk_usage(docker_root if Path(docker_root).exists() else "/")
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem / 2**30, 1),
        "disk_total_gb": round(du.total / 2**30, 1),
        "disk_free_gb": round(du.free / 2**30, 1),
        "kernel": platform.release(),
        "docker_server": docker("version", "--format", "{{.Server.Version}}", check=False).strip(),
        "docker_client": docker("version", "--format", "{{.Client.Version}}", check=False).strip(),
        "storage_driver": docker("info", "--format", "{{.Driver}}", check=False).strip(),
        "builder": "classic (no buildx plugin)"
        if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode != 0
        else "buildkit (buildx)",
    }


class LocalRegistry:
    """Debian's ``docker-registry`` on a free loopback port (plain HTTP), its storage under ``root``: where the
    benchmark pushes, to count the bytes a push after an edit sends."""

    def __init__(self, root: Path) -> None:
        import socket

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {root / 'storage'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n"
        )
        log = open(root / "registry.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
        log.close()
        import urllib.request

        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"docker-registry did not start: {(root / 'registry.log').read_text()[-500:]}")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
