"""Install a wheel into a venv tree, as layer entries, without unpacking it to disk.

The wheel spec (PEP 427 / the binary distribution format): files at the archive root go to site-packages;
``<name>-<version>.data/<scheme>/`` files go to the scheme's directory (``scripts`` -> ``bin`` with a ``#!python``
shebang rewritten, ``purelib``/``platlib`` -> site-packages, ``headers`` -> ``include/site/pythonX.Y/<name>``,
``data`` -> the venv root); ``entry_points.txt`` console and GUI scripts become launchers in ``bin``. Every
entry is owned by root with mode 0644 (0755 for executables and directories), and reads its bytes straight from
the zip when the layer is written. ``RECORD`` is rewritten by the caller once pruning and bytecode are known.
"""

from __future__ import annotations

import base64
import configparser
import csv
import hashlib
import io
import posixpath
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO

from packaging.utils import canonicalize_name, parse_wheel_filename

from ...errors import IntegrityError
from ...oci import Entry, clean_path
from ...streams import sha256_stream

SCRIPT_TEMPLATE = """\
#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from {module} import {import_name}
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit({func}())
"""

INSTALLER = b"gpuship\n"


def record_hash(data: bytes) -> str:
    """A RECORD hash: ``sha256=<urlsafe base64, no padding>``."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def record_hash_of(entry: Entry) -> str:
    """:func:`record_hash` of a file entry's bytes, read a chunk at a time (a wheel's file may be a GB library)."""
    if entry.open is None:
        return record_hash(b"")
    with entry.open() as fh:
        return "sha256=" + base64.urlsafe_b64encode(sha256_stream(fh)).rstrip(b"=").decode()


@dataclass
class InstalledFile:
    """One file a wheel installs. ``rel`` is relative to the venv root (``lib/python3.11/site-packages/x.py``)."""

    rel: str
    entry: Entry
    record: str = ""  # the RECORD hash when the bytes are the wheel's own, else "" (computed when needed)


@dataclass
class WheelInstall:
    name: str
    version: str
    dist_info: str  # relative to the venv root
    files: list[InstalledFile] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)


def open_wheel(path: Path | str, filename: str) -> zipfile.ZipFile:
    """The wheel at ``path`` as a zip; a damaged one is an :class:`IntegrityError`, not a traceback."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise IntegrityError(f"{filename} is not a readable wheel ({exc})", "download it again; it is damaged") from exc


def _open_member(wheel: str, member: str) -> IO[bytes]:
    """A member read through its own handle on the wheel, so the reader outlives the caller's."""
    return zipfile.ZipFile(wheel).open(member)


def _mode(info: zipfile.ZipInfo) -> int:
    unix = info.external_attr >> 16
    return 0o755 if unix & 0o111 else 0o644


def _read_record(zf: zipfile.ZipFile, path: str) -> dict[str, str]:
    try:
        text = zf.read(path).decode()
    except KeyError:
        return {}
    out = {}
    for row in csv.reader(io.StringIO(text)):
        if row and len(row) >= 2 and row[1]:
            out[row[0]] = row[1]
    return out


def console_scripts(entry_points: str) -> list[tuple[str, str]]:
    """``[(name, "module:attr")]`` from ``entry_points.txt`` (console_scripts and gui_scripts)."""
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep case: configparser's documented hook
    try:
        parser.read_string(entry_points)
    except configparser.Error as exc:
        raise IntegrityError(f"entry_points.txt cannot be read: {exc}") from exc
    out = []
    for section in ("console_scripts", "gui_scripts"):
        if parser.has_section(section):
            out += [(k.strip(), v.strip()) for k, v in parser.items(section)]
    return sorted(out)


def launcher(python: str, target: str) -> bytes:
    """A console-script launcher, as pip and uv write them."""
    spec = re.sub(r"\s*\[.*\]\s*$", "", target).strip()
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise IntegrityError(f"entry point {target!r} is not 'module:function'")
    import_name = attr.split(".")[0]
    return SCRIPT_TEMPLATE.format(
        python=python, module=module.strip(), import_name=import_name, func=attr.strip()
    ).encode()


