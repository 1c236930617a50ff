"""The flavoured integer kernels (DSP, MVE, NEON) and the vector elementwise loops at their corners,
built with each compiler (GCC and Clang) for Cortex-M4, Cortex-M55 and aarch64, bit for bit against
the integer-exact interpreter."""

from __future__ import annotations

import pytest

from edgeseq.export.c.intgen import generate_int

from ..conftest import need_tool
from ..unit.c_int_cases import check_bit_exact, kernel_programs

pytestmark = pytest.mark.toolchain

TOOLS = {
    "arm": ("aarch64-linux-gnu-gcc", "qemu-aarch64"),
    "cortex-m4": ("arm-none-eabi-gcc", "qemu-system-arm"),
    "cortex-m55": ("arm-none-eabi-gcc", "qemu-system-arm"),
}


def _compilers():
    from edgeseq.targets.compilers import find_clang

    return (
        ["gcc", "clang"]
        if find_clang()
        else [
            "gcc",
            pytest.param(
                "clang", marks=pytest.mark.skip(reason="Clang is not installed: sudo apt-get install -y clang lld llvm")
            ),
        ]
    )


@pytest.mark.parametrize("compiler", _compilers())
@pytest.mark.parametrize("target", sorted(TOOLS))
def test_kernel_corners_are_bit_exact(target, compiler, tmp_path):
    from edgeseq.export.c.multi import build_multi
    from edgeseq.targets import get_target

    for t in TOOLS[target]:
        need_tool(t)
    progs = kernel_programs()
    tgt = get_target(target, compiler=compiler)
    srcs = [generate_int(p, len(p.inputs[0].channels), prefix=f"k{i}", target=target) for i, p in enumerate(progs)]
    mb = build_multi(srcs, tgt, tmp_path, io_floats=4096)
    assert "warning" not in mb.target.build_log, mb.target.build_log
    assert mb.target.resolved_compiler().startswith(compiler)
    for k, p in enumerate(progs):
        check_bit_exact(lambda x, k=k, **kw: mb.run(k, x, **kw), mb.infos[k], p, seed=7 + k, float_api=k == 0, steps=12)
