"""The image's ``User`` (``name``, ``uid``, ``name:group``, ``uid:gid``) resolved against its own /etc/passwd and
/etc/group, the way runc and Docker do it: a name must exist; a bare uid need not (gid then 0, home ``/``);
supplementary groups are those /etc/group lists the user in."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import GpushipError
from .launcher import resolve_in_root


@dataclass(frozen=True)
class ExecUser:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    name: str = ""


def _read_table(rootfs: str, path: str) -> list[list[str]]:
    try:
        with open(resolve_in_root(rootfs, path), encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    return [ln.split(":") for ln in lines if ln.strip() and not ln.startswith("#")]


def resolve_user(rootfs: str, spec: str) -> ExecUser:
    """Resolve ``spec`` (the image config's or ``--user``) inside the unpacked image at ``rootfs``."""
    user_part, _, group_part = (spec or "").partition(":")
    user_part = user_part.strip() or "0"
    passwd = [r for r in _read_table(rootfs, "/etc/passwd") if len(r) >= 7]
    group = [r for r in _read_table(rootfs, "/etc/group") if len(r) >= 3]

    entry = None
    if user_part.isdigit():
        uid = int(user_part)
        entry = next((r for r in passwd if r[2] == user_part), None)
    else:
        entry = next((r for r in passwd if r[0] == user_part), None)
        if entry is None:
            raise GpushipError(
                f"the image has no user {user_part!r} in /etc/passwd",
                "use a numeric --user UID[:GID], or add the user to the image",
            )
        uid = int(entry[2])
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    home = entry[5] if entry is not None and entry[5] else "/"
    name = entry[0] if entry is not None else ""

    if group_part.strip():
        g = group_part.strip()
        if g.isdigit():
            gid = int(g)
        else:
            row = next((r for r in group if r[0] == g), None)
            if row is None or not row[2].isdigit():
                raise GpushipError(f"the image has no group {g!r} in /etc/group", "use a numeric GID, or add the group")
            gid = int(row[2])
    groups = [gid]
    if name:
        for r in group:
            members = [m.strip() for m in r[3].split(",")] if len(r) > 3 else []
            if name in members and r[2].isdigit() and int(r[2]) not in groups:
                groups.append(int(r[2]))
    return ExecUser(uid, gid, tuple(groups), home, name)
