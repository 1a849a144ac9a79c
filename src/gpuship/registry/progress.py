"""Transfer progress: a small protocol the push and pull code report to, and a Rich implementation.

The library never prints: callers pass a :class:`TransferProgress` (or nothing). ``advance`` may be given a
negative count when an upload rewinds to the registry's offset after a dropped connection.
"""

from __future__ import annotations

import threading
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class TransferProgress(Protocol):
    def start(self, key: str, description: str, total: int) -> None: ...

    def advance(self, key: str, n: int) -> None: ...

    def finish(self, key: str, status: str) -> None: ...


class NoProgress:
    def start(self, key: str, description: str, total: int) -> None:
        pass

    def advance(self, key: str, n: int) -> None:
        pass

    def finish(self, key: str, status: str) -> None:
        pass


class RichTransferProgress:
    """One Rich bar per blob; use as a context manager around the push or pull."""

    def __init__(self, console: Console | None = None, *, transient: bool = True) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=transient,
        )
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichTransferProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def start(self, key: str, description: str, total: int) -> None:
        with self._lock:
            if key in self._tasks:
                self._progress.reset(self._tasks[key], total=total, description=description)
            else:
                self._tasks[key] = self._progress.add_task(description, total=total)

    def advance(self, key: str, n: int) -> None:
        with self._lock:
            task = self._tasks.get(key)
        if task is not None:
            self._progress.advance(task, n)

    def finish(self, key: str, status: str) -> None:
        with self._lock:
            task = self._tasks.get(key)
        if task is not None:
            t = next((t for t in self._progress.tasks if t.id == task), None)
            desc = (t.description if t is not None else key).split(" ", 1)[0]
            self._progress.update(task, description=f"{desc} {status}", completed=t.total if t is not None else None)
