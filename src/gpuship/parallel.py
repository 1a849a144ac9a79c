"""Run independent pieces of a build side by side: layers whose work is compression and hashing (both release
the GIL), one thread per CPU."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")


def build_jobs() -> int:
    """How many layers gpuship builds at once: ``GPUSHIP_JOBS``, else the number of CPUs this process may use."""
    env = os.environ.get("GPUSHIP_JOBS", "").strip()
    if env:
        if not (env.isascii() and env.isdigit()) or not 1 <= int(env) <= 1024:
            raise ConfigError(f"GPUSHIP_JOBS={env!r} is not a number of jobs", "give 1 to 1024, or unset it")
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def parallel_map(fn: Callable[[T], R], items: Iterable[T], jobs: int | None = None) -> list[R]:
    """``[fn(x) for x in items]``, run on up to ``jobs`` threads (default :func:`build_jobs`), results in order.

    The first exception is raised here once the calls already running have finished; calls not yet started are
    cancelled (none is left half-done).
    """
    todo = list(items)
    n = min(len(todo), jobs or build_jobs())
    if n <= 1:
        return [fn(x) for x in todo]
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="gpuship-build") as pool:
        return list(pool.map(fn, todo))
