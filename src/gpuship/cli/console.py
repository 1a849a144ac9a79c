"""Shared CLI state: the Rich consoles, verbosity, and the one place errors are rendered."""

from __future__ import annotations

import sys
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


def status_progress(status: Any, log_step: Callable[[str], bool]) -> Callable[..., None]:
    """A library ``progress`` callback over a Rich status line.

    ``progress(msg)`` is a step: shown, and logged when ``log_step(msg)`` says so; ``progress(msg, done, total)``
    counts bytes and only updates the status line.
    """

    def progress(msg: str, done: int | None = None, total: int | None = None) -> None:
        if done is not None:
            status.update(msg + (f" {done * 100 // total}%" if total else f" {done / 1e6:.0f} MB"))
            return
        status.update(msg)
        if log_step(msg):
            err.log(msg, markup=False)

    return progress
