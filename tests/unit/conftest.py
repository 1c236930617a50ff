"""Fixtures shared by the bad-input corpus and the fuzzers: real edgeseq files built once per test
session (one build shared by the xdist workers, under a file lock)."""

from __future__ import annotations

import fcntl
import os

import pytest


@pytest.fixture(scope="session")
def bad_fixtures(tmp_path_factory):
    from tests.conftest import need_tool
    from tests.unit import bad_inputs

    need_tool("gcc")
    base = tmp_path_factory.getbasetemp()
    # xdist workers share their session's directory (the parent of their own); a plain run uses its own
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "edgeseq-bad-input-fixtures"
    shared.mkdir(parents=True, exist_ok=True)
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared / "files" / ".done"
        if not done.exists():
            import shutil

            shutil.rmtree(shared / "files", ignore_errors=True)
            bad_inputs.build(shared / "files")
            done.write_text("ok\n")
    root = shared / "files"
    return bad_inputs.Fixtures(root, root / "g.esq", root / "g.q.esq", root / "other.q.esq", root / "m.ckpt",
                               root / "onnx", root / "bundle", root / "data.npz")
