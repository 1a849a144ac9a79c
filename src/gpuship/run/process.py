"""Start a program with the terminal's stdio, forward signals to it, and return its exit status."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

#: What ``signal.signal`` takes and gives back.
_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None

FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def run_forwarding(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``argv`` with inherited stdin/stdout/stderr (output streams live) and return its exit code.

    SIGTERM, SIGHUP, SIGQUIT and SIGUSR1/2 sent to gpuship are passed on. ^C from a terminal already reaches the
    whole foreground process group, so gpuship itself just waits for the child to finish; a SIGINT sent
    some other way (no terminal on stdin) is passed on too. A child killed by signal N gives 128+N.
    """
    proc = subprocess.Popen(list(argv), env=dict(env) if env is not None else None)

    def forward(signum: int, _frame: object) -> None:
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    previous: dict[signal.Signals, _Handler] = {}
    try:
        sigs = list(FORWARDED) + [signal.SIGINT]
        for s in sigs:
            handler = (lambda *_: None) if (s == signal.SIGINT and _stdin_is_tty()) else forward
            try:
                previous[s] = signal.signal(s, handler)
            except ValueError:  # not the main thread: no forwarding, just wait
                break
        code = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return 128 - code if code < 0 else code


def _stdin_is_tty() -> bool:
    try:
        return os.isatty(0)
    except OSError:
        return False
