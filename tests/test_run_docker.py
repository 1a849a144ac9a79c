"""``gpuship run --runtime docker``: the image is loaded into the real Docker Engine and run with the flags
deep-learning containers need (--shm-size 1g, --ulimit memlock=-1, --ulimit stack=67108864), which
``docker inspect`` of the kept container shows, and the command's output and exit code come back."""

from __future__ import annotations

import json
import resource
import subprocess
import uuid

import pytest

from gpuship.cache import Cache
from gpuship.run import RunOptions, run_image
from gpuship.run.engines import engine_tag
from gpuship.run.limits import find_process, has_cap_sys_resource
from test_run_helpers import USER_UID, busybox_image


@pytest.mark.docker
def test_run_through_docker(docker, cache: Cache, capfd) -> None:
    image = busybox_image(cache)
    name = f"gpuship-run-test-{uuid.uuid4().hex[:10]}"
    tag = engine_tag(image)
    notes: list[str] = []
    try:
        code = run_image(
            image,
            RunOptions(
                runtime="docker",
                keep=True,
                name=name,
                env={"EXTRA": "x"},
                command=(
                    "sh",
                    "-c",
                    'echo "$(id -u) $(pwd) $GREETING $EXTRA"; df -k /dev/shm | tail -1; '
                    "grep -E 'Max (stack|locked)' /proc/self/limits; exit 5",
                ),
            ),
            cache=cache,
            notify=notes.append,
        )
        out = capfd.readouterr().out.splitlines()
        assert code == 5
        assert out[0] == f"{USER_UID} /work hello from the image x"
        assert out[1].split()[1] == str(1024 * 1024)  # /dev/shm is 1g
        assert out[2].split()[-3:] == ["67108864", "67108864", "bytes"]

        host_config = json.loads(docker.run("inspect", name).stdout)[0]["HostConfig"]
        assert host_config["ShmSize"] == 1 << 30
        ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in host_config["Ulimits"]}
        assert ulimits["stack"] == (67108864, 67108864)
        dockerd = find_process("dockerd")
        if dockerd is None or has_cap_sys_resource(dockerd) is not False:
            assert ulimits["memlock"] == (-1, -1)
        else:  # this dockerd may not raise limits (a sandbox): gpuship lowers memlock instead of failing
            hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
            assert ulimits["memlock"] == (hard, hard)
            assert any("memlock" in n and "CAP_SYS_RESOURCE" in n for n in notes)

        # a second run reuses the loaded image (no second load) and passes the exit code through
        before = docker.run("image", "inspect", "--format", "{{.Id}}", tag).stdout
        assert (
            run_image(
                image, RunOptions(runtime="docker", command=("sh", "-c", "exit 9")), cache=cache, notify=notes.append
            )
            == 9
        )
        assert docker.run("image", "inspect", "--format", "{{.Id}}", tag).stdout == before
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "rmi", tag], capture_output=True)
