"""The pure parts of gpuship run: NVIDIA_REQUIRE_* grammar and comparison, the GPU request, flag parsers,
the engine command line, the runc config, user resolution — and driver discovery over a fake driver tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuship.errors import GpuError, GpushipError
from gpuship.oci import ImageConfig
from gpuship.run import RunOptions, Ulimit, discover, gpu_request, plan_injection
from gpuship.run.builtin import container_process, find_executable
from gpuship.run.bundle import UNLIMITED, Process, runc_config
from gpuship.run.engines import engine_argv, format_size, gpu_flags
from gpuship.run.gpu import check_requirements, cuda_version_of_driver, min_driver_for, parse_gpus_option
from gpuship.run.options import parse_env, parse_port, parse_size, parse_ulimit, parse_volume
from gpuship.run.requirements import parse_requirement, requirements_from_env, version_tuple
from gpuship.run.users import ExecUser, resolve_user
from test_run_helpers import FAKE_DRIVER, fake_driver

HOST = {"cuda": "13.0", "driver": "580.159.04", "arch": None, "brand": None}


# -- NVIDIA_REQUIRE_* -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "holds"),
    [
        ("cuda>=12.4", True),
        ("cuda>=13.0", True),
        ("cuda>=13.1", False),
        ("cuda>13.0", False),
        ("cuda<=13.0", True),
        ("cuda==13.0", True),
        ("cuda!=13.0", False),
        ("driver>=580.65.06", True),
        ("driver>=580.160", False),
        # space = OR, comma = AND (the official CUDA images' form)
        ("cuda>=13.1 brand=tesla,driver>=470,driver<471", False),  # brand unknown: skipped; 580 not in [470,471)
        ("cuda>=13.1 driver>=580,driver<581", True),
        ("cuda>=12.0,driver>=590", False),
        ("arch>=9.0", True),  # arch unknown here: skipped, like an unsupported constraint
        ("foo>=1", True),  # unknown property: ignored
    ],
)
def test_requirement_grammar_and_comparison(text: str, holds: bool) -> None:
    assert parse_requirement(text).holds(HOST) is holds


def test_versions_compare_numerically() -> None:
    assert version_tuple("580.159.04") == (580, 159, 4)
    assert parse_requirement("cuda>=12.10").holds({"cuda": "12.9"}) is False
    assert parse_requirement("cuda>=12.9").holds({"cuda": "12.10"}) is True
    assert parse_requirement("driver>=580").holds({"driver": "580.159.04"}) is True


def test_malformed_requirement_is_a_clear_error() -> None:
    with pytest.raises(GpuError, match="cannot read the image's driver requirement"):
        parse_requirement("cuda~12")
    with pytest.raises(GpuError, match="is not a version"):
        parse_requirement("cuda>=twelve")


def test_requirements_from_env_legacy_and_disable() -> None:
    assert [r.text for r in requirements_from_env({"NVIDIA_REQUIRE_CUDA": "cuda>=12.4"})] == ["cuda>=12.4"]
    assert [r.text for r in requirements_from_env({"CUDA_VERSION": "12.6.3"})] == ["cuda>=12.6"]
    assert requirements_from_env({"NVIDIA_REQUIRE_CUDA": "cuda>=99.0", "NVIDIA_DISABLE_REQUIRE": "true"}) == []
    assert requirements_from_env({"NVIDIA_REQUIRE_JETPACK": "jetpack>=6"}) == []
    both = requirements_from_env({"NVIDIA_REQUIRE_CUDA": "cuda>=12.4", "NVIDIA_REQUIRE_DRIVER": "driver>=600"})
    assert sorted(r.name for r in both) == ["NVIDIA_REQUIRE_CUDA", "NVIDIA_REQUIRE_DRIVER"]


def test_driver_table() -> None:
    assert cuda_version_of_driver("580.159.04") == "13.0"
    assert cuda_version_of_driver("535.104.05") == "12.2"
    assert cuda_version_of_driver("400.1") is None
    assert min_driver_for("13.1") == "590.44.01"
    assert min_driver_for("12.7") == "570.26"  # no 12.7 row: the next one up


# -- driver discovery and the requirement check, on a fake driver tree ------------------------------------
@pytest.fixture
def fake(tmp_path: Path) -> dict[str, Path]:
    return fake_driver(tmp_path / "driver")


def _discover(fake: dict[str, Path]):
    return discover(lib_dirs=[fake["lib"]], dev_dir=fake["dev"], bin_dirs=[fake["bin"]], proc_dir=fake["proc"])


def test_discover_fake_driver(fake: dict[str, Path]) -> None:
    host = _discover(fake)
    drv = host.driver
    assert drv is not None, host.reason
    assert drv.version == FAKE_DRIVER
    assert drv.cuda_version == "13.0"  # from the fake nvidia-smi's header (libcuda is not loadable)
    libcuda = drv.library("libcuda")
    assert libcuda is not None and libcuda.sonames == ("libcuda.so.1",)
    assert drv.library("libnvidia-nvvm").sonames == ("libnvidia-nvvm.so.4",)  # type: ignore[union-attr]
    assert [g.index for g, _ in drv.gpus] == [0, 1]
    assert {d.path for d in drv.control_devices} == {"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"}


def test_discover_without_driver(tmp_path: Path, fake: dict[str, Path]) -> None:
    empty = tmp_path / "emptydev"
    empty.mkdir()
    host = discover(lib_dirs=[fake["lib"]], dev_dir=empty, bin_dirs=[], proc_dir=fake["proc"])
    assert host.driver is None and "no NVIDIA GPU or driver" in host.reason
    nolibs = tmp_path / "nolibs"
    nolibs.mkdir()
    host = discover(lib_dirs=[nolibs], dev_dir=fake["dev"], bin_dirs=[], proc_dir=fake["proc"])
    assert host.driver is None and "libraries" in host.reason


def test_require_cuda_names_the_driver(fake: dict[str, Path]) -> None:
    drv = _discover(fake).driver
    assert drv is not None
    check_requirements(drv, {"NVIDIA_REQUIRE_CUDA": "cuda>=12.4 brand=tesla,driver>=470,driver<471"})
    with pytest.raises(GpuError) as info:
        check_requirements(drv, {"NVIDIA_REQUIRE_CUDA": "cuda>=13.1"})
    line = info.value.line()
    assert f"driver {FAKE_DRIVER} supports CUDA up to 13.0" in line
    assert "NVIDIA_REQUIRE_CUDA=cuda>=13.1" in line and "590.44.01" in line and "NVIDIA_DISABLE_REQUIRE" in line
    check_requirements(drv, {"NVIDIA_REQUIRE_CUDA": "cuda>=13.1", "NVIDIA_DISABLE_REQUIRE": "1"})


def test_injection_plan(fake: dict[str, Path]) -> None:
    drv = _discover(fake).driver
    assert drv is not None
    plan = plan_injection(drv, gpu_request({}, {}, "1"))
    assert [d.path for d in plan.devices if d.path.startswith("/dev/nvidia") and d.path[11:].isdigit()] == [
        "/dev/nvidia1"
    ]
    targets = dict((c, h) for h, c in plan.mounts)
    assert f"/usr/local/nvidia/lib64/libcuda.so.{FAKE_DRIVER}" in targets
    assert "/usr/bin/nvidia-smi" in targets
    assert not any("libnvidia-encode" in c for c in targets)  # video is not asked for
    links = dict(plan.symlinks)
    assert links["/usr/local/nvidia/lib64/libcuda.so.1"] == f"libcuda.so.{FAKE_DRIVER}"
    assert links["/usr/local/nvidia/lib64/libcuda.so"] == "libcuda.so.1"
    assert plan.env == {"NVIDIA_VISIBLE_DEVICES": "1"}
    # capabilities: utility only -> no libcuda; video -> encode
    util = plan_injection(drv, gpu_request({"NVIDIA_DRIVER_CAPABILITIES": "utility"}, {}, None))
    assert not any("libcuda" in c for _, c in util.mounts) and any("libnvidia-ml" in c for _, c in util.mounts)
    video = plan_injection(drv, gpu_request({"NVIDIA_DRIVER_CAPABILITIES": "all"}, {}, None))
    assert any("libnvidia-encode" in c for _, c in video.mounts)
    with pytest.raises(GpuError, match="GPU 5 was asked for but this host has 2"):
        plan_injection(drv, gpu_request({}, {}, "5"))


def test_gpu_request_precedence() -> None:
    assert gpu_request({}, {}, None).devices == ("all",)
    assert gpu_request({"NVIDIA_VISIBLE_DEVICES": "void"}, {}, None).void
    assert gpu_request({"NVIDIA_VISIBLE_DEVICES": "0"}, {"NVIDIA_VISIBLE_DEVICES": "1"}, None).devices == ("1",)
    assert gpu_request({"NVIDIA_VISIBLE_DEVICES": "void"}, {}, "all").devices == ("all",)
    none = gpu_request({}, {}, "none")
    assert not none.void and none.devices == ()
    assert gpu_request({}, {}, None).capabilities == frozenset({"compute", "utility"})
    assert parse_gpus_option('"device=0,1"') == "0,1"


def test_no_gpu_for_an_image_that_asks_for_cuda_is_said(fake: dict[str, Path]) -> None:
    """``--gpus none`` (or void, or NVIDIA_VISIBLE_DEVICES=none) on an image that requires CUDA starts it without a
    GPU: one note says so, with a driver on the host or without; an image that asks for no CUDA gets no note."""
    from gpuship.run.runner import settle_gpus

    host = _discover(fake)
    cuda_env = {"NVIDIA_REQUIRE_CUDA": "cuda>=13.0"}
    for gpus, env, asked in [
        ("none", {}, "--gpus none"),
        ("void", {}, "--gpus void"),
        (None, {"NVIDIA_VISIBLE_DEVICES": "none"}, "NVIDIA_VISIBLE_DEVICES=none"),
    ]:
        notes: list[str] = []
        request, injection = settle_gpus(cuda_env, RunOptions(gpus=gpus, env=env), host, notes.append)
        assert request.devices == ()
        assert len(notes) == 1, notes
        assert notes[0].startswith(f"note: {asked}: the container starts without a GPU, though the image asks for "
                                   "CUDA >= 13.0"), notes[0]  # fmt: skip
        if injection is not None:  # none: the driver's libraries and control devices, no GPU device
            assert not [d for d in injection.devices if d.path[len("/dev/nvidia") :].isdigit()]
    no_driver = discover(lib_dirs=[fake["lib"]], dev_dir=fake["proc"], bin_dirs=[], proc_dir=fake["proc"])
    notes = []
    settle_gpus(cuda_env, RunOptions(gpus="none"), no_driver, notes.append)
    assert len(notes) == 1 and "starts without a GPU" in notes[0]
    for env, gpus in [({}, "none"), (cuda_env, None), (cuda_env, "all")]:
        notes = []
        settle_gpus(env, RunOptions(gpus=gpus), host, notes.append)
        assert notes == []


# -- flags ------------------------------------------------------------------------------------------------
def test_flag_parsers() -> None:
    assert parse_size("1g") == 1 << 30 and parse_size("512m") == 512 << 20 and parse_size("64MiB") == 64 << 20
    assert parse_size("4096") == 4096
    with pytest.raises(GpushipError):
        parse_size("lots")
    assert parse_ulimit("memlock=-1") == Ulimit("memlock", -1, -1)
    assert parse_ulimit("nofile=1024:4096") == Ulimit("nofile", 1024, 4096)
    with pytest.raises(GpushipError):
        parse_ulimit("bogus=1")
    v = parse_volume("/data:/in:ro")
    assert (v.source, v.destination, v.readonly) == ("/data", "/in", True)
    with pytest.raises(GpushipError):
        parse_volume("/data")
    assert parse_env(["A=1", "HOMEISH", "B"], {"HOMEISH": "x"}) == {"A": "1", "HOMEISH": "x"}
    assert parse_port("127.0.0.1:8080:8000/tcp") == "127.0.0.1:8080:8000/tcp"
    with pytest.raises(GpushipError):
        parse_port("eighty")
    opts = RunOptions().with_ulimits([Ulimit("stack", 1, 2)])
    assert [str(u) for u in opts.ulimits] == ["memlock=-1", "stack=1:2"]


def test_engine_command_line() -> None:
    opts = RunOptions(command=("python", "app.py"), env={"A": "1"}, ports=("8000:8000",), entrypoint=("/bin/sh", "-c"))
    argv = engine_argv("docker", "img:tag", opts, gpu_flags("docker", gpu_request({}, {}, "all")))
    joined = " ".join(argv[1:])
    assert (
        "run --rm -i --shm-size 1g --ulimit memlock=-1 --ulimit stack=67108864 --gpus all -e A=1 -p 8000:8000" in joined
    )
    assert argv[-4:] == ["img:tag", "-c", "python", "app.py"] and argv[argv.index("--entrypoint") + 1] == "/bin/sh"
    assert gpu_flags("docker", gpu_request({}, {}, "0,1")) == ["--gpus", '"device=0,1"']
    assert gpu_flags("podman", gpu_request({}, {}, "all")) == ["--device", "nvidia.com/gpu=all"]
    assert gpu_flags("docker", gpu_request({}, {}, "none")) == []
    assert format_size(3 << 29) == "1536m" and format_size(1000) == "1000b"


def test_runc_config() -> None:
    proc = Process(("id",), ("PATH=/bin",), "/work", ExecUser(65532, 65532, (65532, 44), "/home/x"))
    cfg = runc_config(
        proc, "/r", shm_size=256 << 20, ulimits=[Ulimit("memlock", -1, -1)], read_only=True, tmpfs=["/tmp"]
    )
    assert cfg["process"]["user"] == {"uid": 65532, "gid": 65532, "additionalGids": [65532, 44]}
    assert cfg["process"]["capabilities"]["effective"] == []  # not root: no effective capabilities
    assert cfg["process"]["rlimits"] == [{"type": "RLIMIT_MEMLOCK", "soft": UNLIMITED, "hard": UNLIMITED}]
    shm = next(m for m in cfg["mounts"] if m["destination"] == "/dev/shm")
    assert f"size={256 << 20}" in shm["options"]
    assert {n["type"] for n in cfg["linux"]["namespaces"]} == {"pid", "ipc", "mount"}  # host network
    assert cfg["root"] == {"path": "/r", "readonly": True}


# -- users and commands, against a real little root ------------------------------------------------------
@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\napp:x:1001:\nvideo:x:44:app,other\n")
    tool = root / "bin/tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (root / "usr").mkdir()
    (root / "usr/bin").symlink_to("/bin")  # absolute: must resolve inside the root
    return root


def test_resolve_user(rootfs: Path) -> None:
    assert resolve_user(str(rootfs), "") == ExecUser(0, 0, (0,), "/root", "root")
    assert resolve_user(str(rootfs), "app") == ExecUser(1000, 1001, (1001, 44), "/home/app", "app")
    assert resolve_user(str(rootfs), "1000:44").gid == 44
    assert resolve_user(str(rootfs), "4242") == ExecUser(4242, 0, (0,), "/", "")
    with pytest.raises(GpushipError, match="no user 'ghost'"):
        resolve_user(str(rootfs), "ghost")
    with pytest.raises(GpushipError, match="no group 'nope'"):
        resolve_user(str(rootfs), "app:nope")


def test_command_resolution(rootfs: Path) -> None:
    cfg = ImageConfig(env=("PATH=/usr/bin",), entrypoint=("tool",), cmd=("--default",), user="app")
    proc = container_process(rootfs, cfg, RunOptions(), plan_injection_empty())
    assert proc.args == ("tool", "--default") and proc.cwd == "/" and "HOME=/home/app" in proc.env
    proc = container_process(rootfs, cfg, RunOptions(command=("--other",), env={"X": "1"}), plan_injection_empty())
    assert proc.args == ("tool", "--other") and "X=1" in proc.env
    assert find_executable(str(rootfs), "tool", "/usr/bin", "/") == "/usr/bin/tool"
    with pytest.raises(GpushipError, match="'nothere' is not found in the image"):
        container_process(rootfs, cfg, RunOptions(entrypoint=("nothere",)), plan_injection_empty())
    with pytest.raises(GpushipError, match="has no /usr/local/bin/gpuship-check"):
        container_process(rootfs, cfg, RunOptions(entrypoint=("/usr/local/bin/gpuship-check",)), plan_injection_empty())


def plan_injection_empty():
    from gpuship.run import Injection

    return Injection()
