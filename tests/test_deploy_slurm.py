"""``gpuship deploy slurm|ngc`` and ``gpuship export --format squashfs``.

No Slurm, pyxis or enroot here: the scripts are checked by shellcheck and run against recording stand-ins
for ``srun``/``ngc`` (which show the exact argv the real tools would get); the squashfs file is read back
with unsquashfs, and its ``/etc/rc`` is run in a chroot of the extracted tree, the way enroot starts it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuship.cache import Cache
from gpuship.cli.main import app
from gpuship.deploy import NgcOptions, SlurmOptions, ngc_script, slurm_script, spec_from_image
from gpuship.deploy.ngc import commandline
from gpuship.deploy.squashfs import enroot_files, export_squashfs, mksquashfs_argv
from gpuship.errors import GpushipError, IntegrityError
from gpuship.oci import Entry, Image, ImageConfig, append_layers, build_layer, empty_image, with_config
from gpuship.oci.layout import write_oci_layout
from gpuship.serve import runtime_entries, with_runtime

RECORDER = """#!{python}
import json, os, sys
with open(os.environ["RECORD"], "w") as fh:
    json.dump({{"argv": sys.argv[1:], "env": {{k: os.environ.get(k) for k in ("LOG_LEVEL", "MSG", "PORT")}}}}, fh)
