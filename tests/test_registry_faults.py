"""Faults: the registry dies in the middle of a chunked upload. It comes back (same port, same storage) and the
push completes; or it stays down and the push fails with one clear error, leaving no manifest and no temp file."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_registry_support import LocalRegistry, have_tools, make_image

from gpuship.cache import Cache
from gpuship.errors import RegistryError
from gpuship.registry import RetryPolicy, pull_image, push

pytestmark = pytest.mark.registry

MiB = 1 << 20


class KillAfter:
    """Progress hook: kills the registry once ``threshold`` bytes went out (mid-request), then maybe restarts it."""

    def __init__(self, reg: LocalRegistry, threshold: int, restart_after: float | None) -> None:
        self.reg, self.threshold, self.restart_after = reg, threshold, restart_after
        self.sent = 0
        self.killed = threading.Event()
        self.restarted = threading.Event()
        self.position: dict[str, int] = {}
        self.resumed_at: list[int] = []  # where each rewound upload went on from

    def start(self, key: str, description: str, total: int) -> None:
        self.position[key] = 0

    def advance(self, key: str, n: int) -> None:
        self.position[key] = self.position.get(key, 0) + n
        if n < 0:
            self.resumed_at.append(self.position[key])
        self.sent += max(n, 0)
        if not self.killed.is_set() and self.sent >= self.threshold:
            self.reg.kill()
            self.killed.set()
            if self.restart_after is not None:
                timer = threading.Timer(self.restart_after, self._restart)
                timer.daemon = True
                timer.start()

    def _restart(self) -> None:
        self.reg.start()
        self.restarted.set()

    def finish(self, key: str, status: str) -> None:
        pass


@pytest.fixture
def plain_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    have_tools()
    reg = LocalRegistry(tmp_path / "reg").start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def big_image_cache(tmp_path_factory: pytest.TempPathFactory):
    cache = Cache(tmp_path_factory.mktemp("fault-cache"))
    img = make_image(cache, [{"opt/model.bin": os.urandom(20 * MiB)}, {"opt/small": b"small"}])
    return cache, img


def _tmp_files(cache: Cache) -> list[str]:
    return sorted(p.name for p in (cache.root / "tmp").iterdir())


def test_push_survives_a_registry_crash_mid_upload(plain_registry, big_image_cache, tmp_path):
    cache, img = big_image_cache
    reg = plain_registry
    hook = KillAfter(reg, threshold=5 * MiB + 300_000, restart_after=1.0)
    ref = f"{reg.host}/faults/resume:1"
    result = push(img, ref, cache=cache, insecure=True, chunk_size=2 * MiB, jobs=1, progress=hook,
                  retry=RetryPolicy(attempts=8, base_delay=0.3, max_delay=2.0))
    assert hook.killed.is_set() and hook.restarted.is_set()
    # it resumed from the registry's offset (whole chunks it had kept), it did not start the layer again
    assert hook.resumed_at and hook.resumed_at[0] >= 2 * MiB and hook.resumed_at[0] % (2 * MiB) == 0
    assert result.uploaded == 3
    assert result.bytes_uploaded == sum(l.size for l in img.layers) + len(img.config_bytes())
    assert result.bytes_sent > result.bytes_uploaded  # the interrupted part went out again
    # what landed is whole: pulled back and verified against digests and diff_ids
    got = pull_image(ref, "linux/amd64", Cache(tmp_path / "check"), insecure=True)
    assert got.digest == img.digest
    assert reg.tags("faults/resume") == ["1"]
    assert _tmp_files(cache) == []


def test_push_fails_clearly_when_the_registry_stays_down(plain_registry, big_image_cache):
    cache, img = big_image_cache
    reg = plain_registry
    hook = KillAfter(reg, threshold=5 * MiB, restart_after=None)
    ref = f"{reg.host}/faults/down:1"
    with pytest.raises(RegistryError) as info:
        push(img, ref, cache=cache, insecure=True, chunk_size=2 * MiB, jobs=1, progress=hook,
             retry=RetryPolicy(attempts=3, base_delay=0.1, max_delay=0.3))
    line = info.value.line()
    assert "\n" not in line and reg.host in line and "try again later" in line
    reg.start()  # back up: it holds no manifest and no tag for the failed push
    assert reg.tags("faults/down") == []
    resp = httpx.get(f"{reg.url}/v2/faults/down/manifests/1")
    assert resp.status_code == 404
    assert _tmp_files(cache) == []
