"""The Debian source's pure parts, on small real inputs: apt sources, resolver rules, merged /usr, slimming,
the .deb reader and the dpkg database writer. No network, a second or two."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from gpuship.errors import ConfigError, IntegrityError, ResolveError
from gpuship.oci.entry import Entry
from gpuship.sources.debian.aptsources import Suite, parse_deb822, parse_one_line, suites_for
from gpuship.sources.debian.deb import read_deb_info, unpack_data
from gpuship.sources.debian.dpkg import database_entries, status_file
from gpuship.sources.debian.index import Candidate, PackageIndex
from gpuship.sources.debian.resolver import resolve, version_satisfies
from gpuship.sources.debian.slim import drop_rule
from gpuship.sources.debian.usrmerge import merged_usr_links, rebase_entry

# A made-up archive; no real host.
ARCHIVE = "http://archive.example/debian"
SECURITY = "http://archive.example/debian-security"

SOURCES = f"""Types: deb
URIs: {ARCHIVE}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {SECURITY}
Suites: bookworm-security
Components: main

Types: deb
URIs: http://thirdparty.example/apt
Suites: nodistro
Components: main

Types: deb-src
URIs: {ARCHIVE}
Suites: bookworm
Components: main
"""


def test_deb822_sources_give_the_three_suites_and_trixie_is_derived_by_codename() -> None:
    srcs = parse_deb822(SOURCES, "debian.sources")
    assert [s.uri for s in srcs] == [ARCHIVE, SECURITY, "http://thirdparty.example/apt"]
    book = suites_for("bookworm", sources=srcs, mirror=None, security_mirror=None)
    assert book == (
        Suite(ARCHIVE, "bookworm"),
        Suite(ARCHIVE, "bookworm-updates"),
        Suite(SECURITY, "bookworm-security"),
    )
    trixie = suites_for("trixie", sources=srcs)
    assert [(s.uri, s.name) for s in trixie] == [
        (ARCHIVE, "trixie"),
        (ARCHIVE, "trixie-updates"),
        (SECURITY, "trixie-security"),
    ]


def test_one_line_sources_and_mirror_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPUSHIP_DEBIAN_MIRROR", raising=False)
    monkeypatch.delenv("GPUSHIP_DEBIAN_SECURITY_MIRROR", raising=False)
    srcs = parse_one_line(
        f"# comment\ndeb [arch=amd64 signed-by=/k.gpg] {ARCHIVE}/ bookworm main contrib\n"
        f"deb-src {ARCHIVE} bookworm main\ndeb {SECURITY} bookworm-security main\n"
    )
    assert srcs[0].uri == ARCHIVE and srcs[0].components == ("main", "contrib")
    own = "http://mirror.internal/debian"
    s = suites_for("bookworm", sources=srcs, mirror=own + "/")
    assert [(x.uri, x.name) for x in s] == [
        (own, "bookworm"),
        (own, "bookworm-updates"),
        (SECURITY, "bookworm-security"),
    ]
    assert [x.name for x in suites_for("bookworm", sources=srcs, mirror=own, security_mirror="none")] == [
        "bookworm",
        "bookworm-updates",
    ]
    monkeypatch.setenv("GPUSHIP_DEBIAN_MIRROR", own)
    assert suites_for("bookworm", sources=[])[0].uri == own
    monkeypatch.delenv("GPUSHIP_DEBIAN_MIRROR")
    with pytest.raises(ConfigError, match="no Debian mirror is configured"):
        suites_for("bookworm", sources=[])


def test_host_sources_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host this runs on lists a Debian mirror in its apt sources; gpuship finds it with no config."""
    monkeypatch.delenv("GPUSHIP_DEBIAN_MIRROR", raising=False)
    monkeypatch.delenv("GPUSHIP_DEBIAN_SECURITY_MIRROR", raising=False)
    suites = suites_for("bookworm")
    assert [s.name for s in suites][:2] == ["bookworm", "bookworm-updates"]
    assert all(s.uri.startswith(("http://", "https://")) for s in suites)


# -- resolver -----------------------------------------------------------------------------------------
def _rec(name: str, version: str = "1.0", **fields: str) -> dict[str, str]:
    rec = {
        "Package": name,
        "Version": version,
        "Architecture": fields.pop("Architecture", "amd64"),
        "Filename": f"pool/{name}_{version}.deb",
        "SHA256": "0" * 64,
        "Size": "10",
    }
    rec.update({k.replace("_", "-"): v for k, v in fields.items()})
    return rec