"""


def function_image(cache: Cache) -> Image:
    layer = build_layer([Entry.dir("app"), *runtime_entries()], cache)
    cfg = with_runtime(ImageConfig(working_dir="/app"), "torch_status.app:handle", python="/opt/venv/bin/python")
    return with_config(append_layers(empty_image("linux/amd64"), [layer]), cfg)


def batch_image(cache: Cache) -> Image:
    layer = build_layer([Entry.file("work/train.py", "print(1)\n")], cache)
    cfg = ImageConfig(entrypoint=("python3", "/work/train.py"), cmd=("--data", "/data/set one"), working_dir="/work")
    return with_config(append_layers(empty_image("linux/amd64"), [layer]), cfg)


def shellcheck(path: Path) -> None:
    proc = subprocess.run(["shellcheck", "--severity=style", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def recorder(bin_dir: Path, name: str) -> Path:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(RECORDER.format(python=sys.executable))
    path.chmod(0o755)
    return path


# -- slurm ---------------------------------------------------------------------------------------------------
def test_slurm_script_passes_shellcheck_and_runs_srun_with_the_image(cache: Cache, tmp_path: Path) -> None:
    spec = spec_from_image(batch_image(cache), "oci:./train", name="train", gpus=4, env=["LOG_LEVEL=DEBUG"])
    opts = SlurmOptions(mounts=("/data:/data:ro",), time="02:00:00", partition="gpu", cpus_per_task=16, memory="64G")
    script = tmp_path / "train.sbatch"
    script.write_text(slurm_script(spec, opts))
    shellcheck(script)
    text = script.read_text()
    for line in (
        "#SBATCH --job-name=train",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --time=02:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --cpus-per-task=16",
        "#SBATCH --mem=64G",
    ):
        assert line in text
    # every #SBATCH line comes before the first command, or sbatch ignores it
    first_cmd = next(i for i, line in enumerate(text.splitlines()) if line and not line.startswith("#"))
    assert all(i < first_cmd for i, line in enumerate(text.splitlines()) if line.startswith("#SBATCH"))

    bin_dir = tmp_path / "bin"
    recorder(bin_dir, "srun")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RECORD": str(tmp_path / "srun.json"), "SLURM_SUBMIT_DIR": str(tmp_path)}
    missing = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "run gpuship export first" in missing.stderr

    (tmp_path / "train.sqsh").write_bytes(b"hsqs")
    ran = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    rec = json.loads((tmp_path / "srun.json").read_text())
    assert rec["argv"] == [
        f"--container-image={tmp_path}/train.sqsh",
        f"--container-mounts={tmp_path}/results:/results,/data:/data:ro",
        "--no-container-mount-home",
        "--container-workdir=/work",
        "--container-env=LOG_LEVEL",
        "python3",
        "/work/train.py",
        "--data",
        "/data/set one",
    ]
    assert rec["env"]["LOG_LEVEL"] == "DEBUG"
    assert (tmp_path / "results").is_dir()


def test_slurm_function_image_says_where_it_serves(cache: Cache, tmp_path: Path) -> None:
    spec = spec_from_image(function_image(cache), "r.example/torch-status:1", gpus=1)
    script = tmp_path / "s.sbatch"
    script.write_text(slurm_script(spec, SlurmOptions(image_file="/shared/images/ts.sqsh")))
    shellcheck(script)
    text = script.read_text()
    assert 'IMAGE_FILE="${IMAGE_FILE:-/shared/images/ts.sqsh}"' in text
    assert "serving on http://$(hostname):8080" in text
    assert text.rstrip().endswith("/opt/venv/bin/python /opt/gpuship/gpuship_runtime.py torch_status.app:handle")
    with pytest.raises(GpushipError):
        slurm_script(spec, SlurmOptions(mounts=("/a b:/c",)))
    with pytest.raises(GpushipError):
        slurm_script(spec, SlurmOptions(image_file="$(reboot).sqsh"))


# -- ngc -----------------------------------------------------------------------------------------------------
def test_ngc_command_line(cache: Cache, tmp_path: Path) -> None:
    spec = spec_from_image(
        function_image(cache), "nvcr.io/myorg/team/torch-status:1", gpus=2, env=['MSG=it\'s "quoted" $HOME']
    )
    script = tmp_path / "ngc.sh"
    script.write_text(ngc_script(spec, NgcOptions(ace="nv-us-west-2", org="myorg", team="team", total_runtime="1h")))
    shellcheck(script)
    bin_dir = tmp_path / "bin"
    recorder(bin_dir, "ngc")
    ran = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "RECORD": str(tmp_path / "ngc.json")},
    )
    assert ran.returncode == 0, ran.stderr
    argv = json.loads((tmp_path / "ngc.json").read_text())["argv"]
    assert argv[:2] == ["batch", "run"]
    opts = {argv[i]: argv[i + 1] for i in range(2, len(argv), 2)}
    assert opts["--image"] == "myorg/team/torch-status:1"
    assert opts["--instance"] == "dgxa100.80g.2.norm"
    assert opts["--result"] == "/results" and opts["--port"] == "8080" and opts["--total-runtime"] == "1h"
    assert opts["--ace"] == "nv-us-west-2" and opts["--org"] == "myorg" and opts["--team"] == "team"
    cl = opts["--commandline"]
    assert cl == commandline(spec)
    # the job's shell gets the value back exactly, and runs the image's entrypoint
    probe = subprocess.run(
        ["sh", "-c", cl.replace("cd /app && exec", "printf '%s|' \"$MSG\"; printf '%s|'")],
        capture_output=True,
        text=True,
    )
    assert (
        probe.stdout
        == 'it\'s "quoted" $HOME|/opt/venv/bin/python|/opt/gpuship/gpuship_runtime.py|torch_status.app:handle|'
    )


# -- squashfs ------------------------------------------------------------------------------------------------
def _dash_entries() -> list[Entry]:
    """/bin/dash and the libraries it needs, so the exported tree can run /etc/rc in a chroot."""
    out = subprocess.run(["ldd", "/bin/dash"], capture_output=True, text=True).stdout
    libs = {Path(m) for m in re.findall(r"(/\S+) \(0x", out)}
    entries = [Entry.file("usr/bin/sh", Path("/bin/dash").resolve(), mode=0o755)]
    entries += [Entry.file(str(p).lstrip("/"), p.resolve(), mode=0o755) for p in sorted(libs)]
    return entries


def chroot_image(cache: Cache) -> Image:
    base = build_layer(
        [
            *_dash_entries(),
            Entry.dir("etc"),
            Entry.file("etc/doomed", "x"),
            Entry.file("etc/environment", "OLD=1\n"),
            Entry.file("secret", "s", mode=0o600),
            Entry.symlink("bin", "usr/bin"),
        ],
        cache,
    )
    top = build_layer([Entry.whiteout("etc/doomed")], cache)
    cfg = ImageConfig(
        env=("PATH=/usr/bin", "GREETING=hello world"),
        entrypoint=("/usr/bin/sh", "-c", 'echo "cwd=$(pwd) args=$*" > /out.txt', "entry"),
        cmd=("default", "cmd"),
        working_dir="/srv/app",
        labels={"org.opencontainers.image.title": "demo"},
    )
    return with_config(append_layers(empty_image("linux/amd64"), [base, top]), cfg)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_squashfs_export_is_reproducible_and_runs_like_enroot(cache: Cache, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    img = chroot_image(cache)
    out = tmp_path / "out"
    a = export_squashfs(img, out / "a.sqsh")
    b = export_squashfs(img, out / "b.sqsh")
    assert _sha(a) == _sha(b)
    assert sorted(p.name for p in out.iterdir()) == ["a.sqsh", "b.sqsh"]  # no temp left behind
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    c = export_squashfs(img, out / "c.sqsh")
    assert _sha(c) != _sha(a)

    listing = subprocess.run(["unsquashfs", "-lls", str(a)], capture_output=True, text=True, check=True).stdout
    assert "etc/doomed" not in listing  # the whiteout was applied
    assert all(" root/root " in line for line in listing.splitlines() if line.startswith(("-", "d", "l")))
    assert "1970-01-01 00:00" in listing
    assert re.search(r"^-r[w-]-{7} root/root .* squashfs-root/secret$", listing, re.M)  # owner may read it

    root = tmp_path / "rootfs"
    subprocess.run(["unsquashfs", "-q", "-d", str(root), str(a)], check=True, capture_output=True)
    assert (root / "etc/environment").read_text() == "PATH=/usr/bin\nGREETING=hello world\n"
    rc = (root / "etc/rc").read_text()
    assert rc.startswith("# org.opencontainers.image.title demo\n")
    assert (root / "srv/app").is_dir() and (root / "etc/rc.local").is_file()
    # enroot starts a container by running /etc/rc with the command's arguments
    subprocess.run(["chroot", str(root), "/usr/bin/sh", "/etc/rc"], check=True, capture_output=True)
    assert (root / "out.txt").read_text() == "cwd=/srv/app args=default cmd\n"
    subprocess.run(["chroot", str(root), "/usr/bin/sh", "/etc/rc", "given", "args"], check=True, capture_output=True)
    assert (root / "out.txt").read_text() == "cwd=/srv/app args=given args\n"


def test_enroot_rc_without_entrypoint_and_with_odd_text() -> None:
    files = enroot_files(ImageConfig(labels={"k": "multi\nline"}))
    rc = files["etc/rc"].decode()
    assert "# k multi line" in rc and "exec /bin/sh" in rc and "cd /" in rc
    subprocess.run(["sh", "-n"], input=files["etc/rc"], check=True)
    files2 = enroot_files(ImageConfig(entrypoint=("/x y", "it's"), working_dir="/w d"))
    text = files2["etc/rc"].decode()
    assert "cd '/w d'" in text and """exec '/x y' 'it'"'"'s' "$@\"""" in text
    subprocess.run(["sh", "-n"], input=files2["etc/rc"], check=True)


