"""Hostile and malformed inputs (issue 16): each gets one clear line, and nothing is deleted, leaked or blocked.

Every input is crafted here, as an attacker or a careless user would make it: layers and layouts by hand
(tarfile, JSON), projects as files on disk. Nothing is mocked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.errors import IntegrityError
from gpuship.oci import Entry, build_layer
from gpuship.oci.unpack import apply_layers, unpack
from test_oci_support import layer_from_tar, member, raw_tar


# -- 1. whiteouts that name the directory itself or its parent --------------------------------------------------
@pytest.mark.parametrize("name", [".wh...", ".wh..", ".wh.", "sub/.wh...", "sub/.wh."])
def test_a_whiteout_of_dot_dot_deletes_nothing_outside_the_root(cache: Cache, tmp_path: Path, name: str) -> None:
    outside = tmp_path / "user-files"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    root = outside / "rootfs"
    root.mkdir()
    (root / "sub").mkdir()
    (root / "sub" / "kept").write_text("below")
    hostile = layer_from_tar(raw_tar([member(name)]), cache)
    with pytest.raises(IntegrityError, match="not a name inside its directory"):
        apply_layers([hostile], root)
    assert (outside / "precious.txt").read_text() == "keep me"
    assert (root / "sub" / "kept").read_text() == "below"


def test_unpack_refuses_a_parent_whiteout_and_leaves_nothing(cache: Cache, tmp_path: Path) -> None:
    base = build_layer([Entry.file("etc/a", "A")], cache)
    hostile = layer_from_tar(raw_tar([member("etc/.wh..")]), cache)
    dest = tmp_path / "out" / "root"
    with pytest.raises(IntegrityError):
        unpack([base, hostile], dest)
    assert not dest.exists() and list((tmp_path / "out").iterdir()) == []


def test_whiteout_metadata_names_hide_nothing(cache: Cache, tmp_path: Path) -> None:
    base = build_layer([Entry.file("etc/a", "A"), Entry.file("etc/plnk", "P")], cache)
    top = layer_from_tar(raw_tar([member("etc/.wh..wh.plnk"), member("etc/b", data=b"B")]), cache)
    unpack([base, top], tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r" / "etc").iterdir()) == ["a", "b", "plnk"]
