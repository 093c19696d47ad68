"""aarch64 emulated boards: a Debian arm64 image under qemu-user, its own sshd, in a namespace.

The board test needs root and Debian's qemu-user-static, binfmt-support and debootstrap (make
system-deps installs them). It uses the image cache (``$FLEET_CACHE/images``, default
``~/.cache/fleet/images``): the first run builds the image (about 4.5 min on 2 cores), later runs
reuse it.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from fleet.errors import FleetError
from fleet.inventory import load_inventory
from fleet.remote import session
from fleet.sim import aptproxy, lifecycle, netns, qemu, rootfs, sshd
from fleet.sim.lifecycle import board_names, plan_boards

NEEDS = [t for t in ("debootstrap", "update-binfmts", "qemu-aarch64-static") if not shutil.which(t)]
BOARD = pytest.mark.skipif(
    os.geteuid() != 0 or bool(NEEDS),
    reason="needs root and " + (", ".join(NEEDS) or "-") + " (apt-get install qemu-user-static binfmt-support debootstrap)",
)


def test_plan_boards_arch():
    assert plan_boards(None, 1, "aarch64") == [("pi5-hailo8l", 1, "aarch64")]
    assert plan_boards("pi5-hailo8l:1@aarch64,rk3588:1", None) == [
        ("pi5-hailo8l", 1, "aarch64"), ("rk3588", 1, "x86_64")]
    names = board_names(plan_boards("pi5-hailo8l:1,pi5-hailo8l:2@aarch64", 3))
    assert [n for _, n, _ in names] == ["sim-pi5-1", "sim-pi5-a64-1", "sim-pi5-a64-2"]
    assert lifecycle.parse_mix("rk3588:2@aarch64", None) == [("rk3588", 2)]
    with pytest.raises(FleetError, match="unknown architecture 'arm'"):
        plan_boards("rk3588:1@arm", None)
    with pytest.raises(FleetError, match="--arch riscv64"):
        plan_boards(None, 1, "riscv64")


def test_plan_suites_per_board():
    assert lifecycle.plan_suites("pi5-hailo8l:1@aarch64:trixie,rk3588:2@aarch64,cpu:1", None) == [
        "trixie", "bookworm", "bookworm", ""]
    assert lifecycle.plan_suites(None, 2, "aarch64", "bullseye") == ["bullseye", "bullseye"]
    assert plan_boards("rk3588:1@aarch64:bullseye", None) == [("rk3588", 1, "aarch64")]
    with pytest.raises(FleetError, match="unknown Debian suite 'buster'"):
        plan_boards("rk3588:1@aarch64:buster", None)
    with pytest.raises(FleetError, match="names a Debian suite for an x86_64 board"):
        plan_boards("rk3588:1@x86_64:trixie", None)
    with pytest.raises(FleetError, match="no board is aarch64"):
        lifecycle.plan_suites(None, 1, "x86_64", "trixie")
    with pytest.raises(FleetError, match="use one of bullseye, bookworm, trixie"):
        rootfs.image_spec("sid")
    assert rootfs.image_spec("trixie").name == "debian-trixie-arm64"
    assert "python3.13-venv" in rootfs.image_spec("trixie").absent
    assert rootfs.image_spec("bookworm") is rootfs.DEFAULT_IMAGE


def test_cpuinfo_describes_cortex_a76():
    text = qemu.cpuinfo_text(4)
    blocks = [b for b in text.split("\n\n") if b.strip()]
    assert len(blocks) == 4
    for i, b in enumerate(blocks):
        fields = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in b.splitlines()))
        assert fields["processor"] == str(i)
        assert fields["CPU implementer"] == "0x41" and fields["CPU part"] == "0xd0b"
        assert "asimd" in fields["Features"].split()


def _write_inventory(path: Path, **hv) -> Path:
    base = {"board": "pi5-hailo8l", "accelerator": "hailo8l", "fleet_root": "/opt/fleet", "ansible_host": "10.0.0.2"}
    path.write_text(yaml.safe_dump({"all": {"hosts": {"pi": {**base, **hv}}}}))
    return path


def test_inventory_reads_arch_vars(tmp_path):
    inv = _write_inventory(tmp_path / "a.yml", arch="aarch64", fleet_wheel_platform="manylinux_2_28_aarch64",
                           fleet_python_version="3.11", cpu_emulated="qemu-user")
    (b,) = load_inventory(inv)
    assert (b.arch, b.wheel_platform, b.python_version, b.cpu_emulated) == (
        "aarch64", "manylinux_2_28_aarch64", "3.11", "qemu-user")
    (plain,) = load_inventory(_write_inventory(tmp_path / "b.yml"))
    assert (plain.arch, plain.python_version, plain.cpu_emulated) == ("", "", "")
    with pytest.raises(FleetError, match="fleet_wheel_platform"):
        load_inventory(_write_inventory(tmp_path / "c.yml", arch="aarch64"))
    with pytest.raises(FleetError, match="unknown arch 'arm64'"):
        load_inventory(_write_inventory(tmp_path / "d.yml", arch="arm64"))
    with pytest.raises(FleetError, match="cpu_emulated 'qemu'"):
        load_inventory(_write_inventory(tmp_path / "e.yml", cpu_emulated="qemu"))
    with pytest.raises(FleetError, match="not MAJOR.MINOR"):
        load_inventory(_write_inventory(tmp_path / "f.yml", fleet_python_version="3.11.2"))


def _mounts_under(path: Path) -> list[str]:
    p = str(path)
    return [m for m in qemu.mounted_points() if m == p or m.startswith(p + "/")]


@BOARD
@pytest.mark.slow
def test_aarch64_board_up_ssh_down(tmp_path):
    t0 = time.monotonic()
    image = rootfs.build(log=print)  # cached after the first run
    print(f"image ready in {time.monotonic() - t0:.1f} s (build_seconds {image.get('build_seconds')})")
    packages = {line.split()[0] for line in (Path(image["root"]).parent / "packages.txt").read_text().splitlines()}
    assert {"python3", "openssh-server"} <= packages and "python3-venv" not in packages

    state_dir, inv = tmp_path / "sim", tmp_path / "inventory" / "sim.yml"
    t1 = time.monotonic()
    state = lifecycle.up(state_dir, inv, mix="pi5-hailo8l:1@aarch64", log=print)
    print(f"sim up (1 aarch64 board) in {time.monotonic() - t1:.1f} s")
    (b,) = state.boards
    try:
        assert b.name == "sim-pi5-a64-1" and b.arch == "aarch64" and b.netns
        assert set(b.mounts) <= set(_mounts_under(state_dir)) and len(b.mounts) == 6  # overlay + 5 binds
        hv = yaml.safe_load(inv.read_text())["all"]["hosts"][b.name]
        assert hv["arch"] == "aarch64" and hv["cpu_emulated"] == "qemu-user"
        assert hv["fleet_wheel_platform"] == "manylinux_2_28_aarch64"
        assert hv["fleet_python_version"] == ".".join(image["python"].split(".")[:2])
        (board,) = load_inventory(inv)
        assert (board.arch, board.cpu_emulated, board.fleet_root) == ("aarch64", "qemu-user", "/opt/fleet")

        # the board's sshd is the image's arm64 sshd, chrooted, recognised by its root and config
        assert sshd.is_ours(b.pid, b.config, b.chroot)
        assert "qemu" in Path(f"/proc/{b.pid}/cmdline").read_bytes().decode(errors="replace")
        assert os.readlink(f"/proc/{b.pid}/root") == b.chroot

        t2 = time.monotonic()
        conn = session.connect(board, timeout_s=60)  # host key pinned by the sim's known_hosts
        try:
            print(f"ssh connect in {time.monotonic() - t2:.1f} s")
            assert conn.run("uname -m", hide=True, in_stream=False).stdout.strip() == "aarch64"
            ver = conn.run("python3 --version", hide=True, in_stream=False).stdout.strip()
            assert ver == f"Python {image['python']}", ver
            # bare: Debian keeps ensurepip in python3.X-venv, so `import venv` works but no venv can be made
            assert conn.run("python3 -c 'import ensurepip'", hide=True, warn=True, in_stream=False).failed
            made = conn.run("python3 -m venv /tmp/v", hide=True, warn=True, in_stream=False)
            assert made.failed and "ensurepip" in made.stdout + made.stderr and "python3-venv" in made.stdout + made.stderr
            assert conn.run("dpkg -s python3-venv", hide=True, warn=True, in_stream=False).failed
            cpu = conn.run("cat /proc/cpuinfo", hide=True, in_stream=False).stdout
            assert "CPU part\t: 0xd0b" in cpu and "GenuineIntel" not in cpu and "AuthenticAMD" not in cpu
            # qemu emulates a Cortex-A76 for every process (QEMU_CPU via sshd's SetEnv): the auxiliary
            # vector has no SVE/I8MM (HWCAP2 0), as on a Pi 5, not qemu's default 'max' CPU's
            auxv = conn.run("echo QEMU_CPU=$QEMU_CPU; LD_SHOW_AUXV=1 /bin/true", hide=True, in_stream=False).stdout
            assert f"QEMU_CPU={qemu.QEMU_CPU}" in auxv and re.search(r"AT_HWCAP2:\s+0x0\n", auxv), auxv
            # a process the session left running (as an agent would be) must go with `sim down`
            conn.run("nohup sleep 600 >/dev/null 2>&1 &", hide=True, in_stream=False)
        finally:
            conn.close()
        assert len(qemu.processes_in(Path(b.chroot))) >= 2  # sshd + the sleep
        # a second board key would not be accepted: the pinned known_hosts holds this board's key only
        assert Path(state.known_hosts).read_text().count("\n") == 1
    finally:
        t3 = time.monotonic()
        rep = lifecycle.down(state_dir)
        print(f"sim down in {time.monotonic() - t3:.1f} s: {rep}")
    assert not _mounts_under(state_dir), _mounts_under(state_dir)
    assert not qemu.processes_in(Path(b.chroot))
    assert not sshd.is_ours(b.pid, b.config, b.chroot)
    assert not netns.exists(b.netns) and not netns.link_exists(b.host_if)
    assert not inv.exists()
    assert rootfs.load_image() is not None  # the image cache stays for the next run


def test_agent_names_arm_cores():
    from device_agent.agent import cpu_info

    assert cpu_info(qemu.cpuinfo_text(2))["model"] == "Cortex-A76"
    rk3588 = "processor\t: 0\nCPU part\t: 0xd05\n\nprocessor\t: 4\nCPU part\t: 0xd0b\n"
    assert cpu_info(rk3588)["model"] == "Cortex-A55 + Cortex-A76"
    pi5 = qemu.cpuinfo_text(1) + "Revision\t: d04170\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n"
    assert cpu_info(pi5)["model"] == "Raspberry Pi 5 Model B Rev 1.0"


PROBE_MODEL = "crepe-tiny"  # 2.5 MB: the smallest real ONNX artifact (make models builds it)


def _has_model(name: str) -> bool:
    from fleet import paths

    try:
        manifest = yaml.safe_load((paths.artifacts_dir() / "manifest.json").read_text())
    except OSError:
        return False
    return any(a.get("model") == name for a in manifest.get("artifacts", []))


ROOT = Path(__file__).resolve().parents[1]
SMOKE_MODELS = (PROBE_MODEL, "whisper-tiny.en")
SMOKE_DATA = ("speech:smoke",)  # the clips of whisper_hybrid's smoke selection


def _has_speech() -> bool:
    try:
        from fleet.datasets.local import require

        require("speech")
        return True
    except FleetError:
        return False


@BOARD
@pytest.mark.slow
@pytest.mark.skipif(not aptproxy.available(), reason="needs apt-cacher-ng (apt-get install apt-cacher-ng)")
@pytest.mark.skipif(not all(map(_has_model, SMOKE_MODELS)), reason=f"needs artifacts of {', '.join(SMOKE_MODELS)} (make models)")
@pytest.mark.skipif(not _has_speech(), reason="needs the speech data set in the data root (make data)")
def test_aarch64_deploy_from_bare_doctor_whisper_smoke(tmp_path):
    """A bare aarch64 board: the base role installs python3-venv with the board's apt through the
    controller's apt-cacher-ng, the agent comes from the aarch64 wheelhouse, ONNX Runtime's ARM
    kernels run a real model there; a second deploy changes nothing; `fleet doctor` fingerprints
    it as aarch64 with the emulation noted; `fleet test suites/whisper_hybrid` runs its smoke
    selection there (latency INVALID "CPU emulated by qemu-user", not judged; WER and NPU parity
    checked) with ARM-kernel parity against the controller's x86_64 ONNX Runtime; down leaves
    nothing. One board, one image, one deploy for all of it (about 8 min on 2 cores)."""
    from fleet.deploy.run import deploy
    from fleet.doctor.cli import run_doctor
    from fleet.results.cli import summarize
    from fleet.results.store import Store
    from fleet.runner.cli import run_suite

    t_all = time.monotonic()
    state_dir, inv = tmp_path / "sim", tmp_path / "inventory" / "sim.yml"
    state = lifecycle.up(state_dir, inv, boards=1, arch="aarch64", log=print)
    (b,) = state.boards
    try:
        assert aptproxy.is_ours(state.apt_proxy_pid, state.apt_proxy_conf)
        hv = yaml.safe_load(inv.read_text())["all"]["hosts"][b.name]
        assert hv["fleet_apt_proxy"] == f"http://{b.host_addr}:{state.apt_proxy_port}"
        t0 = time.monotonic()
        first = deploy(inv, models=SMOKE_MODELS, datasets=SMOKE_DATA, runs_dir=tmp_path / "runs")
        print(f"first deploy (bare board) {time.monotonic() - t0:.1f} s")
        (h,) = first.hosts
        assert first.exit_code == 0 and h.status == "changed", first.to_dict()
        (board,) = load_inventory(inv)
        conn = session.connect(board, timeout_s=60)
        try:
            info = conn.run("/opt/fleet/venv/bin/fleet-agent --root /opt/fleet info", hide=True, in_stream=False).stdout
            assert "Cortex-A76" in info and "backend onnx: available" in info, info
            probe = ("import onnxruntime as ort, numpy as np; "
                     "s = ort.InferenceSession('/opt/fleet/models/crepe-tiny/crepe_tiny.int8.onnx'); "
                     "i = s.get_inputs()[0]; print(s.run(None, {i.name: np.zeros([64, 1024], np.float32)})[0].shape)")
            out = conn.run(f'/opt/fleet/venv/bin/python -c "{probe}"', hide=True, in_stream=False).stdout
            assert out.strip() == "(64, 360)", out
            assert not conn.run("dpkg -s python3-venv", hide=True, warn=True, in_stream=False).failed
        finally:
            conn.close()
        t1 = time.monotonic()
        second = deploy(inv, models=SMOKE_MODELS, datasets=SMOKE_DATA, runs_dir=tmp_path / "runs")
        print(f"second deploy {time.monotonic() - t1:.1f} s")
        assert second.exit_code == 0 and second.hosts[0].changed == 0, second.to_dict()

        # fleet doctor: the board is aarch64, its CPU emulated by qemu-user
        t2 = time.monotonic()
        reports, rc, msg = run_doctor(str(inv))
        print(f"fleet doctor {time.monotonic() - t2:.1f} s: {msg}")
        (rep,) = reports
        assert rc == 0 and rep["status"] == "pass" and rep["machine"] == "aarch64", rep
        (cpu,) = [f for f in rep["findings"] if f["check"] == "cpu"]
        assert cpu["status"] == "ok" and cpu["detail"].startswith("aarch64 (Cortex-A76"), cpu
        assert "CPU emulated by qemu-user" in cpu["detail"], cpu

        # fleet test suites/whisper_hybrid: the smoke selection, ARM-kernel parity against x86_64
        db = tmp_path / "results.db"
        t3 = time.monotonic()
        run_id, rc = run_suite(str(ROOT / "suites" / "whisper_hybrid"), str(inv), db=str(db), quiet=True)
        print(f"fleet test suites/whisper_hybrid (smoke) {time.monotonic() - t3:.1f} s")
        store = Store(db, read_only=True)
        try:
            results = {r.test: r for r in store.results(run_id)}
            for r in results.values():
                print(f"  {r.test}: {r.outcome} {r.duration_s:.1f} s {r.message[:200]}")
            assert rc == 0, {t: (r.outcome, r.message) for t, r in results.items()}
            assert {t: r.outcome for t, r in results.items()} == {
                "test_agent_reports_board": "passed", "test_latency": "skipped", "test_wer": "passed",
                "test_npu_parity": "passed", "test_arm_parity": "passed"}
            lat = results["test_latency"]
            assert "INVALID measurement (CPU emulated by qemu-user)" in lat.message, lat.message
            agg = store.telemetry(lat.id, traces=False)["aggregate"]["measurement"]
            assert agg["verdict"] == "INVALID" and agg["reasons"] == ["CPU emulated by qemu-user"], agg
            assert agg["n"] == 2 and agg["cpu_emulated"] == "qemu-user"
            metrics = {m.name: m.value for m in results["test_wer"].metrics}
            assert metrics["clips"] == 2
            arm = {m.name: m.value for m in results["test_arm_parity"].metrics}
            print("ARM-kernel parity (aarch64 qemu-user vs x86_64 controller):", arm)
            for o in results["test_arm_parity"].outputs:
                print("  ", o)
            assert arm["arm_parity_clips"] == 2
            data = summarize(store, run_id)
        finally:
            store.close()
        (sb,) = data["boards"]
        assert (sb["arch"], sb["cpu_emulated"], sb["selection"]["name"]) == ("aarch64", "qemu-user", "smoke")
        assert data["run"]["smoke"] == [b.name]
        import contextlib
        import io

        from fleet.cli import main as fleet_main

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert fleet_main(["results", run_id, "--db", str(db)]) == 0
        shown = buf.getvalue()
        print(shown)
        assert "aarch64 CPU qemu-user · smoke" in shown and "CPU emulated by qemu-user: latency INVALID" in shown
    finally:
        lifecycle.down(state_dir)
        print(f"whole test {time.monotonic() - t_all:.1f} s")
    assert not aptproxy.is_ours(state.apt_proxy_pid, state.apt_proxy_conf)
    assert not _mounts_under(state_dir) and not qemu.processes_in(Path(b.chroot))


def _one_board_python_gathered(tmp_path, mix: str, what: str):
    """`sim up` one aarch64 board of ``mix`` and drop ``fleet_python_version`` from its inventory,
    as a lab inventory that does not say it (deploy then gathers it): (state_dir, inventory, board)."""
    state_dir, inv = tmp_path / "sim", tmp_path / "inventory" / "sim.yml"
    t0 = time.monotonic()
    state = lifecycle.up(state_dir, inv, mix=mix, log=print)
    print(f"sim up ({what} board, image cached or built) {time.monotonic() - t0:.1f} s")
    try:
        doc = yaml.safe_load(inv.read_text())
        for hv in doc["all"]["hosts"].values():
            del hv["fleet_python_version"]
        inv.write_text(yaml.safe_dump(doc))
        (board,) = state.boards
    except BaseException:
        lifecycle.down(state_dir)
        raise
    return state_dir, inv, board


@BOARD
@pytest.mark.slow
@pytest.mark.skipif(not _has_model(PROBE_MODEL), reason=f"needs artifacts of {PROBE_MODEL} (make models)")
def test_bullseye_board_is_refused_before_anything_is_copied(tmp_path):
    """A bare Debian 11 bullseye board (Python 3.9, as many RK3588 vendor images) is refused before
    anything is copied, naming onnxruntime 1.31.1, Python 3.9 and what would work. The inventory
    does not state the Python: deploy gathers it from the board. The first run builds the bullseye
    image (about 3 min), later runs reuse it."""
    from fleet.deploy.run import deploy

    state_dir, inv, old = _one_board_python_gathered(tmp_path, "rk3588:1@aarch64:bullseye", "bullseye")
    try:
        assert (old.name, old.suite, old.python_version) == ("sim-rk3588-a64-1", "bullseye", "3.9")
        t1 = time.monotonic()
        result = deploy(inv, models=(PROBE_MODEL,), datasets=(), runs_dir=tmp_path / "runs")
        print(f"deploy (bullseye refused) {time.monotonic() - t1:.1f} s")
        r = {h.host: h for h in result.hosts}[old.name]
        print(r.reason)
        assert result.exit_code != 0, result.to_dict()
        assert r.status == "refused" and r.ok == r.changed == 0, r
        for part in ("before anything was copied", "Python 3.9 on manylinux_2_28_aarch64", "onnxruntime==1.31.1",
                     "needs Python >=3.10", "Debian 13 trixie ships 3.13"):
            assert part in r.reason, (part, r.reason)
        boards = {b.name: b for b in load_inventory(inv)}
        conn = session.connect(boards[old.name], timeout_s=60)
        try:  # nothing copied, nothing installed: /opt/fleet as `sim up` made it (empty), no python3-venv
            assert conn.run("ls -A /opt/fleet", hide=True, in_stream=False).stdout.strip() == ""
            assert conn.run("dpkg -s python3-venv", hide=True, warn=True, in_stream=False).failed
        finally:
            conn.close()
    finally:
        lifecycle.down(state_dir)
    assert not _mounts_under(state_dir)
    assert not qemu.processes_in(Path(old.chroot))


# `make test` leaves this one out (marker long, run with `make test-long`): a trixie image build
# (~11 min here) and a deploy from bare under qemu (~8 min quiet, 21 min on a loaded machine) would
# double CI's time. Its output is in the README's "Board Pythons".
@BOARD
@pytest.mark.slow
@pytest.mark.long
@pytest.mark.skipif(not aptproxy.available(), reason="needs apt-cacher-ng (apt-get install apt-cacher-ng)")
@pytest.mark.skipif(not _has_model(PROBE_MODEL), reason=f"needs artifacts of {PROBE_MODEL} (make models)")
def test_trixie_board_deploys_from_bare(tmp_path):
    """A bare Debian 13 trixie board (Python 3.13) is deployed from bare with an agent built for
    cp313, the Python gathered from the board (the inventory does not state it)."""
    from fleet.deploy.run import deploy

    state_dir, inv, new = _one_board_python_gathered(tmp_path, "pi5-hailo8l:1@aarch64:trixie", "trixie")
    try:
        assert (new.name, new.suite, new.python_version) == ("sim-pi5-a64-1", "trixie", "3.13")
        t1 = time.monotonic()
        result = deploy(inv, models=(PROBE_MODEL,), datasets=(), runs_dir=tmp_path / "runs")
        print(f"deploy (trixie from bare) {time.monotonic() - t1:.1f} s")
        h = {h.host: h for h in result.hosts}[new.name]
        assert result.exit_code == 0, result.to_dict()
        assert h.status == "changed" and h.failed == 0, h
        boards = {b.name: b for b in load_inventory(inv)}
        conn = session.connect(boards[new.name], timeout_s=60)
        try:
            info = conn.run("/opt/fleet/venv/bin/fleet-agent --root /opt/fleet info", hide=True, in_stream=False).stdout
            print(info)
            assert "python 3.13" in info and "Cortex-A76" in info and "backend onnx: available" in info, info
            probe = ("import onnxruntime as ort, numpy as np; "
                     "s = ort.InferenceSession('/opt/fleet/models/crepe-tiny/crepe_tiny.int8.onnx'); "
                     "i = s.get_inputs()[0]; print(s.run(None, {i.name: np.zeros([64, 1024], np.float32)})[0].shape)")
            out = conn.run(f'/opt/fleet/venv/bin/python -c "{probe}"', hide=True, in_stream=False).stdout
            assert out.strip() == "(64, 360)", out
            whl = conn.run("ls /opt/fleet/wheelhouse", hide=True, in_stream=False).stdout
            assert "onnxruntime-1.31.1-cp313-cp313-manylinux_2_28_aarch64.whl" in whl, whl
        finally:
            conn.close()
    finally:
        lifecycle.down(state_dir)
    assert not _mounts_under(state_dir)
    assert not qemu.processes_in(Path(new.chroot))
