"""Shared CLI state: the Rich consoles, verbosity, and the one place errors are rendered."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from rich.console import Console

from ..errors import GpushipError
from ..redact import redact


class _Redacting:
    """The process's stdout or stderr (looked up at each write, as pytest and Rich expect), with the credentials
    of any URL or image reference masked (:func:`gpuship.redact.redact`): no output line ever shows one."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def _stream(self) -> Any:
        return getattr(sys, self._name)

    def write(self, text: str) -> int:
        return int(self._stream.write(redact(text)) or 0)

    def __getattr__(self, attr: str) -> Any:  # flush, isatty, fileno, encoding, ...
        return getattr(self._stream, attr)


out = Console(file=_Redacting("stdout"), highlight=False, log_path=False)  # type: ignore[arg-type]
#: progress lines carry the time, not the source line that logged them (``console.py:75`` helps nobody)
err = Console(file=_Redacting("stderr"), highlight=False, log_path=False)  # type: ignore[arg-type]


class State:
    verbose: int = 0
    quiet: bool = False


state = State()

F = TypeVar("F", bound=Callable[..., Any])


def info(msg: str) -> None:
    if not state.quiet:
        err.print(msg)


def fail(exc: BaseException) -> None:
    """Render a user error as one line (exit 2); with -v, the traceback first."""
    if state.verbose:
        err.print_exception(show_locals=False)
    line = exc.line() if isinstance(exc, GpushipError) else redact(f"{type(exc).__name__}: {exc}")
    from rich.markup import escape  # a message may name [tool.gpuship] tables: not markup

    for detail in getattr(exc, "details", ()):
        err.print(f"  {redact(detail)}", markup=False, highlight=False, soft_wrap=True, style="dim")

    err.print(f"[bold red]error:[/] {escape(line)}", markup=True, highlight=False, soft_wrap=True)
    sys.exit(2)


def handles_errors(fn: F) -> F:
    """Decorator for commands: GpushipError (and OSError from user paths) become one clear line, exit 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GpushipError as exc:
            fail(exc)
        except OSError as exc:
            fail(
                GpushipError(
                    f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), "check the path and its permissions"
                )
            )
        except KeyboardInterrupt:
            err.print("interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


class Transfers:
    """Downloads that run side by side, in bytes: one status line with all of them (a terminal) and one line per
    finished file (what a CI log keeps, at most 80 columns)."""

    WIDTH = 80

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._files: dict[str, tuple[int, int, float]] = {}  # name -> (done, total, started)
        self._started: float | None = None

    def update(self, name: str, done: int, total: int | None) -> str | None:
        """Record ``done`` of ``total`` bytes of ``name``; returns the line to log when it has just finished."""
        now = self._clock()
        if self._started is None:
            self._started = now
        prev = self._files.get(name)
        started = prev[2] if prev is not None else now
        self._files[name] = (done, total or 0, started)
        if total and done >= total and (prev is None or prev[0] < total):
            return self.finished_line(name, total, now - started)
        return None

    def finished_line(self, name: str, size: int, seconds: float) -> str:
        tail = f"  {size / 1e6:,.1f} MB" + (f"  {size / 1e6 / seconds:,.1f} MB/s" if seconds > 0.05 else "")
        head = "downloaded "
        room = self.WIDTH - len(head) - len(tail)
        short = name if len(name) <= room else name[: max(room - 1, 8)] + "…"
        return head + short + tail

    def status(self) -> str:
        """``downloading 3 of 7 files: 412 of 1,830 MB, 45.1 MB/s``."""
        done = sum(d for d, _, _ in self._files.values())
        total = sum(t for _, t, _ in self._files.values())
        running = sum(1 for d, t, _ in self._files.values() if not t or d < t)
        now = self._clock()
        elapsed = now - (self._started if self._started is not None else now)
        rate = f", {done / 1e6 / elapsed:,.1f} MB/s" if elapsed > 0.5 else ""
        of = f" of {total / 1e6:,.0f}" if total else ""
        return f"downloading {running} of {len(self._files)} files: {done / 1e6:,.0f}{of} MB{rate}"


def status_progress(status: Any, log_step: Callable[[str], bool]) -> Callable[..., None]:
    """A library ``progress`` callback over a Rich status line.

    ``progress(msg)`` is a step: shown, and logged when ``log_step(msg)`` says so; ``progress(msg, done, total)``
    counts bytes (:class:`Transfers`: every download's bytes and the rate on the status line, a line per
    finished file in the log).
    """
    transfers = Transfers()
    lock = threading.Lock()  # downloads report from their own threads

    def progress(msg: str, done: int | None = None, total: int | None = None) -> None:
        if done is not None:
            with lock:
                line = transfers.update(msg.removeprefix("download "), done, total)
                status.update(transfers.status())
                if line is not None:
                    err.print(line, markup=False, highlight=False, soft_wrap=True)
            return
        status.update(msg)
        if log_step(msg):
            err.log(msg, markup=False)

    return progress
