"""A Debian archive as gpuship reads it: signed ``InRelease`` files, then indexes by the hashes they give.

Trust flows one way: ``InRelease`` is verified with ``gpgv`` against Debian's archive keyring, and only
the text gpgv says is signed is parsed. Every other file (``Packages``, ``Contents``, ``.deb``) is fetched
by the SHA256 that signed text (or a Packages record under it) gives, and lands in the cache only if it
matches. Nothing unverified is ever stored.

``InRelease`` is re-fetched when the cached copy is older than ``GPUSHIP_DEBIAN_INDEX_TTL`` seconds
(default 6 h; 0 always re-fetches); indexes are content-addressed, so they download once per change.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import json
import lzma
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any  # Any: the Release record read back from the cache

from debian import deb822

from ... import tools
from ...cache import Cache
from ...errors import GpushipError, IntegrityError, ToolMissing
from ...progress import NO_PROGRESS, Progress
from ...streams import as_file
from .aptsources import Suite
from .http import Http, NotFound
from .index import Candidate, PackageIndex, dump_records, reduce_packages

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_TTL = 6 * 3600
#: Bump when the reduced Packages JSON changes shape.
INDEX_FORMAT = "1"
#: Bump when the remembered parsed Release record changes shape.
RELEASE_FORMAT = "1"


def _ttl() -> float:
    raw = os.environ.get("GPUSHIP_DEBIAN_INDEX_TTL", "")
    try:
        return float(raw) if raw else DEFAULT_TTL
    except ValueError as exc:
        raise GpushipError(
            f"GPUSHIP_DEBIAN_INDEX_TTL={raw!r} is not a number of seconds", "unset it or give seconds"
        ) from exc


def keyring_path() -> str:
    path = os.environ.get("GPUSHIP_DEBIAN_KEYRING") or KEYRING
    if not Path(path).is_file():
        raise ToolMissing(f"the Debian archive keyring {path} is missing", "apt-get install debian-archive-keyring")
    return path


def verify_inrelease(data: bytes, what: str, keyring: str | None = None) -> str:
    """Check an ``InRelease`` signature with gpgv; returns only the signed text.

    A bad signature, an unknown key or no signature at all is an :class:`IntegrityError`.
    """
    keyring = keyring or keyring_path()
    with tempfile.TemporaryDirectory(prefix="gpuship-gpgv-") as d:
        src, out = Path(d) / "InRelease", Path(d) / "Release"
        src.write_bytes(data)
        proc = tools.run(
            ["gpgv", "--keyring", keyring, "--status-fd", "1", "--output", str(out), str(src)],
            what="gpgv",
            check=False,
        )
        status = proc.stdout.decode(errors="replace").splitlines()
        good = [ln for ln in status if ln.startswith("[GNUPG:] GOODSIG ")]
        valid = [ln for ln in status if ln.startswith("[GNUPG:] VALIDSIG ")]
        bad = [ln for ln in status if ln.startswith("[GNUPG:] BADSIG ")]
        # A signature by a key not in the keyring (ERRSIG/NO_PUBKEY) is ignored when another one is good, as apt does.
        if not good or not valid or bad or not out.is_file():
            reason = tools.last_line(proc.stderr) if proc.stderr else "no valid signature"
            raise IntegrityError(
                f"the signature of {what} does not verify against {keyring}: {reason}",
                "the mirror or something between is serving altered or foreign metadata; nothing was cached",
            )
        return out.read_text(errors="replace")


@dataclass(frozen=True)
class Release:
    """The verified ``Release`` text of one suite, and the hashes of the files it lists."""

    suite: Suite
    codename: str
    version: str
    origin: str
    label: str
    date: str
    files: dict[str, tuple[str, int]] = field(repr=False)
    by_hash: bool = False
    digest: str = ""  # of the InRelease blob in the cache
    suites: tuple[str, ...] = ()  # its Suite field
    valid_until: str = ""

    @classmethod
    def parse(cls, suite: Suite, text: str, digest: str = "") -> Release:
        r = deb822.Release(text)
        files = {f["name"]: (f["sha256"], int(f["size"])) for f in r.get("SHA256", [])}
        if not files:
            raise IntegrityError(f"the Release file of {suite} lists no SHA256 sums", "use a current Debian mirror")
        return cls(
            suite,
            r.get("Codename", ""),
            r.get("Version", ""),
            r.get("Origin", ""),
            r.get("Label", ""),
            r.get("Date", ""),
            files,
            r.get("Acquire-By-Hash", "no").lower() == "yes",
            digest,
            tuple(r.get("Suite", "").split()),
            r.get("Valid-Until", ""),
        )

    def to_record(self) -> dict[str, object]:
        """The parsed fields (not the suite), to remember by the InRelease digest: a rebuild reads this record
        instead of running gpgv and parsing the text again."""
        return {
            "codename": self.codename,
            "version": self.version,
            "origin": self.origin,
            "label": self.label,
            "date": self.date,
            "files": self.files,
            "by_hash": self.by_hash,
            "suites": list(self.suites),
            "valid_until": self.valid_until,
        }

    @classmethod
    def from_record(cls, suite: Suite, rec: dict[str, Any], digest: str) -> Release:
        files = {str(k): (str(v[0]), int(v[1])) for k, v in rec["files"].items()}
        return cls(
            suite,
            rec["codename"],
            rec["version"],
            rec["origin"],
            rec["label"],
            rec["date"],
            files,
            bool(rec["by_hash"]),
            digest,
            tuple(rec["suites"]),
            rec["valid_until"],
        )

    def check(self, *, now: float | None = None, text: str = "") -> None:
        """apt's checks: the suite is the one asked for, and the file has not expired."""
        if self.codename != self.suite.name and self.suite.name not in self.suites:
            raise IntegrityError(
                f"{self.suite.dists_url}/InRelease is for {self.codename!r}, not {self.suite.name!r}",
                "the mirror serves a different release under that name; check the mirror URI",
            )
        valid_until = self.valid_until
        if valid_until and os.environ.get("GPUSHIP_DEBIAN_ALLOW_EXPIRED", "") not in ("1", "yes", "true"):
            until = email.utils.parsedate_to_datetime(valid_until)
            if until.tzinfo is None:
                until = until.replace(tzinfo=UTC)
            if (now or time.time()) > until.timestamp():
                raise IntegrityError(
                    f"the Release file of {self.suite} expired on {valid_until} (a stale or replayed mirror)",
                    "use an up-to-date mirror, or for a snapshot mirror set GPUSHIP_DEBIAN_ALLOW_EXPIRED=1",
                )

    def url(self, name: str) -> str:
        """Where to fetch a listed file: by its hash where the archive supports it (no race with updates)."""
        if self.by_hash and name in self.files:
            d = name.rsplit("/", 1)[0]
            return f"{self.suite.dists_url}/{d}/by-hash/SHA256/{self.files[name][0]}"
        return f"{self.suite.dists_url}/{name}"

    def first_of(self, names: Sequence[str]) -> str | None:
        return next((n for n in names if n in self.files), None)


