"""Downloads side by side, in bytes: the status line sums them with the rate; a CI log gets one line per file."""

from __future__ import annotations

from gpuship.cli.console import Transfers


def test_transfers_sum_parallel_downloads_and_log_each_file_once_within_80_columns() -> None:
    now = [0.0]
    t = Transfers(clock=lambda: now[0])
    long_name = "torch-2.14.1+cu130-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert t.update(long_name, 0, 900_000_000) is None
    assert t.update("numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl", 8_000_000, 16_000_000) is None
    now[0] = 2.0
    assert t.update(long_name, 450_000_000, 900_000_000) is None
    assert t.status() == "downloading 2 of 2 files: 458 of 916 MB, 229.0 MB/s"
    now[0] = 4.0
    line = t.update(long_name, 900_000_000, 900_000_000)
    assert line is not None and line.startswith("downloaded torch-2.14.1") and line.endswith("225.0 MB/s")
    assert len(line) <= 80
    assert t.update(long_name, 900_000_000, 900_000_000) is None  # logged once
    very_long = "nvidia-cudnn-cu13-9.99.0.1-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
    t.update(very_long, 0, 700_000_000)
    now[0] = 5.0
    line = t.update(very_long, 700_000_000, 700_000_000)
    assert line is not None and len(line) == 80 and "…" in line
    assert t.status().startswith("downloading 1 of 3 files")
