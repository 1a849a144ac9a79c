"""The built-in runner, for real, in both flavours (runc and the namespaced chroot), as root.

A tiny busybox image (from Debian's busybox-static .deb) is unpacked into the cache and run: output and exit
code come back; Env/WorkingDir/User from the image config apply; /dev/shm has the asked size; the rlimits are
set; a fake NVIDIA driver (files named like the 580.159.04 libraries, char devices with /dev/null's numbers)
lands in the container at the toolkit's paths with its links; the cached root is never written.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.errors import GpushipError
from gpuship.oci.image import Image
from gpuship.run import RunOptions, discover, run_image
from gpuship.run.limits import has_cap_sys_resource
from gpuship.run.rootfs import unpacked_rootfs
from test_run_helpers import FAKE_DRIVER, USER_UID, busybox_image, fake_driver

FLAVORS = ["runc", "chroot"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the built-in runner needs root (CI runs as root)")


@pytest.fixture(scope="module")
def run_cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    return Cache(tmp_path_factory.mktemp("run-cache"))


@pytest.fixture(scope="module")
def image(run_cache: Cache) -> Image:
    return busybox_image(run_cache)


def _run(image: Image, cache: Cache, flavor: str, *cmd: str, **kw) -> int:
    return run_image(image, RunOptions(runtime=flavor, command=cmd, **kw), cache=cache, notify=lambda m: None)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_output_exit_code_and_image_config(image: Image, run_cache: Cache, flavor: str, capfd) -> None:
    code = _run(
        image,
        run_cache,
        flavor,
        "sh",
        "-c",
        'echo "out:$GREETING:$EXTRA"; id -u; id -g; id -G; pwd; echo "home:$HOME"; echo oops >&2; exit 7',
        env={"EXTRA": "from -e"},
    )
    out, err = capfd.readouterr()
    assert code == 7
    lines = out.splitlines()
    assert lines[0] == "out:hello from the image:from -e"
    assert lines[1] == str(USER_UID) and lines[2] == str(USER_UID)
    assert set(lines[3].split()) == {str(USER_UID), "44"}  # primary + supplementary (video) group
    assert lines[4] == "/work" and lines[5] == "home:/home/nonroot"
    assert "oops" in err


@pytest.mark.parametrize("flavor", FLAVORS)
def test_default_command_user_and_workdir_overrides(image: Image, run_cache: Cache, flavor: str, capfd) -> None:
    assert _run(image, run_cache, flavor) == 0
    assert capfd.readouterr().out.strip() == "default-cmd"
    assert _run(image, run_cache, flavor, "sh", "-c", "id -u; pwd", user="0", workdir="/made/by/run") == 0
    assert capfd.readouterr().out.split() == ["0", "/made/by/run"]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_shm_size_and_rlimits(image: Image, run_cache: Cache, flavor: str, capfd) -> None:
    code = _run(
        image, run_cache, flavor, "sh", "-c", "df -k /dev/shm | tail -1; cat /proc/self/limits", shm_size=256 << 20
    )
    out = capfd.readouterr().out
    assert code == 0
    assert out.splitlines()[0].split()[1] == str(256 * 1024)  # 1K-blocks of the tmpfs
    limits = {ln[:26].strip(): ln[26:].split()[:2] for ln in out.splitlines()[1:] if ln.startswith("Max")}
    assert limits["Max stack size"] == ["67108864", "67108864"]
    if has_cap_sys_resource():
        assert limits["Max locked memory"] == ["unlimited", "unlimited"]
    else:  # a sandbox without CAP_SYS_RESOURCE: lowered to the hard limit gpuship has, with a note
        hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
        assert limits["Max locked memory"] == [str(hard), str(hard)]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_fake_gpu_injection(image: Image, run_cache: Cache, flavor: str, tmp_path: Path, capfd) -> None:
    drv = fake_driver(tmp_path / "driver", gpus=2)
    host = discover(lib_dirs=[drv["lib"]], dev_dir=drv["dev"], bin_dirs=[drv["bin"]], proc_dir=drv["proc"])
    assert host.driver is not None, host.reason
    lib = "/usr/local/nvidia/lib64"
    script = (
        f'cd {lib} && for f in *; do if [ -L $f ]; then echo "$f -> $(readlink $f)"; else echo "$f = $(cat $f)"; fi; done; '
        "for d in /dev/nvidia*; do stat -c '%n %F %t:%T' $d; done; "
        "/usr/bin/nvidia-smi; cat /etc/ld.so.conf.d/000-gpuship-nvidia.conf; "
        "echo visible=$NVIDIA_VISIBLE_DEVICES; echo probe > /dev/nvidia1 && echo nvidia1-writable; "
        f"touch {lib}/x 2>/dev/null || echo libdir-file-read-only-ok; echo ro > {lib}/libcuda.so.1 2>/dev/null || echo lib-read-only"
    )
    code = run_image(
        image,
        RunOptions(runtime=flavor, command=("sh", "-c", script), gpus="1"),  # type: ignore[arg-type]
        cache=run_cache,
        host=host,
        notify=lambda m: None,
    )
    out = capfd.readouterr().out
    assert code == 0, out
    lines = set(out.splitlines())
    v = FAKE_DRIVER
    for expected in (
        f"libcuda.so.{v} = fake libcuda {v}",
        f"libcuda.so.1 -> libcuda.so.{v}",
        "libcuda.so -> libcuda.so.1",
        f"libnvidia-ml.so.1 -> libnvidia-ml.so.{v}",
        f"libnvidia-ml.so.{v} = fake libnvidia-ml {v}",
        f"libnvidia-ptxjitcompiler.so.{v} = fake libnvidia-ptxjitcompiler {v}",
        f"libnvidia-nvvm.so.4 -> libnvidia-nvvm.so.{v}",
        "/dev/nvidiactl character special file 1:3",
        "/dev/nvidia-uvm character special file 1:3",
        "/dev/nvidia1 character special file 1:3",
        f"NVIDIA-SMI {v}  Driver Version: {v}  CUDA Version: 13.0",
        lib,
        "visible=1",
        "nvidia1-writable",
        "lib-read-only",
    ):
        assert expected in lines, f"missing {expected!r} in:\n{out}"
    assert "/dev/nvidia0 character special file 1:3" not in lines  # only GPU 1 was asked for
    assert not any("libnvidia-encode" in ln for ln in lines)  # video capability not asked for
    # the cached image root is untouched
    root = unpacked_rootfs(image, run_cache)
    assert not (root / "usr/local/nvidia").exists() and not (root / "etc/ld.so.conf.d").exists()


@pytest.mark.parametrize("flavor", FLAVORS)
def test_cache_is_never_written_and_read_only(image: Image, run_cache: Cache, flavor: str, capfd) -> None:
    assert _run(image, run_cache, flavor, "sh", "-c", "echo new > /work/new && cat /work/new", user="0") == 0
    assert capfd.readouterr().out.strip() == "new"
    root = unpacked_rootfs(image, run_cache)
    assert not (root / "work/new").exists()
    assert _run(image, run_cache, flavor, "sh", "-c", "test -e /work/new && echo leaked || echo fresh") == 0
    assert capfd.readouterr().out.strip() == "fresh"
    code = _run(
        image,
        run_cache,
        flavor,
        "sh",
        "-c",
        "touch /x 2>/dev/null && echo rw || echo ro; touch /tmp/x && echo tmp-ok",
        user="0",
        read_only=True,
    )
    assert code == 0 and capfd.readouterr().out.split() == ["ro", "tmp-ok"]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_signal_exit_status_and_missing_command(image: Image, run_cache: Cache, flavor: str) -> None:
    # chroot: gpuship's init is PID 1, so the command dies of the signal and that is 128+15. runc: the command
    # is PID 1 itself, which ignores signals it has no handler for (Docker without --init does the same).
    expected = 128 + 15 if flavor == "chroot" else 0
    assert _run(image, run_cache, flavor, "sh", "-c", "kill -TERM $$") == expected
    with pytest.raises(GpushipError, match="'no-such-program' is not found in the image"):
        _run(image, run_cache, flavor, "no-such-program")
    leftovers = [p for p in (run_cache.root / "tmp").iterdir() if p.name.startswith("run-")]
    assert leftovers == []  # every run's scratch directory is gone