def _decompress(data_stream: IO[bytes], name: str) -> IO[bytes]:
    if name.endswith(".xz"):
        return as_file(lzma.open(data_stream))
    if name.endswith(".gz"):
        return as_file(gzip.open(data_stream))
    return data_stream


class Repository:
    """The suites of one profile, read through the cache. One instance per build; thread-safe downloads."""

    def __init__(
        self, suites: Sequence[Suite], cache: Cache, *, http: Http | None = None, progress: Progress = NO_PROGRESS
    ) -> None:
        if not suites:
            raise GpushipError("no Debian suites to read", "check the mirror configuration")
        self.suites = tuple(suites)
        self.cache = cache
        self.http = http or Http()
        self._progress = progress
        self._releases: dict[Suite, Release] = {}
        self._indexes: dict[str, PackageIndex] = {}

    def close(self) -> None:
        self.http.close()

    # -- InRelease ---------------------------------------------------------------------------------
    def release(self, suite: Suite) -> Release:
        if suite in self._releases:
            return self._releases[suite]
        url = f"{suite.dists_url}/InRelease"
        rec = self.cache.get_ref("debian-inrelease", url)
        if not isinstance(rec, dict):
            rec = None  # none recorded (or not a record)
        data: bytes | None = None
        if rec is not None and self.cache.has(rec["digest"]) and time.time() - float(rec["fetched"]) < _ttl():
            # a fresh cached InRelease was verified and parsed when it was fetched: use its parsed form
            parsed = self.cache.get_ref("debian-release", f"{RELEASE_FORMAT}:{rec['digest']}")
            if isinstance(parsed, dict):
                release = Release.from_record(suite, parsed, rec["digest"])
                release.check()
                self._releases[suite] = release
                return release
            data = self.cache.read(rec["digest"])
        fresh = data is None
        if data is None:
            try:
                self._progress.step(f"fetching {url}")
                data = self.http.get(url)
            except GpushipError:
                if rec is None or not self.cache.has(rec["digest"]):
                    raise
                self._progress.step(
                    f"warning: {url} unreachable; using the copy fetched {time.ctime(float(rec['fetched']))}"
                )
                data, fresh = self.cache.read(rec["digest"]), False
        text = verify_inrelease(data, url)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        release = Release.parse(suite, text, digest)
        release.check()
        if fresh:
            self.cache.put_bytes(data)
            self.cache.put_ref("debian-inrelease", url, {"digest": digest, "fetched": time.time()})
        self.cache.put_ref("debian-release", f"{RELEASE_FORMAT}:{digest}", release.to_record())
        self._releases[suite] = release
        return release

    # -- Packages ----------------------------------------------------------------------------------
    def fetch_listed(self, suite: Suite, names: Sequence[str]) -> tuple[str, str] | None:
        """Download the first of ``names`` the Release lists (by hash); returns ``(name, digest)``."""
        rel = self.release(suite)
        name = rel.first_of(names)
        if name is None:
            return None
        sha, size = rel.files[name]
        what = f"{suite.name} {name}"
        if not self.cache.has("sha256:" + sha):
            self._progress.step(f"downloading {what} ({size / 1e6:.1f} MB)")
            try:
                self.http.download(rel.url(name), self.cache, sha, what=what, size=size)
            except NotFound:
                if not rel.by_hash:
                    raise
                self.http.download(f"{suite.dists_url}/{name}", self.cache, sha, what=what, size=size)
        return name, "sha256:" + sha

    def packages(self, suite: Suite, component: str, arch: str) -> list[dict[str, str]]:
        """The reduced records of ``suite``'s ``component`` for ``arch`` (empty if the suite has none)."""
        base = f"{component}/binary-{arch}/Packages"
        rel = self.release(suite)
        name = rel.first_of([base + ".xz", base + ".gz", base])
        if name is None:
            return []

        def read() -> list[dict[str, str]]:
            got = self.fetch_listed(suite, [name])
            assert got is not None
            self._progress.step(f"reading {suite.name} {name}")
            with self.cache.open(got[1]) as raw, _decompress(raw, name) as fh:
                return reduce_packages(fh)

        return self.cache.memo_blob(
            "debian-packages", f"{INDEX_FORMAT}:{rel.files[name][0]}", read, encode=dump_records, decode=json.loads
        )

    def index(self, arch: str) -> PackageIndex:
        """Every suite's packages for ``arch`` merged by version."""
        if arch not in self._indexes:
            parts: list[tuple[str, str, list[dict[str, str]]]] = []
            for suite in self.suites:
                for comp in suite.components:
                    parts.append((suite.uri, suite.name, self.packages(suite, comp, arch)))
            main = self.suites[0]
            if not any(recs for _, s, recs in parts if s == main.name):
                raise GpushipError(
                    f"{main} has no packages for {arch}", "choose another platform or a mirror that carries it"
                )
            self._indexes[arch] = PackageIndex(arch, parts, label=f"{main.name} {arch}")
        return self._indexes[arch]

    # -- Contents and .debs ------------------------------------------------------------------------
    def contents(self, arch: str) -> list[tuple[Suite, str]]:
        """The ``Contents-<arch>`` blobs of every suite and component (``(suite, digest)``), downloaded once."""
        out: list[tuple[Suite, str]] = []
        for suite in self.suites:
            for comp in suite.components:
                base = f"{comp}/Contents-{arch}"
                got = self.fetch_listed(suite, [base + ".gz", base + ".xz", base])
                if got is not None:
                    out.append((suite, got[1]))
        return out

    def fetch_deb(self, cand: Candidate) -> str:
        """Download one ``.deb`` by the SHA256 its (signed) index gives; returns the blob digest."""
        if not cand.sha256:
            raise IntegrityError(f"the index gives no SHA256 for {cand}", "use a current Debian mirror")
        return self.http.download(
            cand.url, self.cache, cand.sha256, what=f"package {cand.name} {cand.version}", size=cand.size
        )


def release_date(rel: Release) -> datetime | None:
    try:
        return email.utils.parsedate_to_datetime(rel.date)
    except (TypeError, ValueError):
        return None
