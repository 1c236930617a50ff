"""Shared test fixtures.

Toolchain-dependent tests call ``need_tool("qemu-aarch64")`` (or use the ``need_tool`` fixture):
on a user's machine a missing tool skips the test with its install command as the reason; under
CI=true a missing tool fails the test, so CI can never pass by skipping.
"""

from __future__ import annotations

import fcntl
import os

import numpy as np
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_tool(name: str) -> str:
    from edgeseq.errors import ToolchainMissingError
    from edgeseq.toolchains import require

    try:
        return require(name)
    except ToolchainMissingError as e:
        if IN_CI:
            pytest.fail(f"CI=true but {e}")
        pytest.skip(str(e))


@pytest.fixture(name="need_tool")
def _need_tool_fixture():
    return need_tool


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# Real edgeseq files to damage (IR graph, plan, checkpoint, ONNX artifact, x86 bundle), built once per
# test session: the xdist workers share one build under a file lock. Used by the bad-input corpus,
# the fuzzers and the interrupt tests.
@pytest.fixture(scope="session")
def bad_fixtures(tmp_path_factory):
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
    return bad_inputs.Fixtures(
        root,
        root / "g.esq",
        root / "g.q.esq",
        root / "other.q.esq",
        root / "m.ckpt",
        root / "onnx",
        root / "bundle",
        root / "data.npz",
    )
