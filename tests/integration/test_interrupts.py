"""Interrupted work leaves nothing that matters: ``edgeseq export`` and ``edgeseq demo`` are killed
(SIGKILL, and SIGTERM) at several points while they write. The previous artifact at --out stays
intact and loadable after every kill, the killed runs' staging directories are removed by the next
run to the same --out, and that run succeeds without --force when the killed one never finished.
(Concurrent runs and symlinked outputs: tests/unit/test_output_dirs.py.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeseq.util.fs import _stage_prefix
from tests.conftest import need_tool

pytestmark = pytest.mark.toolchain

ENV = dict(os.environ, OMP_NUM_THREADS="1", EDGESEQ_DEBUG="0")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeseq", *map(str, args)]


def _stages(out: Path) -> list[Path]:
    prefix = _stage_prefix(out)
    return sorted(p for p in out.parent.iterdir() if p.name.startswith(prefix))


def _kill_when(
    argv: list[str], out: Path, ready, sig=signal.SIGKILL, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Start ``argv``, wait until ``ready(staging dirs)`` holds, send ``sig``, wait for the exit."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    t0 = time.monotonic()
    try:
        while True:
            stages = [s for s in _stages(out) if s.is_dir()]
            if stages and ready(stages[0]):
                break
            if p.poll() is not None:
                out_, err = p.communicate()
                pytest.fail(f"{argv} finished before the kill point (rc {p.returncode}): {err[-2000:]}")
            if time.monotonic() - t0 > timeout:
                pytest.fail(f"kill point never reached for {argv}")
            time.sleep(0.02)
        p.send_signal(sig)
        out_, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return subprocess.CompletedProcess(argv, p.returncode, out_, err)


def _fingerprint(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _loadable(d: Path) -> None:
    from edgeseq.export import load_artifact

    art = load_artifact(d)
    assert art.manifest["format"]


EXPORT_POINTS = {
    "staging-created": lambda st: True,
    "tvm-part-written": lambda st: (st / "tvm" / "manifest.json").exists(),
    "c-part-building": lambda st: any(st.glob(".c.*")) or (st / "c").exists(),
}


def test_sigkill_during_export(bad_fixtures, tmp_path):
    need_tool("gcc")
    out = tmp_path / "art"
    shutil.copytree(bad_fixtures.bundle, out)  # the previous artifact
    before = _fingerprint(out)
    inode = (out / "manifest.json").stat().st_ino
    argv = _cli("export", bad_fixtures.esq, "--target", "x86", "--out", out, "--force")
    for point, ready in EXPORT_POINTS.items():
        r = _kill_when(argv, out, ready)
        assert r.returncode == -signal.SIGKILL, point
        assert _fingerprint(out) == before, f"killed at {point}: the previous artifact changed"
        _loadable(out)
        assert _stages(out), f"killed at {point}: expected the killed run's staging directory"
    r = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    assert not _stages(out), "the next run removes what killed runs left"
    # the export is deterministic (same bytes), so the replacement shows in the new files themselves
    assert (out / "manifest.json").stat().st_ino != inode
    _loadable(out)


def test_sigkill_then_rerun_without_force(bad_fixtures, tmp_path):
    # an x86 export builds inside its staging directory (an ONNX export only writes there, too fast
    # to catch reliably on an idle machine)
    need_tool("gcc")
    out = tmp_path / "new"
    argv = _cli("export", bad_fixtures.esq, "--target", "x86", "--out", out)
    r = _kill_when(argv, out, lambda st: True)
    assert r.returncode == -signal.SIGKILL
    assert not out.exists() and _stages(out)
    r = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr  # the unfinished run does not block: no --force needed
    assert not _stages(out)
    _loadable(out)


def test_sigterm_removes_staging(bad_fixtures, tmp_path):
    need_tool("gcc")
    out = tmp_path / "art"
    shutil.copytree(bad_fixtures.bundle, out)
    before = _fingerprint(out)
    r = _kill_when(
        _cli("export", bad_fixtures.esq, "--target", "x86", "--out", out, "--force"),
        out,
        lambda st: True,
        sig=signal.SIGTERM,
    )
    assert r.returncode == 128 + signal.SIGTERM, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("edgeseq:")]
    assert errors == ["edgeseq: terminated by SIGTERM; unfinished output removed"], r.stderr
    assert "Traceback" not in r.stderr
    assert not _stages(out), "SIGTERM removes the staging directory"
    assert _fingerprint(out) == before


def test_sigkill_during_demo(bad_fixtures, tmp_path):
    need_tool("gcc")
    out = tmp_path / "demo"
    shutil.copytree(bad_fixtures.bundle, out / "artifact")  # a previous output of this demo
    (out / "demo.json").write_text(json.dumps({"demo": "har", "previous": True}))
    from edgeseq.demo.har import OWNER
    from edgeseq.util.fs import OWNER_FILE

    (out / OWNER_FILE).write_text(json.dumps({"owner": OWNER}))
    before = _fingerprint(out)
    argv = _cli("demo", "har", "--target", "x86", "--quant", "float", "--limit", "2", "--no-live", "--out", out)
    for point, ready in {
        "staging-created": lambda st: True,
        "artifact-exported": lambda st: (st / "artifact" / "manifest.json").exists(),
    }.items():
        r = _kill_when(argv, out, ready)
        assert r.returncode == -signal.SIGKILL, point
        assert _fingerprint(out) == before, f"killed at {point}: the previous demo output changed"
        _loadable(out / "artifact")
    r = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=900)  # no --force: its own output
    assert r.returncode == 0, r.stderr
    assert not _stages(out)
    assert json.loads((out / "demo.json").read_text())["demo"] == "har"
    assert "previous" not in json.loads((out / "demo.json").read_text())
    _loadable(out / "artifact")
