"""The scripts in examples/ run as a user would run them and print what they promise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import need_tool

ROOT = Path(__file__).resolve().parents[2]


def _run(script, *args, cwd):
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_quickstart(tmp_path):
    out = _run("quickstart.py", cwd=tmp_path)
    m = re.search(r"reference vs torch:\s+max \|diff\| = ([0-9.e+-]+)", out)
    assert m and float(m.group(1)) <= 1e-5
    assert "bit-identical = True" in out


@pytest.mark.toolchain
def test_har_to_arm(tmp_path):
    need_tool("aarch64-linux-gnu-gcc")
    need_tool("qemu-aarch64")
    out = _run("har_to_arm.py", "--windows", "64", "--out", str(tmp_path / "art"), cwd=tmp_path)
    m = re.search(r"max \|diff\| ([0-9.e+-]+), decisions equal ([0-9.]+)%", out)
    assert m and float(m.group(1)) < 1e-5 and float(m.group(2)) == 100.0
    acc = re.search(r"float ([0-9.]+)%, on device \(int8\) ([0-9.]+)%", out)
    assert acc and float(acc.group(1)) > 50 and abs(float(acc.group(1)) - float(acc.group(2))) <= 5
    assert (tmp_path / "art" / "manifest.json").is_file()


def test_snntorch_to_nir(tmp_path):
    out = _run("snntorch_to_nir.py", "--out", str(tmp_path / "snn.nir"), cwd=tmp_path)
    m = re.search(r"spikes: snntorch (\d+), edgeseq (\d+), identical = (\w+)", out)
    assert m and int(m.group(1)) > 0 and m.group(3) == "True"