def _index(*records: dict[str, str], updates: tuple[dict[str, str], ...] = ()) -> PackageIndex:
    return PackageIndex("amd64", [(ARCHIVE, "bookworm", list(records)), (ARCHIVE, "bookworm-updates", list(updates))])


def test_resolver_follows_predepends_depends_alternatives_and_virtuals() -> None:
    idx = _index(
        _rec("app", Pre_Depends="libc6 (>= 2.30)", Depends="libz1 | libz-ng, mail-transport-agent, libgone | libssl3"),
        _rec("libc6", "2.36"),
        _rec("libz-ng"),
        _rec("libz1", "1.2", Depends="libc6"),
        _rec("postfix", Provides="mail-transport-agent", Priority="optional"),
        _rec("exim4", Provides="mail-transport-agent", Priority="standard"),
        _rec("libssl3", "3.0"),
        _rec("recommended-only"),
        _rec("wrong-arch", Architecture="arm64"),
    )
    res = resolve(idx, ["app"])
    # first satisfiable alternative; provider by priority then name; no Recommends; no other arch
    assert res.names() == ["app", "exim4", "libc6", "libssl3", "libz1"]
    assert res.why["libz1"] == "app: libz1 | libz-ng"
    assert res.chain("libc6") == ["app", "libc6"]
    # deterministic: the same choice every time, whatever the request order
    assert resolve(idx, ["libssl3", "app"]).names() == res.names()


def test_resolver_versions_updates_override_and_clear_chain_errors() -> None:
    idx = _index(
        _rec("top", Depends="mid"),
        _rec("mid", Depends="leaf (>= 2.0)"),
        _rec("leaf", "1.5"),
        updates=(_rec("mid", "1.1", Depends="leaf (>= 1.0), gone-lib"),),
    )
    assert idx.get("mid").version == "1.1" and idx.get("mid").suite == "bookworm-updates"  # type: ignore[union-attr]
    with pytest.raises(ResolveError) as exc:
        resolve(idx, ["top"])
    assert "gone-lib for top -> mid" in exc.value.line() and "has no package gone-lib" in exc.value.line()
    idx2 = _index(_rec("top", Depends="mid"), _rec("mid", Depends="leaf (>= 2.0)"), _rec("leaf", "1.5"))
    with pytest.raises(ResolveError, match=r"leaf \(>= 2.0\) for top -> mid: .*has leaf 1.5"):
        resolve(idx2, ["top"])
    assert version_satisfies("1:1.0", (">>", "2.0")) and not version_satisfies("1.0~rc1", (">=", "1.0"))


def test_resolver_skips_script_only_dependencies_and_uses_installed_packages() -> None:
    idx = _index(
        _rec("ca-certificates", Architecture="all", Depends="openssl (>= 1.1.1), debconf (>= 0.5) | debconf-2.0"),
        _rec("openssl"),
        _rec("debconf"),
        _rec("libfoo", Depends="libc6"),
        _rec("libc6", "2.36"),
    )
    res = resolve(idx, ["ca-certificates"])
    assert res.names() == ["ca-certificates"]
    assert ("debconf (>= 0.5) | debconf-2.0", "ca-certificates") in res.skipped
    base = resolve(idx, ["libc6"])
    extra = resolve(idx, ["libfoo"], installed=base.packages)
    assert extra.names() == ["libfoo"]  # libc6 comes from the layer below
    with pytest.raises(ResolveError, match="already in the base"):
        resolve(idx, ["libc6 (>= 3)"], installed=base.packages)


def test_resolver_refuses_conflicts() -> None:
    idx = _index(_rec("aa", Depends="bb"), _rec("bb", Conflicts="cc"), _rec("cc"))
    with pytest.raises(ResolveError, match=r"bb 1.0 conflicts cc, and both are needed \(aa -> bb; cc\)"):
        resolve(idx, ["aa", "cc"])


