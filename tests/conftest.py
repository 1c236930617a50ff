"""Shared test fixtures.

Toolchain-dependent tests call ``need_tool("qemu-aarch64")`` (or use the ``need_tool`` fixture):
on a user's machine a missing tool skips the test with its install command as the reason; under
CI=true a missing tool fails the test, so CI can never pass by skipping.
"""

from __future__ import annotations

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
