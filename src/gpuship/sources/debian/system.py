"""What maintainer scripts would have made, done by hand and only where the image needs it.

* ``/etc/passwd`` and ``/etc/group`` (no shadow files): ``root``, ``nobody``/``nogroup`` and the non-root
  user ``app`` (uid/gid 65532, home ``/home/app``), which is the image's default user;
* ``/etc/nsswitch.conf`` (base-files' template, as its postinst installs it);
* ``/etc/ssl/certs/ca-certificates.crt``: the Mozilla certificates of Debian's ca-certificates package
  concatenated in the order ``update-ca-certificates`` uses (``LC_ALL=C sort`` of the paths), plus
  ``/usr/lib/ssl/cert.pem`` and ``/usr/lib/ssl/certs`` pointing at it so OpenSSL's defaults find it;
* ``/usr/bin/python3 -> python3.X``; ``/bin/sh -> dash`` when dash is installed;
* ``/tmp`` and ``/var/tmp`` (1777), ``/root`` (0700), ``/home/app``.

No ``ld.so.cache`` (libraries live in the standard folders, which the loader searches without one) and
nothing that depends on the clock or the host.
"""

from __future__ import annotations

from collections.abc import Mapping

from ...oci.entry import Entry

APP_UID = APP_GID = 65532
APP_USER = "app"
APP_HOME = "/home/app"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
CA_SOURCE_PREFIX = "usr/share/ca-certificates/"

PASSWD = f"""root:x:0:0:root:/root:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
{APP_USER}:x:{APP_UID}:{APP_GID}:{APP_USER}:{APP_HOME}:/usr/sbin/nologin
"""
GROUP = f"""root:x:0:
nogroup:x:65534:
{APP_USER}:x:{APP_GID}:
"""
NSSWITCH_DEFAULT = """passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      db files
services:       db files
ethers:         db files
rpc:            db files
"""


def ca_bundle(certs: Mapping[str, bytes]) -> bytes:
    """``update-ca-certificates``' bundle: each ``*.crt`` under /usr/share/ca-certificates, C-sorted, newline-ended."""
    out = bytearray()
    for path in sorted(p for p in certs if p.startswith(CA_SOURCE_PREFIX) and p.endswith(".crt")):
        data = certs[path]
        out += data if data.endswith(b"\n") else data + b"\n"
    return bytes(out)


def system_entries(
    *, python_version: str, ca_certs: Mapping[str, bytes], nsswitch: bytes | None, has_dash: bool
) -> list[Entry]:
    out = [
        Entry.file("etc/passwd", PASSWD),
        Entry.file("etc/group", GROUP),
        Entry.file("etc/nsswitch.conf", nsswitch if nsswitch is not None else NSSWITCH_DEFAULT),
        Entry.dir("tmp", 0o1777),
        Entry.dir("var/tmp", 0o1777),
        Entry.dir("root", 0o700),
        Entry.dir("home", 0o755),
        Entry.dir(APP_HOME.lstrip("/"), 0o755, APP_UID, APP_GID),
        Entry.symlink("usr/bin/python3", f"python{python_version}"),
    ]
    bundle = ca_bundle(ca_certs)
    if bundle:
        out += [
            Entry.dir("etc/ssl/certs"),
            Entry.file(CA_BUNDLE, bundle),
            Entry.symlink("usr/lib/ssl/cert.pem", "/" + CA_BUNDLE),
            Entry.symlink("usr/lib/ssl/certs", "/etc/ssl/certs"),
        ]
    if has_dash:
        out.append(Entry.symlink("usr/bin/sh", "dash"))
    return out