def test_export_fails_cleanly(cache: Cache, tmp_path: Path) -> None:
    layer = build_layer([Entry.symlink("etc", "/tmp/elsewhere")], cache)
    img = append_layers(empty_image("linux/amd64"), [layer])
    out = tmp_path / "out" / "x.sqsh"
    with pytest.raises(IntegrityError, match="symlink"):
        export_squashfs(img, out)
    assert not out.exists() and list(out.parent.iterdir()) == []
    assert not Path("/tmp/elsewhere/rc").exists()
    with pytest.raises(GpushipError, match="compression"):
        mksquashfs_argv("a", "b", "brotli")


def test_cli_export_and_slurm(cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUSHIP_CACHE", str(cache.root))
    layout = write_oci_layout(chroot_image(cache), tmp_path / "demo-layout", tag="demo")
    runner = CliRunner()
    res = runner.invoke(
        app, ["export", f"oci:{layout}:demo", "--format", "squashfs", "-o", str(tmp_path / "demo.sqsh")]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "demo.sqsh").read_bytes()[:4] == b"hsqs"
    res = runner.invoke(app, ["deploy", "slurm", f"oci:{layout}:demo", "--gpus", "2", "-o", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    script = tmp_path / "s" / "demo.sbatch"
    assert os.access(script, os.X_OK)
    shellcheck(script)
    assert f"gpuship export oci:{layout}:demo --format squashfs -o demo.sqsh" in script.read_text()
    res = runner.invoke(
        app, ["deploy", "ngc", f"oci:{layout}:demo", "--ref", "nvcr.io/o/demo:1", "-o", str(tmp_path / "s")]
    )
    assert res.exit_code == 0, res.output
    shellcheck(tmp_path / "s" / "demo-ngc.sh")
    assert shlex.split((tmp_path / "s" / "demo-ngc.sh").read_text().split("--commandline ", 1)[1])[0].endswith(
        "exec /usr/bin/sh -c 'echo \"cwd=$(pwd) args=$*\" > /out.txt' entry default cmd"
    )