# -- merged /usr, slimming --------------------------------------------------------------------------
def test_merged_usr_rewrites_paths_and_relative_links() -> None:
    links = merged_usr_links("amd64")
    assert links == {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
    assert "lib64" not in merged_usr_links("arm64")
    assert rebase_entry(Entry.dir("bin"), links) == Entry.dir("usr/bin")
    assert rebase_entry(Entry.symlink("lib64", "usr/lib64"), links) is None
    moved = rebase_entry(
        Entry.symlink("lib/x86_64-linux-gnu/libfoo.so.1", "../../usr/lib/x86_64-linux-gnu/libfoo.so.1.2"), links
    )
    assert moved is not None and moved.path == "usr/lib/x86_64-linux-gnu/libfoo.so.1"
    assert moved.target == "libfoo.so.1.2"
    same = rebase_entry(Entry.symlink("sbin/x", "../bin/y"), links)
    assert same is not None and (same.path, same.target) == ("usr/sbin/x", "../bin/y")
    absolute = rebase_entry(
        Entry.symlink("lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"), links
    )
    assert absolute is not None and absolute.path == "usr/lib64/ld-linux-x86-64.so.2"
    assert absolute.target == "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    hard = rebase_entry(Entry.hardlink("bin/a", "bin/b"), links)
    assert hard is not None and (hard.path, hard.target) == ("usr/bin/a", "usr/bin/b")


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("usr/share/doc/libc6/copyright", None),
        ("usr/share/doc/libc6", None),
        ("usr/share/doc/libc6/changelog.Debian.gz", "docs"),
        ("usr/share/doc/libc6/examples/x.c", "docs"),
        ("usr/share/man/man1/python3.11.1.gz", "man"),
        ("usr/share/info/dir", "info"),
        ("usr/share/lintian/overrides/libc6", "lintian"),
        ("usr/share/locale/de/LC_MESSAGES/libc.mo", "locales"),
        ("usr/lib/locale/C.utf8/LC_CTYPE", None),
        ("usr/lib/locale/de_DE.utf8/LC_CTYPE", "locales"),
        ("usr/lib/python3.11/test/test_ssl.py", "python-stdlib"),
        ("usr/lib/python3.13/idlelib/idle.py", "python-stdlib"),
        ("usr/lib/python3.11/ensurepip/__init__.py", "python-stdlib"),
        ("usr/lib/python3.11/unittest/test/test_case.py", "python-stdlib"),
        ("usr/lib/python3.11/unittest/case.py", None),
        ("usr/lib/python3.11/ssl.py", None),
        ("usr/lib/python3/dist-packages/foo/tests/x.py", None),
        ("usr/lib/x86_64-linux-gnu/libssl.so.3", None),
    ],
)
def test_slimming_rules(path: str, rule: str | None) -> None:
    assert drop_rule(path) == rule


# -- .deb reader and dpkg database ------------------------------------------------------------------
def _tar(members: list[tuple[str, bytes | None, str]], compression: str = "xz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}" if compression else "w") as t:
        for name, data, link in members:
            ti = tarfile.TarInfo(name)
            if data is None and not link:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            elif link.startswith("->"):
                ti.type, ti.linkname = tarfile.SYMTYPE, link[2:]
                t.addfile(ti)
            elif link.startswith("=>"):
                ti.type, ti.linkname = tarfile.LNKTYPE, link[2:]
                t.addfile(ti)
            else:
                assert data is not None
                ti.size, ti.mode = len(data), 0o755 if name.endswith("bin/tool") else 0o644
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        hdr = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        assert len(hdr) == 60
        out += hdr + data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


CONTROL = """Package: tool
Version: 1.0-1
Architecture: amd64
Multi-Arch: same
Maintainer: Someone <someone@example.org>
Installed-Size: 12
Depends: libc6 (>= 2.34)
Description: a tool
 that does things.
"""


def _deb(tmp: Path, data_compression: str = "xz") -> Path:
    control = _tar(
        [
            ("./", None, ""),
            ("./control", CONTROL.encode(), ""),
            ("./conffiles", b"/etc/tool.conf\n", ""),
            ("./md5sums", b"d41d8cd98f00b204e9800998ecf8427e  bin/tool\n", ""),
        ],
        "gz",
    )
    data = _tar(
        [
            ("./", None, ""),
            ("./bin/", None, ""),
            ("./bin/tool", b"#!tool\n", ""),
            ("./bin/tool2", None, "=>./bin/tool"),
            ("./etc/", None, ""),
            ("./etc/tool.conf", b"x=1\n", ""),
            ("./usr/share/doc/tool/", None, ""),
            ("./usr/share/doc/tool/copyright", b"(c)\n", ""),
            ("./usr/share/doc/tool/README", b"read me\n", ""),
            ("./lib/libtool.so.1", None, "->libtool.so.1.0"),
        ],
        data_compression,
    )
    ext = {"xz": ".xz", "gz": ".gz", "": ""}[data_compression]
    path = tmp / "tool.deb"
    path.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.gz", control), (f"data.tar{ext}", data)]))
    return path


