"""Stack fingerprint collectors (device_agent.stack) driven by recorded outputs in the documented
formats (tests/fixtures/stack/README.md; docs/reference/device_apis.md §1.6, §4.1, §4.2, §5.5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device_agent.config import BoardConfig
from device_agent.stack import StackRoots, collect_stack
from device_agent.stack.parse import (
    first_version,
    parse_identify,
    parse_librknnrt_version,
    parse_link_speed,
    parse_os_release,
    parse_rknpu_driver_version,
    version_tuple,
)

FIX = Path(__file__).parent / "fixtures" / "stack"


def roots(name: str, **kw) -> StackRoots:
    return StackRoots.fixture(FIX / name, python_version="3.11.2", machine="aarch64", **kw)


def write_models(root: Path, entries: list[dict], model: str = "whisper-tiny.en") -> None:
    d = root / "models" / model
    d.mkdir(parents=True, exist_ok=True)
    for e in entries:
        if e.pop("_present", True):
            (d / Path(e["path"]).name).write_bytes(b"x")
    (d / "manifest.json").write_text(json.dumps({"schema": 1, "artifacts": entries}))


# -- parsers ------------------------------------------------------------------------------------
def test_parse_identify_keys_on_device_architecture_not_board_name():
    d = parse_identify((FIX / "pi5_ok/commands/hailortcli fw-control identify.txt").read_text())
    assert d["firmware_version"] == "4.23.0"
    assert d["architecture"] == "hailo8l"  # Board Name says Hailo-8 (frigate#22202)
    assert d["board_name"] == "Hailo-8"
    assert d["product_name"].startswith("HAILO-8L AI ACC M.2")


def test_parse_identify_na_product_and_garbage():
    d = parse_identify("Firmware Version: 4.20.0 (release,app)\nDevice Architecture: HAILO8\nProduct Name: <N/A>\n")
    assert d["architecture"] == "hailo8" and d["product_name"] is None
    with pytest.raises(ValueError):
        parse_identify("[HailoRT] [error] CHECK failed - Failed to open device file /dev/hailo0")


@pytest.mark.parametrize("text,gen", [("2.5 GT/s PCIe", 1), ("5.0 GT/s PCIe", 2), ("8.0 GT/s PCIe", 3),
                                      ("16.0 GT/s PCIe", 4), ("Unknown", None)])
def test_parse_link_speed(text, gen):
    assert parse_link_speed(text)["gen"] == gen


def test_rknn_version_lines():
    log = (FIX / "runtime_log.txt").read_text()
    assert parse_librknnrt_version(log) == "2.3.2"
    assert parse_rknpu_driver_version(log) == "0.9.8"
    assert parse_rknpu_driver_version("RKNPU driver: v0.9.8") == "0.9.8"
    assert parse_rknpu_driver_version("[drm] Initialized rknpu 0.9.5 20231018 for fdab0000.npu on minor 1") == "0.9.5"
    assert parse_rknpu_driver_version("nothing here") is None
    assert parse_librknnrt_version("nothing") is None


def test_small_parsers():
    assert parse_os_release((FIX / "pi5_ok/etc/os-release").read_text())["name"] == "Debian GNU/Linux 12 (bookworm)"
    assert first_version("HailoRT-CLI version 4.23.0") == "4.23.0"
    assert version_tuple("v0.9.8") == (0, 9, 8) and version_tuple(None) is None


# -- collectors ---------------------------------------------------------------------------------
def test_collect_pi5_hailo(tmp_path):
    write_models(tmp_path, [{"path": "hailo8l/w/encoder.hef", "sha256": "ab", "target": "hailo8l", "format": "hef"}])
    s = collect_stack(BoardConfig("pi5-hailo8l", "hailo8l", False, tmp_path), roots("pi5_ok"))
    h = s["hailo"]
    assert h["library"]["version"] == "4.23.0" and h["driver"]["version"] == "4.23.0"
    assert h["firmware"]["version"] == "4.23.0" and h["device"]["architecture"] == "hailo8l"
    assert h["pcie"] == {"address": "0000:01:00.0", "current_speed": "8.0 GT/s PCIe", "current_gen": 3,
                         "max_speed": "8.0 GT/s PCIe", "max_gen": 3, "width": 1}
    assert s["board_model"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert s["kernel"]["release"] == "6.6.51+rpt-rpi-2712" and s["python"]["version"] == "3.11.2"
    assert s["models"]["whisper-tiny.en"]["files"]["encoder.hef"]["hef_arch"] == "hailo8l"
    assert "rknn" not in s
    json.dumps(s)  # wire-safe


def test_collect_hailo_missing_stack_records_reasons(tmp_path):
    s = collect_stack(BoardConfig("pi5-hailo8l", "hailo8l", False, tmp_path), roots("rk3588_ok"))
    h = s["hailo"]
    assert h["library"] is None and h["driver"] is None and h["firmware"] is None and h["pcie"] is None
    assert {"hailo.library", "hailo.driver", "hailo.identify", "hailo.pcie"} <= set(s["errors"])


def test_collect_rk3588(tmp_path):
    write_models(tmp_path, [{"path": "rk3588/w/encoder.rknn", "sha256": "cd", "target": "rk3588", "format": "rknn",
                             "exporter": {"rknn-toolkit2": "2.3.2"}}])
    cfg = BoardConfig("rk3588", "rk3588", False, tmp_path)
    s = collect_stack(cfg, roots("rk3588_ok", dist_version={"rknn-toolkit-lite2": "2.3.2"}.get))
    assert s["rknn"]["runtime"]["version"] == "2.3.2"
    assert s["rknn"]["driver"] == {"version": "0.9.8", "source": str(FIX / "rk3588_ok/sys/kernel/debug/rknpu/version")}
    assert s["rknn"]["toolkit_lite2"] == {"version": "2.3.2"}
    assert s["models"]["whisper-tiny.en"]["files"]["encoder.rknn"]["toolkit"] == "2.3.2"
    old = collect_stack(cfg, roots("rk3588_old"))
    assert old["rknn"]["runtime"]["version"] == "1.5.2"
    assert old["rknn"]["driver"] == {"version": "0.9.5", "source": "dmesg"}


def test_librknnrt_string_across_chunk_boundary(tmp_path):
    from device_agent.stack.collect import librknnrt_version

    p = tmp_path / "librknnrt.so"
    p.write_bytes(b"\0" * 60 + b"librknnrt version: 2.0.0b0 (x)" + b"\0" * 10)
    assert librknnrt_version(p, chunk=64) == "2.0.0"


def test_emulated_board_npu_not_applicable(tmp_path):
    for acc, key in (("hailo8l", "hailo"), ("rk3588", "rknn")):
        s = collect_stack(BoardConfig("x", acc, True, tmp_path), roots("pi5_mismatch"))
        assert s[key]["applicable"] is False and "onnx backend" in s[key]["reason"]
        assert s["errors"] == {}


def test_agent_info_carries_stack(tmp_path):
    from device_agent.agent import Agent

    a = Agent(BoardConfig("pi5-hailo8l", "hailo8l", True, tmp_path), backends={}, sensors=[],
              stack_roots=roots("pi5_ok"))
    info = a.info()
    assert info["stack"]["hailo"]["applicable"] is False
    assert info["stack"]["models"] == {}
    write_models(tmp_path, [{"path": "cpu/w/encoder.onnx", "sha256": "ef", "target": "cpu", "format": "onnx",
                             "_present": False}])
    assert a.info()["stack"]["models"]["whisper-tiny.en"]["files"]["encoder.onnx"]["present"] is False
