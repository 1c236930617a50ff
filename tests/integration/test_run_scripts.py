"""Generated run scripts quote every path: an artifact, input and output whose paths hold spaces and
commas still run (Cortex-M: QEMU semihosting arguments cannot carry a comma, so run.sh passes only
names inside a temporary directory), and the output equals the artifact's golden reference."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import need_tool

pytestmark = pytest.mark.toolchain

AWKWARD = "dir with space,comma;semi'quote"


def _check_output(art: Path, out: Path) -> None:
    from edgeseq.export.c.artifact import split_outputs
    from edgeseq.export.manifest import read_manifest
    from edgeseq.targets.driver import read_output

    m = read_manifest(art)
    got, want = read_output(out), read_output(art / m["golden"]["expected"])
    for g, w in zip(split_outputs(m, got["step"], got["pooled"]), split_outputs(m, want["step"], want["pooled"])):
        np.testing.assert_allclose(g, w, atol=1e-4)


def test_cortex_m_run_sh_with_awkward_paths(bad_fixtures, tmp_path):
    need_tool("arm-none-eabi-gcc")
    need_tool("qemu-system-arm")
    import edgeseq

    base = tmp_path / AWKWARD
    base.mkdir()
    art = base / "m4, art"
    edgeseq.export(edgeseq.load(bad_fixtures.esq), target="cortex-m4", out=art)
    script = (art / "run.sh").read_text()
    assert "arg=in.bin,arg=out.bin" in script
    shutil.copy(art / "golden" / "input.bin", base / "in put,1.bin")
    out = base / "out put,1.bin"
    r = subprocess.run(
        [str(art / "run.sh"), "step", str(base / "in put,1.bin"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    _check_output(art, out)
    r = subprocess.run(["./run.sh"], capture_output=True, text=True, timeout=300, cwd=art)  # the defaults
    assert r.returncode == 0, r.stderr
    _check_output(art, art / "output.bin")
    r = subprocess.run([str(art / "run.sh"), "step;rm -rf /"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "mode must be" in r.stderr
    assert not [
        p
        for p in os.listdir(os.environ.get("TMPDIR", "/tmp"))
        if p.startswith("tmp") and (Path(os.environ.get("TMPDIR", "/tmp")) / p / "firmware.elf").exists()
    ], "temporary dir left"


def test_x86_bundle_run_sh_with_awkward_paths(bad_fixtures, tmp_path):
    need_tool("gcc")
    base = tmp_path / AWKWARD
    base.mkdir()
    art = base / "x86, bundle"
    shutil.copytree(bad_fixtures.bundle, art)
    out = base / "o ut,2.bin"
    r = subprocess.run(
        [str(art / "run.sh"), "step", str(art / "c" / "golden" / "input.bin"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    _check_output(art / "c", out)
