"""How long work reports what it is doing: one small protocol, and a value that ignores it all.

The library never prints. Its long jobs (build, pull, push, slim, unpack) take a :class:`Progress` and tell it
two kinds of things, as go-containerregistry's ``remote.WithProgress`` is told ``Update{Total, Complete}``:

* :meth:`Progress.step` -- a step starts ("locking dependencies", "[linux/amd64] installing the Python
  environment"); it lasts until the next step, or until :meth:`Progress.clear`.
* :meth:`Progress.transfer` -- bytes moved for one transfer named by ``key`` (a blob digest, a download): ``done``
  of ``total`` so far, counted from the start of that transfer. Transfers may run side by side (parallel
  downloads, pushes with ``--jobs``), each under its own key, from any thread. An upload that rewinds to the
  registry's offset reports a smaller ``done``; ``status`` ("pushed", "cached", "mounted from REPO") ends it.

:data:`NO_PROGRESS` is the default everywhere; the CLI passes its Rich implementation
(:class:`gpuship.cli.console.RichProgress`). :class:`Totalled` folds many transfers into one (a base image's
layers shown as one "pulling base image REF" line).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Progress(Protocol):
    """What a long job reports to. Every method returns at once and may be called from any thread."""

    def step(self, message: str) -> None:
        """A step starts; ``message`` says what it does."""

    def transfer(self, key: str, done: int, total: int | None = None, status: str | None = None) -> None:
        """``done`` bytes of transfer ``key`` have moved (of ``total``, when known); ``status`` ends it."""

    def clear(self) -> None:
        """gpuship's own steps are over for now (what runs next owns the terminal: a container's output)."""


class NoProgress:
    """A :class:`Progress` that ignores everything."""

    def step(self, message: str) -> None:
        pass

    def transfer(self, key: str, done: int, total: int | None = None, status: str | None = None) -> None:
        pass

    def clear(self) -> None:
        pass


NO_PROGRESS: Progress = NoProgress()


class Totalled:
    """Many transfers reported to ``progress`` as one, under ``key``: their bytes and totals added up."""

    def __init__(self, progress: Progress, key: str) -> None:
        self._progress, self._key = progress, key
        self._lock = threading.Lock()
        self._done: dict[str, int] = {}
        self._total: dict[str, int] = {}

    def step(self, message: str) -> None:
        self._progress.step(message)

    def transfer(self, key: str, done: int, total: int | None = None, status: str | None = None) -> None:
        with self._lock:
            self._done[key] = done
            if total is not None:
                self._total[key] = max(total, 0)
            done_all, total_all = sum(self._done.values()), sum(self._total.values())
        self._progress.transfer(self._key, done_all, total_all or None)

    def clear(self) -> None:
        self._progress.clear()


@contextmanager
def stage(progress: Progress, message: str) -> Iterator[None]:
    """``message`` as the step for the length of the block, then :meth:`Progress.clear` (what follows is not
    gpuship's: ``gpuship run`` hands the terminal to the container)."""
    progress.step(message)
    try:
        yield
    finally:
        progress.clear()