@pytest.mark.parametrize("compression", ["xz", "gz", ""])
def test_deb_reader_reads_control_members_and_conffile_sums(tmp_path: Path, compression: str) -> None:
    deb = _deb(tmp_path, compression)
    info = read_deb_info(deb, "tool")
    assert info.control == CONTROL
    assert info.conffiles == (("/etc/tool.conf", hashlib.md5(b"x=1\n").hexdigest()),)
    kinds = {m.path: m.kind for m in info.members}
    assert kinds["bin/tool"] == "file" and kinds["bin/tool2"] == "hardlink" and kinds["lib/libtool.so.1"] == "symlink"
    files = unpack_data(deb, tmp_path / "out", "tool")
    assert files["bin/tool"].read_bytes() == b"#!tool\n"
    assert all(p.parent == tmp_path / "out" for p in files.values())  # stored by number, never by archive path


def test_deb_reader_refuses_damaged_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"not an archive")
    with pytest.raises(IntegrityError, match="not a Debian package"):
        read_deb_info(bad, "bad")
    deb = _deb(tmp_path)
    data = bytearray(deb.read_bytes())
    data[-200:-100] = b"\0" * 100
    bad.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="damaged"):
        read_deb_info(bad, "bad")


def test_dpkg_database_parses_with_dpkg_query(tmp_path: Path) -> None:
    info = read_deb_info(_deb(tmp_path), "tool")
    cand = Candidate.from_record(
        {"Package": "tool", "Version": "1.0-1", "Architecture": "amd64", "Filename": "x", "Multi-Arch": "same"},
        ARCHIVE,
        "bookworm",
    )
    root = tmp_path / "root"
    for e in database_entries([(cand, info, ["bin", "bin/tool", "etc/tool.conf"])]):
        p = root / e.path
        if e.kind == "dir":
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(e.read())
    assert b"Status: install ok installed" in status_file([(cand, info)])
    q = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version} ${Status}\n", f"--admindir={root}/var/lib/dpkg"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert q.stdout == "tool 1.0-1 install ok installed\n"
    listed = subprocess.run(
        ["dpkg-query", "-L", f"--admindir={root}/var/lib/dpkg", "tool"], capture_output=True, text=True, check=True
    )
    assert listed.stdout.split() == ["/.", "/bin", "/bin/tool", "/etc/tool.conf"]


def test_reduce_packages_reads_what_python_debian_reads() -> None:
    """The line parser of Packages files gives python-debian's fields (its parser is the oracle here): multi-line
    fields, a continued kept field, blank and whitespace-only separators, a paragraph without a Filename."""
    import io

    from debian import deb822

    from gpuship.sources.debian.index import KEPT_FIELDS, reduce_packages

    text = (
        "Package: libfoo1\nVersion: 1.2-3\nArchitecture: amd64\nDepends: libc6 (>= 2.34),\n libbar2 | libbaz2\n"
        "Description: foo\n a long\n .\n description\nFilename: pool/main/f/foo/libfoo1_1.2-3_amd64.deb\n"
        "Size: 1234\nSHA256: " + "a" * 64 + "\n\n"
        "Package: nofile\nVersion: 1\n \t\n"
        "Package:  spaced \nVersion:2.0\nFilename: pool/x.deb\nMulti-Arch: same\nX-Other: y\n"
    )
    got = reduce_packages(io.BytesIO(text.encode()))
    want = []
    for para in deb822.Packages.iter_paragraphs(io.BytesIO(text.encode()), use_apt_pkg=False):
        rec = {k: para[k] for k in KEPT_FIELDS if k in para}
        if "Package" in rec and "Version" in rec and "Filename" in rec:
            want.append(rec)
    assert [r["Package"] for r in got] == ["libfoo1", "spaced"]
    assert got == want