def install_wheel(
    zf: zipfile.ZipFile, filename: str, *, venv: str, python_minor: str, reopen: bool = False
) -> WheelInstall:
    """The files a wheel installs into the venv at ``venv`` (an absolute path in the image).

    Entries read from ``zf``, which must stay open until the layer is written; with ``reopen`` each entry
    opens the wheel file again by path instead (for entries handed to another module).
    """
    dist_name, version, _, _ = parse_wheel_filename(filename)
    site = f"lib/python{python_minor}/site-packages"
    python = f"{venv.rstrip('/')}/bin/python"
    names = [i.filename for i in zf.infolist()]
    dist_infos = {n.split("/", 1)[0] for n in names if re.match(r"^[^/]+\.dist-info/METADATA$", n)}
    want = canonicalize_name(dist_name)
    matches = [d for d in dist_infos if canonicalize_name(d[: -len(".dist-info")].rsplit("-", 1)[0]) == want]
    if len(matches) != 1:
        raise IntegrityError(f"{filename} has no single .dist-info directory for {dist_name}", "the wheel is broken")
    dist_info = matches[0]
    data_dir = dist_info[: -len(".dist-info")] + ".data"
    record = _read_record(zf, f"{dist_info}/RECORD")
    out = _WheelFiles(
        zf, filename, clean_path(venv), reopen, WheelInstall(str(dist_name), str(version), f"{site}/{dist_info}")
    )
    for info in zf.infolist():
        if info.is_dir():
            continue
        name = info.filename
        if name == f"{dist_info}/RECORD" or name.startswith(f"{dist_info}/RECORD."):
            continue  # rewritten later (RECORD.jws / RECORD.p7s signatures no longer match once rewritten)
        rec = record.get(name, "")
        if name.startswith(data_dir + "/"):
            scheme, _, rest = name[len(data_dir) + 1 :].partition("/")
            if not rest:
                continue
            if scheme in ("purelib", "platlib"):
                out.add(clean_path(f"{site}/{rest}"), _mode(info), info, None, rec)
            elif scheme == "scripts":
                out.add_script(rest, zf.read(info), python, rec)
            elif scheme == "headers":
                out.add(
                    clean_path(f"include/site/python{python_minor}/{dist_name}/{rest}"), _mode(info), info, None, rec
                )
            elif scheme == "data":
                out.add(clean_path(rest), _mode(info), info, None, rec)
            else:
                raise IntegrityError(f"{filename} has an unknown data scheme {scheme!r}", "the wheel is broken")
            continue
        out.add(clean_path(f"{site}/{name}"), _mode(info), info, None, rec)

    try:
        eps = zf.read(f"{dist_info}/entry_points.txt").decode()
    except KeyError:
        eps = ""
    for script, target in console_scripts(eps):
        if "/" in script or script in ("", ".", ".."):
            raise IntegrityError(f"{filename} declares a bad script name {script!r}")
        out.add(f"bin/{script}", 0o755, None, launcher(python, target), "")
        out.result.scripts.append(script)
    out.add(f"{site}/{dist_info}/INSTALLER", 0o644, None, INSTALLER, "")
    return out.result


@dataclass
class _WheelFiles:
    """Turns a wheel's members into the venv's entries (read lazily from ``zf``, or by path with ``reopen``)."""

    zf: zipfile.ZipFile
    filename: str
    prefix: str
    reopen: bool
    result: WheelInstall

    def add(self, rel: str, mode: int, info: zipfile.ZipInfo | None, content: bytes | None, rec: str) -> None:
        """The file at ``rel`` (under the venv): ``content``, or member ``info`` read when the layer is written."""
        full = f"{self.prefix}/{rel}"
        if info is not None and stat.S_ISLNK(info.external_attr >> 16):  # a symlink stored by a unix zip tool
            target = self.zf.read(info).decode()
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                raise IntegrityError(f"{self.filename} has a symlink {info.filename} -> {target} that leaves the venv")
            self.result.files.append(InstalledFile(rel, Entry.symlink(full, target), rec))
            return
        if content is not None:
            entry = Entry.file(full, content, mode=mode)
        else:
            assert info is not None
            if self.reopen:
                assert self.zf.filename is not None  # opened from a path
                opener = partial(_open_member, self.zf.filename, info.filename)
            else:
                opener = partial(self.zf.open, info)
            entry = Entry(full, "file", mode, 0, 0, info.file_size, open=opener)
        self.result.files.append(InstalledFile(rel, entry, rec))

    def add_script(self, rest: str, data: bytes, python: str, rec: str) -> None:
        """A ``.data/scripts`` file into ``bin/``, its ``#!python`` line pointed at the venv's Python."""
        m = re.match(rb"^#!python(w)?[^\S\r\n]*(\r?\n)", data)
        if m:
            data = f"#!{python}".encode() + m.group(2) + data[m.end() :]
            rec = ""
        self.add(clean_path(f"bin/{rest}"), 0o755, None, data, rec)
        self.result.scripts.append(posixpath.basename(rest))


def render_record(dist_info: str, files: list[tuple[str, str, int | None]]) -> bytes:
    """A RECORD for ``files`` (``(rel to venv root, hash, size)``), paths relative to site-packages."""
    site = posixpath.dirname(dist_info)
    rows = []
    for rel, h, size in sorted(files):
        rows.append((posixpath.relpath(rel, site), h, "" if size is None else str(size)))
    rows.append((posixpath.relpath(f"{dist_info}/RECORD", site), "", ""))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows(rows)
    return buf.getvalue().encode()
