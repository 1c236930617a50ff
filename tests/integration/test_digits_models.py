"""The shipped spoken-digits models (real speech, FSDD) through the user's int8 path: ``edgeseq quantize``
calibrated on the model's own training split, ``edgeseq export`` of the integer program for the
Cortex-M4 firmware, and ``edgeseq validate --data digits`` of the artifact against the integer-exact
reference on test clips, for the LMU and the spiking LMUFormer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..conftest import need_tool

pytestmark = pytest.mark.toolchain


def _edgeseq(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "edgeseq", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", ["digits_lmu", "digits_lmuformer"])
def test_digits_model_int8_export_and_validate_on_cortex_m4(name, tmp_path):
    need_tool("arm-none-eabi-gcc")
    need_tool("qemu-system-arm")
    q = tmp_path / "q.esq"
    r = _edgeseq(
        "quantize",
        name,
        "--data",
        "digits",
        "--calib",
        "64",
        "--val",
        "128",
        "--allow-miss",
        "--quiet",
        "--out",
        str(q),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    art = tmp_path / "m4"
    r = _edgeseq("export", str(q), "--target", "cortex-m4", "--out", str(art))
    assert r.returncode == 0, r.stderr[-3000:]
    r = _edgeseq("validate", str(art), "--data", "digits", "--samples", "24", "--out", str(tmp_path / "val"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    v = json.loads((tmp_path / "val" / "validation.json").read_text())
    assert v["passed"] is True
    text = json.dumps(v)
    assert "digits" in text
