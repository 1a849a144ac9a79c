"""Which rlimits can actually be given: raising a hard limit (``--ulimit memlock=-1``) needs CAP_SYS_RESOURCE
in whatever process sets it (gpuship's launcher, runc, podman, or dockerd's runc). Some sandboxes drop that
capability even for root; there a container asking for more would not start at all, so the limit is lowered
to the current hard one, with a note."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Sequence

from .options import Ulimit

CAP_SYS_RESOURCE = 24


def has_cap_sys_resource(pid: int | str = "self") -> bool | None:
    """Whether process ``pid`` holds CAP_SYS_RESOURCE (None when its status cannot be read)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << CAP_SYS_RESOURCE))
    except (OSError, ValueError, IndexError):
        return None
    return None


def find_process(name: str) -> int | None:
    """The pid of a local process called ``name`` (``dockerd``), or None."""
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for p in pids:
        try:
            with open(f"/proc/{p}/comm") as fh:
                if fh.read().strip() == name:
                    return int(p)
        except OSError:
            continue
    return None


def possible_ulimits(
    ulimits: Sequence[Ulimit], notify: Callable[[str], None] | None = None, *, setter: int | str | None = "self"
) -> list[Ulimit]:
    """``ulimits``, each hard limit above the current one lowered to it when ``setter`` (the process that will
    set them; None: unknown) may not raise limits."""
    if setter is None or has_cap_sys_resource(setter) is not False:
        return list(ulimits)
    inf = resource.RLIM_INFINITY
    out = []
    for u in ulimits:
        try:
            _, cur_hard = resource.getrlimit(getattr(resource, f"RLIMIT_{u.name.upper()}"))
        except (AttributeError, ValueError, OSError):
            out.append(u)
            continue

        def above(v: int, cur_hard: int = cur_hard) -> bool:
            return cur_hard != inf and (v < 0 or v == inf or v > cur_hard)

        if above(u.hard) or above(u.soft):
            clamped = Ulimit(u.name, cur_hard if above(u.soft) else u.soft, cur_hard)
            if notify:
                notify(f"note: the {u.name} limit cannot be raised to {u} here (no CAP_SYS_RESOURCE); using {clamped}")
            out.append(clamped)
        else:
            out.append(u)
    return out
