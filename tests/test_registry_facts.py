"""Base facts read from a base image's layers without a daemon: pushed to a real registry, pulled back as a base."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gpuship.cache import Cache
from gpuship.oci import Entry
from gpuship.registry import base_facts, pull_image, push
from gpuship.registry.facts import BaseFacts, parse_os_release
from test_registry_support import LocalRegistry, have_tools, make_image

pytestmark = pytest.mark.registry

OS_RELEASE = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'


def metadata(name: str, version: str) -> bytes:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test\n\nLong description\n".encode()


def base_layers() -> list[list[Entry]]:
    dist = "usr/lib/python3/dist-packages"
    site = "usr/local/lib/python3.11/site-packages"
    lower = [
        Entry.file("usr/lib/os-release", OS_RELEASE),
        Entry.symlink("etc/os-release", "../usr/lib/os-release"),
        Entry.file("usr/bin/python3.11", b"\x7fELF fake interpreter", mode=0o755),
        Entry.symlink("usr/bin/python3", "python3.11"),
        Entry.file(f"{dist}/numpy-1.26.4.dist-info/METADATA", metadata("numpy", "1.26.4")),
        Entry.file(f"{dist}/numpy-1.26.4.dist-info/RECORD", b""),
        Entry.file(f"{dist}/attrs-23.1.0.dist-info/METADATA", metadata("attrs", "23.1.0")),
        Entry.file(f"{dist}/six-1.16.0.egg-info", metadata("six", "1.16.0")),  # distutils-style single file
        Entry.file("opt/old/site-packages/gone-1.0.dist-info/METADATA", metadata("gone", "1.0")),
        Entry.file("usr/local/cuda-12.4/version.json", b'{"cuda": {"name": "CUDA SDK", "version": "12.4.1"}}'),
    ]
    upper = [
        Entry.whiteout(f"{dist}/attrs-23.1.0.dist-info"),  # pip uninstalled it in a later step
        Entry.opaque("opt/old"),  # a directory replaced wholesale
        Entry.file(f"{site}/Requests-2.31.0.dist-info/METADATA", metadata("Requests", "2.31.0")),
        Entry.file(f"{site}/numpy-2.0.0.dist-info/METADATA", metadata("numpy", "2.0.0")),
        Entry.file(f"{site}/PyYAML-6.0.1-py3.11.egg-info/PKG-INFO", metadata("PyYAML", "6.0.1")),
    ]
    return [lower, upper]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    have_tools()
    reg = LocalRegistry(tmp_path_factory.mktemp("facts-registry")).start()
    try:
        yield reg
    finally:
        reg.stop()


def test_base_facts_of_a_pulled_base(registry, cache, tmp_path):
    env = (
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "PYTHON_VERSION=3.11.9",
        "CUDA_VERSION=12.4.1",
        "NVIDIA_REQUIRE_CUDA=cuda>=12.4",
        "NV_CUDA_LIB_VERSION=12.4.1-1",
        "LANG=C.UTF-8",
    )
    img = make_image(cache, base_layers(), env=env)
    ref = f"{registry.host}/bases/py:3.11"
    push(img, ref, cache=cache, insecure=True)

    pulled_cache = Cache(tmp_path / "pulled")
    base = pull_image(ref, "linux/amd64", pulled_cache, insecure=True)
    facts = base_facts(base)
    assert facts.python_executable == "/usr/bin/python3"
    assert facts.python_version == "3.11.9"  # the interpreter's minor from its file name, the patch from the env
    assert facts.os_release["ID"] == "debian" and facts.os_release["VERSION_ID"] == "12"
    assert facts.os_id == "debian 12"
    assert facts.cuda_version == "12.4.1"
    assert facts.cuda_env == {
        "CUDA_VERSION": "12.4.1",
        "NVIDIA_REQUIRE_CUDA": "cuda>=12.4",
        "NV_CUDA_LIB_VERSION": "12.4.1-1",
    }
    assert facts.env["LANG"] == "C.UTF-8"
    assert facts.site_packages == ("/usr/local/lib/python3.11/site-packages", "/usr/lib/python3/dist-packages")
    # whiteouts honoured (attrs, and everything under the opaque /opt/old); /usr/local wins over /usr
    assert facts.distributions == {"numpy": "2.0.0", "pyyaml": "6.0.1", "requests": "2.31.0", "six": "1.16.0"}

    # remembered by image digest: a second call reads no layer
    assert pulled_cache.get_ref("base-facts", base.digest)["distributions"]["numpy"] == "2.0.0"
    assert base_facts(base) == facts
    assert BaseFacts.from_json(facts.to_json()) == facts


def test_base_facts_without_python_or_cuda(cache):
    img = make_image(
        cache,
        [
            [Entry.file("etc/os-release", b"ID=alpine\nVERSION_ID=3.20.0\n")],
            [Entry.file("usr/lib/python3/dist-packages/numpy-1.26.4.dist-info/METADATA", metadata("numpy", "1.26.4"))],
        ],
    )
    facts = base_facts(img, cache)
    assert facts.python_executable is None and facts.python_version is None and facts.cuda_version is None
    assert facts.distributions == {"numpy": "1.26.4"}
    assert facts.os_id == "alpine 3.20.0"


def test_local_python_beats_system_python(cache):
    img = make_image(
        cache,
        [
            [Entry.file("usr/bin/python3.11", b"sys", mode=0o755), Entry.symlink("usr/bin/python3", "python3.11")],
            [
                Entry.file("usr/local/bin/python3.12", b"local", mode=0o755),
                Entry.symlink("usr/local/bin/python3", "/usr/local/bin/python3.12"),
            ],
        ],
    )
    facts = base_facts(img, cache)
    assert (facts.python_executable, facts.python_version) == ("/usr/local/bin/python3", "3.12")


def test_parse_os_release_quotes():
    assert parse_os_release('ID="ubuntu"\nVERSION_ID=\'22.04\'\n# comment\nNAME="A \\"B\\""\n') == {
        "ID": "ubuntu",
        "VERSION_ID": "22.04",
        "NAME": 'A "B"',
    }
