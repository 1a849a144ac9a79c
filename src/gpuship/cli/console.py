"""Shared CLI state: the Rich consoles, verbosity, and the one place errors are rendered."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from functools import wraps

# Any: sys.stdout/stderr as replaced at run time, and a decorator's pass-through arguments
from typing import Any, TypeVar

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from ..errors import GpushipError
from ..redact import redact


class _Redacting:
    """The process's stdout or stderr (looked up at each write, as pytest and Rich expect), with the credentials
    of any URL or image reference masked (:func:`gpuship.redact.redact`): no output line ever shows one."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def _stream(self) -> Any:  # Any: sys.stdout or sys.stderr as replaced at run time (pytest, Rich), any file
        return getattr(sys, self._name)

    def write(self, text: str) -> int:
        return int(self._stream.write(redact(text)) or 0)

    def __getattr__(self, attr: str) -> Any:  # Any: the stream's own attributes (flush, isatty, fileno, encoding)
        return getattr(self._stream, attr)


# _Redacting is a file by duck typing (write, and the rest through __getattr__), not an IO[str] subclass
out = Console(file=_Redacting("stdout"), highlight=False, log_path=False)  # type: ignore[arg-type]
#: progress lines carry the time, not the source line that logged them (``console.py:75`` helps nobody)
err = Console(file=_Redacting("stderr"), highlight=False, log_path=False)  # type: ignore[arg-type]  # as above


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

    return wrapper  # type: ignore[return-value]  # wraps keeps fn's signature; mypy sees the (*args, **kwargs) one


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


class _ForTransfers(ProgressColumn):
    """A column drawn for transfer rows only (a step row is its spinner and message)."""

    def __init__(self, inner: ProgressColumn) -> None:
        super().__init__()
        self._inner = inner

    def render(self, task: Task) -> RenderableType:
        return Text("") if task.fields.get("step") else self._inner.render(task)


class _ForSteps(ProgressColumn):
    def __init__(self, inner: ProgressColumn) -> None:
        super().__init__()
        self._inner = inner

    def render(self, task: Task) -> RenderableType:
        return self._inner.render(task) if task.fields.get("step") else Text("")


def _label(key: str) -> str:
    """A transfer's name on screen: a blob digest by its first 12 hex digits."""
    return key[7:19] if key.startswith("sha256:") else key


class RichProgress:
    """The CLI's :class:`gpuship.progress.Progress`: a live status line for steps (each logged when ``log_step``
    says so) and, with ``bars``, one bar per transfer; without, the transfers running side by side share the
    status line (:class:`Transfers`: their bytes and rate) and each finished one is a line of the log.
    Use it as a context manager around the library call; ``clear`` (or the end of the block) takes it down."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        bars: bool = False,
        log_step: Callable[[str], bool] = lambda msg: False,
        transient: bool = True,
        disable: bool = False,
    ) -> None:
        console = console or err
        self._bars, self._log_step, self._disabled = bars, log_step, disable
        self._live = Progress(
            _ForSteps(SpinnerColumn()),
            TextColumn("{task.description}", markup=False),
            _ForTransfers(BarColumn()),
            _ForTransfers(DownloadColumn()),
            _ForTransfers(TransferSpeedColumn()),
            _ForTransfers(TimeRemainingColumn()),
            console=console,
            transient=transient,
            disable=disable,
        )
        self._lock = threading.Lock()
        self._started = False
        self._step: TaskID | None = None
        self._tasks: dict[str, TaskID] = {}
        self._transfers = Transfers()

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()

    def _start(self) -> None:
        if not self._started:
            self._live.start()
            self._started = True

    def _show_step(self, text: str) -> None:
        if self._step is None:
            self._step = self._live.add_task(text, total=None, step=True)
        else:
            self._live.update(self._step, description=text)

    def step(self, message: str) -> None:
        with self._lock:
            self._start()
            self._show_step(message)
        if not self._disabled and self._log_step(message):
            self._live.console.log(message, markup=False)

    def transfer(self, key: str, done: int, total: int | None = None, status: str | None = None) -> None:
        label = _label(key)
        with self._lock:
            self._start()
            if not self._bars and key.startswith("download "):  # parallel downloads: one line for all
                line = self._transfers.update(key.removeprefix("download "), done, total)
                self._show_step(self._transfers.status())
                if line is not None and not self._disabled:
                    self._live.console.print(line, markup=False, highlight=False, soft_wrap=True)
                return
            if not self._bars:
                if status is None:
                    self._show_step(label + (f" {done * 100 // total}%" if total else f" {done / 1e6:.0f} MB"))
                return
            task = self._tasks.get(key)
            if task is None:
                task = self._tasks[key] = self._live.add_task(label, total=total)
            if status is None:
                self._live.update(task, completed=done, total=total)
            else:
                self._live.update(task, description=f"{label} {status}", completed=total or done, total=total or done)

    def clear(self) -> None:
        with self._lock:
            if self._started:
                self._live.stop()
                for task in [*self._tasks.values(), *([self._step] if self._step is not None else [])]:
                    self._live.remove_task(task)
            self._started, self._step, self._tasks = False, None, {}


def when_verbose(msg: str) -> bool:
    """A ``log_step`` for :func:`cli_progress`: every step also becomes a log line with ``-v``."""
    return bool(state.verbose)


def cli_progress(*, bars: bool = False, log_step: Callable[[str], bool] = lambda msg: False) -> RichProgress:
    """The progress a command shows on stderr (nothing with ``--quiet``)."""
    return RichProgress(err, bars=bars, log_step=log_step, disable=state.quiet)
