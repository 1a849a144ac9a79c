"""parallel_map: results in input order, GPUSHIP_JOBS honoured, the first error raised after the others finish."""

from __future__ import annotations

import threading
import time

import pytest

from gpuship.errors import ConfigError
from gpuship.parallel import build_jobs, parallel_map


def test_results_keep_their_order_and_run_side_by_side() -> None:
    seen: set[str] = set()

    def slow(x: int) -> int:
        seen.add(threading.current_thread().name)
        time.sleep(0.05 * (4 - x))  # the first item finishes last
        return x * x

    assert parallel_map(slow, range(4), jobs=4) == [0, 1, 4, 9]
    assert len(seen) > 1
    assert parallel_map(slow, [3], jobs=4) == [9] and parallel_map(slow, [], jobs=4) == []


def test_jobs_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUSHIP_JOBS", "3")
    assert build_jobs() == 3
    monkeypatch.setenv("GPUSHIP_JOBS", "zero")
    with pytest.raises(ConfigError, match="GPUSHIP_JOBS='zero' is not a number of jobs"):
        build_jobs()
    monkeypatch.delenv("GPUSHIP_JOBS")
    assert build_jobs() >= 1
    monkeypatch.setenv("GPUSHIP_JOBS", "1")
    names: set[str] = set()
    parallel_map(lambda x: names.add(threading.current_thread().name), range(3))
    assert names == {threading.current_thread().name}  # one job: in the calling thread


def test_an_error_is_raised_once_the_running_calls_are_done() -> None:
    started: list[int] = []
    finished: list[int] = []

    def work(x: int) -> int:
        started.append(x)
        if x == 0:
            raise ValueError("broken")
        time.sleep(0.1)
        finished.append(x)
        return x

    with pytest.raises(ValueError, match="broken"):
        parallel_map(work, range(6), jobs=3)
    time.sleep(0.3)  # nothing still running would finish now
    assert sorted(started) == [0, *sorted(finished)]  # calls not yet started were cancelled, none left half-done


@pytest.mark.parametrize("jobs", [1, 2])
def test_calls_start_in_the_order_given_and_are_heard_in_item_order(jobs: int) -> None:
    """``start`` decides which call begins first; ``each`` hears results in item order, each as soon as it and
    those before it are done (not after all of them)."""
    started: list[int] = []
    heard: list[tuple[int, int, int]] = []  # (item, result, how many calls had started by then)
    lock = threading.Lock()

    def work(x: int) -> int:
        with lock:
            started.append(x)
        time.sleep(0.02)
        return x * 10

    def each(i: int, result: int) -> None:
        with lock:
            heard.append((i, result, len(started)))

    assert parallel_map(work, range(5), jobs=jobs, start=[4, 3, 2, 1, 0], each=each) == [0, 10, 20, 30, 40]
    assert started[:jobs] == [4, 3][:jobs]
    assert [(i, r) for i, r, _ in heard] == [(0, 0), (1, 10), (2, 20), (3, 30), (4, 40)]
    with pytest.raises(ValueError, match="every item once"):
        parallel_map(work, range(3), start=[0, 0, 1])


def test_each_hears_a_result_before_later_calls_finish() -> None:
    """The first item's result is heard while a later, slower call still runs."""
    gate = threading.Event()
    heard_first = threading.Event()

    def work(x: int) -> int:
        if x == 1:
            assert heard_first.wait(5), "item 0 was not heard while item 1 ran"
        return x

    def each(i: int, _: int) -> None:
        if i == 0:
            heard_first.set()
        gate.set()

    assert parallel_map(work, range(2), jobs=2, each=each) == [0, 1]
