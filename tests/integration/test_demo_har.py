"""``edgeseq demo har`` end to end on a short stream: the default HAR model, the outlier-aware int8
plan, the aarch64 artifact under qemu-aarch64 (and the Cortex-M4 firmware under qemu-system-arm, and
the float model natively on x86), held-out subjects' windows streamed sample by sample through the
step API, an alternative model measured on the same windows; checks demo.json (device equal to the
integer-exact reference, accuracy, cost, sizes, the side-by-side rows) and the self-contained
report.html."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgeseq.demo.har import DEFAULT_MODEL

from ..conftest import need_tool

pytestmark = pytest.mark.toolchain


def _demo(tmp_path, *args):
    out = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-m", "edgeseq", "demo", "har", "--out", str(out), "--no-live", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode in (0, 1) and (out / "demo.json").is_file(), r.stderr[-3000:]
    res = json.loads((out / "demo.json").read_text())
    # exit status 1, with its reason, exactly when the device lost more than half a point against float (one
    # window of a short stream can be several points)
    lost = res["drop_points"] is not None and res["drop_points"] > 0.5 and res["quantization"] != "naive"
    assert r.returncode == int(lost), r.stderr[-3000:]
    assert ("points below float" in r.stderr) == lost
    return out, res, r.stderr


def _check_common(r, out, n):
    assert r["demo"] == "har" and r["model"] == DEFAULT_MODEL and r["windows"] == n
    assert len(r["labels"]) == 6 and sum(sum(row) for row in r["confusion_device"]) == n
    assert sum(c["windows"] for c in r["per_class"]) == n
    acc = r["accuracy"]
    assert 0.0 <= acc["device"] <= 1.0 and acc["float"] is not None
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<script src" not in html
    assert "confusion" in html.lower() and r["model"] in html


def test_demo_har_arm_int8(tmp_path):
    need_tool("aarch64-linux-gnu-gcc")
    need_tool("qemu-aarch64")
    need_tool("arm-none-eabi-gcc")
    need_tool("qemu-system-arm")
    out, r, log = _demo(tmp_path, "--target", "arm", "--limit", "12", "--compare", "har_lmu," + DEFAULT_MODEL)
    _check_common(r, out, 12)
    assert r["target"] == "arm" and r["quantization"] == "edgeseq" and r["runner"] == "qemu-aarch64"
    dv = r["device_vs_reference"]
    # the aarch64 integer program is bit-exact against the integer-exact interpreter (the logits differ
    # only by their float32 dequantisation on the device)
    assert dv["reference"] == "integer-exact interpreter" and dv["decision_agreement"] == 1.0
    assert dv["max_abs_logit_difference"] < 1e-5
    assert r["accuracy"]["device"] == r["accuracy"]["int8"]
    ins = r["cost"]["instructions"]
    assert ins["per_step"] > 0 and ins["per_inference"] >= 128 * ins["per_step"] * 0.9
    mcu = r["mcu_sizes"]
    assert mcu["target"] == "cortex-m4" and 0 < mcu["flash_bytes"] <= 64 * 1024 and 0 < mcu["ram_bytes"] <= 32 * 1024
    assert r["sizes"]["device_binary_bytes"] > 0 and r["sizes"]["weights_bytes"] < r["sizes"]["float32_weight_bytes"]
    assert "running on-device accuracy" in log and "report" in log
    # side by side: the default first, then each alternative once, every one measured on its own builds
    rows = r["models"]
    assert [m["model"] for m in rows] == [DEFAULT_MODEL] + (["har_lmu"] if DEFAULT_MODEL != "har_lmu" else [])
    assert rows[0]["device_accuracy"] == r["accuracy"]["device"]
    assert rows[0]["cortex_m4_instructions_per_inference"] == mcu["instructions_per_inference"] > 0
    for m in rows:
        assert m["decision_agreement"] == 1.0 and m["device_accuracy"] == m["int8_accuracy"]
        assert (
            0 < m["cortex_m4_flash_bytes"]
            and 0 < m["cortex_m4_ram_bytes"]
            and m["target_instructions_per_inference"] > 0
        )
    if len(rows) > 1:
        assert "Models side by side" in (out / "report.html").read_text() and "side by side" in log


def test_demo_har_cortex_m4_and_x86_float(tmp_path):
    need_tool("arm-none-eabi-gcc")
    need_tool("qemu-system-arm")
    out, r, _ = _demo(tmp_path, "--target", "cortex-m4", "--limit", "6", "--compare", "none")
    _check_common(r, out, 6)
    assert r["target"] == "cortex-m4" and r["device_vs_reference"]["max_abs_logit_difference"] < 1e-5
    assert r["mcu_sizes"]["flash_bytes"] > 0 and len(r["models"]) == 1
    assert r["mcu_sizes"]["instructions_per_inference"] == r["cost"]["instructions"]["per_inference"]

    out2, r2, _ = _demo(tmp_path / "x86", "--target", "x86", "--quant", "float", "--limit", "8", "--compare", "none")
    _check_common(r2, out2, 8)
    assert r2["accuracy"]["int8"] is None and r2["device_vs_reference"]["reference"] == "float64 interpreter"
    assert r2["device_vs_reference"]["decision_agreement"] == 1.0
    assert r2["device_vs_reference"]["max_abs_logit_difference"] < 1e-4
    assert r2["cost"]["latency"]["per_step_s"] > 0
