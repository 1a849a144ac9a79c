"""Calling uv: one place that runs it and turns its error report into one line.

uv explains a failed resolution in a short derivation ("Because you require numpy>2 and numpy<1.20, we can
conclude that your requirements are unsatisfiable."); :func:`explain` keeps that explanation and drops the noise.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import tools
from .errors import GpushipError


def uv_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"NO_COLOR": "1", "UV_NO_PROGRESS": "1"})
    # uv honours SSL_CERT_FILE; pass the system bundle so an intercepting proxy's CA is trusted.
    if "SSL_CERT_FILE" not in env and Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        env["SSL_CERT_FILE"] = "/etc/ssl/certs/ca-certificates.crt"
    if extra:
        env.update(extra)
    return env


def explain(output: bytes | str) -> str:
    """uv's error as one line: the error, its causes and hints, joined."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    parts: list[list[str]] = []  # [kind, text...]
    for raw in text.splitlines():
        line = raw.strip().lstrip("╰├─▶ ").strip()
        if not line:
            continue
        m = re.match(r"^(error|cause|hint|Caused by|warning):\s*(.*)$", line)
        if m:
            parts.append([m.group(1), m.group(2)])
        elif parts and parts[-1][0] != "warning":
            parts[-1].append(line)
    texts = []
    for kind, *body in parts:
        t = " ".join(body).strip()
        if kind == "warning" or not t:
            continue
        if t.startswith("No solution found") and len(parts) > 1:
            continue
        texts.append(f"(uv hint: {t})" if kind == "hint" else t)
    return " ".join(texts) if texts else tools.last_line(text)


class UvFailed(GpushipError):
    """uv refused; ``explanation`` is its one-line reason, ``output`` everything it printed."""

    def __init__(self, message: str, explanation: str, hint: str | None = None, output: str = "") -> None:
        super().__init__(message, hint)
        self.explanation = explanation
        self.output = output


def run_uv(
    args: Sequence[str | os.PathLike[str]],
    *,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    hint: str | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``uv <args>``; a failure is a :class:`UvFailed` whose line carries uv's explanation."""
    exe = tools.require("uv")
    proc = subprocess.run(
        [exe, *[str(a) for a in args]], capture_output=True, cwd=cwd, env=uv_env(env), timeout=timeout, check=False
    )
    if proc.returncode != 0:
        why = explain(proc.stderr or proc.stdout)
        output = (proc.stdout + b"\n" + proc.stderr).decode(errors="replace").strip()
        raise UvFailed(f"{what}: {why}", why, hint, output)
    return proc
