"""Load the gpuship function runtime on loopback and print what happened as JSON.

    uv run python bench/serve_load.py                      # starts the runtime with the example below
    uv run python bench/serve_load.py --url http://HOST:PORT --requests 5000 --concurrency 128
    uv run python bench/serve_load.py --slow-clients 8 --burst 100   # the hostile-client runs (issue 16)

Every request carries an id that the function echoes, so a lost, failed or crossed answer is counted,
not just a slow one. Output: counts by status, failures, p50/p90/p99/max latency and throughput.

``--slow-clients N``: while the load runs, N more clients each send request headers and then trickle the body
a byte every half second (a new upload whenever the runtime answers one, 408 after its BODY_TIMEOUT); their
answers are counted under ``slow_clients``. They must cost the real requests nothing: 0 failed.
``--burst N``: afterwards, a runtime with the *default* settings (MAX_WORKERS, MAX_QUEUE, QUEUE_TIMEOUT as
shipped) gets N requests at once, each on its own connection; ``burst`` reports its statuses (no 503 wanted).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "src" / "gpuship" / "serve" / "runtime.py"


# The function the runtime serves in this benchmark: a little CPU work, and the id echoed back.
def example(payload: dict) -> dict:
    n = int(payload.get("n", 200))
    return {"id": payload.get("id"), "sum": sum(i * i for i in range(n))}


@dataclass
class RunningRuntime:
    """A runtime process started by :func:`start_runtime`."""

    proc: subprocess.Popen[str]
    url: str
    log: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "".join(self.log)


@contextmanager
def start_runtime(
    function: str,
    *,
    cwd: Path | str,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    ready_timeout: float = 60.0,
    wait_ready: bool = True,
) -> Iterator[RunningRuntime]:
    """Run ``python runtime.py FUNCTION`` on a free loopback port; yield once it listens (and is ready)."""
    port = free_port()
    full_env = dict(os.environ)
    full_env.update({"HOST": "127.0.0.1"})
    full_env.update(env or {})
    full_env["PORT"] = str(port)
    proc = subprocess.Popen(
        [python, str(RUNTIME), function],
        cwd=str(cwd),
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    rt = RunningRuntime(proc, f"http://127.0.0.1:{port}")

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            rt.log.append(line)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        path = "/readyz" if wait_ready else "/healthz"
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                with urllib.request.urlopen(rt.url + path, timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:  # refused while starting; HTTPError (503) while warming up
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"the runtime exited with {proc.returncode}:\n{rt.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the runtime did not answer {path} in {ready_timeout:.0f}s:\n{rt.output()}")
            time.sleep(0.05)
        yield rt
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def _load(url: str, requests: int, concurrency: int, n: int) -> dict:
    """``concurrency`` threads, each with its own keep-alive connection, share ``requests`` ids."""
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    lock = threading.Lock()
    ids = iter(range(requests))
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    latencies: list[float] = []
    mismatched = 0
    checked = 0

    def count(table: dict[str, int], key: str) -> None:
        with lock:
            table[key] = table.get(key, 0) + 1

    def worker() -> None:
        nonlocal mismatched, checked
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            while True:
                with lock:
                    rid = next(ids, None)
                if rid is None:
                    return
                body = json.dumps({"id": rid, "n": n}).encode()
                t0 = time.perf_counter()
                try:
                    conn.request("POST", "/invoke", body, {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    data = resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    count(errors, type(exc).__name__)
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=60)
                    continue
                elapsed = time.perf_counter() - t0
                count(statuses, str(resp.status))
                body = json.loads(data) if resp.status == 200 else None
                with lock:
                    latencies.append(elapsed)
                    if isinstance(body, dict) and "id" in body:  # functions that echo the id are checked
                        checked += 1
                        if body["id"] != rid:
                            mismatched += 1
        finally:
            conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    ok = statuses.get("200", 0) - mismatched
    return {
        "requests": requests,
        "concurrency": concurrency,
        "ok": ok,
        "failed": requests - ok,
        "statuses": dict(sorted(statuses.items())),
        "transport_errors": errors,
        "ids_checked": checked,
        "mismatched": mismatched,
        "seconds": round(elapsed, 3),
        "throughput_rps": round(requests / elapsed, 1) if elapsed else 0.0,
        "latency_ms": {
            "p50": round(_percentile(latencies, 50) * 1000, 2),
            "p90": round(_percentile(latencies, 90) * 1000, 2),
            "p99": round(_percentile(latencies, 99) * 1000, 2),
            "max": round((latencies[-1] if latencies else 0.0) * 1000, 2),
        },
    }


def run_load(url: str, requests: int = 2000, concurrency: int = 64, n: int = 200, slow_clients: int = 0) -> dict:
    """Fire ``requests`` invocations, ``concurrency`` at a time, at the runtime at ``url`` (while
    ``slow_clients`` clients trickle bodies at it)."""
    if not slow_clients:
        return _load(url, requests, concurrency, n)
    stop = threading.Event()
    answers: dict[str, int] = {}
    threads = [threading.Thread(target=_trickle, args=(url, stop, answers), daemon=True) for _ in range(slow_clients)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # the slow uploads are under way before the load starts
    try:
        result = _load(url, requests, concurrency, n)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    result["slow_clients"] = {"count": slow_clients, "answers": dict(sorted(answers.items()))}
    return result


def _trickle(url: str, stop: threading.Event, answers: dict[str, int]) -> None:
    """One slow client: headers, then a body byte every 0.5 s; a fresh upload whenever one is answered."""
    parsed = urllib.parse.urlsplit(url)
    head = (
        f"POST /invoke HTTP/1.1\r\nHost: {parsed.netloc}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000000\r\n\r\n"
    ).encode()
    while not stop.is_set():
        outcome = "open at the end"
        try:
            with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 80), timeout=10) as s:
                s.sendall(head)
                while not stop.is_set():
                    s.sendall(b" ")
                    readable, _, _ = select.select([s], [], [], 0.5)
                    if readable:
                        first = s.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
                        outcome = first.split()[1] if first.startswith("HTTP/") else "closed"
                        break
        except OSError as exc:
            outcome = type(exc).__name__
        answers[outcome] = answers.get(outcome, 0) + 1


def run_burst(url: str, requests: int = 100, n: int = 200) -> dict:
    """``requests`` invocations at the same moment, each on its own connection."""
    return _load(url, requests, requests, n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running runtime (default: start one with this file's example function)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-workers", type=int, default=8, help="MAX_WORKERS of the runtime started here")
    parser.add_argument("--work", type=int, default=200, help="loop length the example function runs")
    parser.add_argument("--slow-clients", type=int, default=0, help="clients trickling bodies during the load")
    parser.add_argument("--burst", type=int, default=0, help="then N requests at once at default settings")
    args = parser.parse_args(argv)
    if args.url:
        result = run_load(args.url, args.requests, args.concurrency, args.work, args.slow_clients)
        if args.burst:
            result["burst"] = run_burst(args.url, args.burst, args.work)
    else:
        env = {"MAX_WORKERS": str(args.max_workers), "MAX_QUEUE": str(args.concurrency), "LOG_LEVEL": "WARNING"}
        with start_runtime("serve_load:example", cwd=Path(__file__).parent, env=env) as rt:
            result = run_load(rt.url, args.requests, args.concurrency, args.work, args.slow_clients)
            result["server"] = {"max_workers": args.max_workers, "max_queue": args.concurrency}
        if args.burst:
            with start_runtime("serve_load:example", cwd=Path(__file__).parent, env={"LOG_LEVEL": "WARNING"}) as rt:
                result["burst"] = run_burst(rt.url, args.burst, args.work)
                result["burst"]["server"] = "default settings"
    print(json.dumps(result, indent=2))
    failed = result["failed"] + (result["burst"]["failed"] if "burst" in result else 0)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
