"""Run independent pieces of a build side by side: layers whose work is compression and hashing (both release
the GIL), one thread per CPU."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
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


def parallel_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    jobs: int | None = None,
    *,
    each: Callable[[int, R], None] | None = None,
    start: Sequence[int] | None = None,
) -> list[R]:
    """``[fn(x) for x in items]``, run on up to ``jobs`` threads (default :func:`build_jobs`), results in order.

    ``start``: the order the calls begin in, as indices into ``items`` (the longest first finishes soonest),
    default their own. ``each(i, result)`` hears every result in the order of ``items``, as soon as it and all
    before it are done (a build hands finished layers on while later ones are still being made).

    The first exception is raised here once the calls already running have finished; calls not yet started are
    cancelled (none is left half-done).
    """
    todo = list(items)
    order = list(start) if start is not None else list(range(len(todo)))
    if sorted(order) != list(range(len(todo))):
        raise ValueError("start must order every item once")
    n = min(len(todo), jobs or build_jobs())
    if n <= 1:
        done = {i: fn(todo[i]) for i in order}
        return [_heard(each, i, done[i]) for i in range(len(todo))]
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="gpuship-build") as pool:
        futures = {i: pool.submit(fn, todo[i]) for i in order}
        try:
            return [_heard(each, i, futures[i].result()) for i in range(len(todo))]
        except BaseException:
            for f in futures.values():
                f.cancel()
            raise


def _heard(each: Callable[[int, R], None] | None, i: int, result: R) -> R:
    if each is not None:
        each(i, result)
    return result
