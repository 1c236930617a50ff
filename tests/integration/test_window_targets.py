"""Window graphs (bidirectional RNNs, 'same' / symmetric-padded convolutions) on the C targets: the
float graph and the integer program of each (the synthetic window graph and the corpus' four window
models) in one executable / firmware per target -- x86, aarch64 under qemu-aarch64, Cortex-M4 under
qemu-system-arm -- run whole windows at two lengths x two batch sizes: float within 1e-5 of the
reference interpreter (1e-4 on the microcontroller), integer bit for bit like the integer-exact
interpreter (float input through the model's quantizer, full-range integer input, the float API
exactly dequantized); a window longer than the build's window is refused by the firmware."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseq.errors import EdgeseqError
from edgeseq.export.c.artifact import _split_input, dequantize, int_reference, split_outputs
from edgeseq.export.c.codegen import generate
from edgeseq.export.c.intgen import generate_int
from edgeseq.ir.interpret import run
from edgeseq.quant import intexact

from ..conftest import need_tool
from ..unit.window_cases import BATCHES, CORPUS_WINDOW, LENGTHS, window_model

pytestmark = pytest.mark.toolchain

MODELS = ("synthetic",) + CORPUS_WINDOW
TOOLS = {
    "x86": ("gcc",),
    "arm": ("aarch64-linux-gnu-gcc", "qemu-aarch64"),
    "cortex-m4": ("arm-none-eabi-gcc", "qemu-system-arm"),
}
WINDOW = 16


@pytest.fixture(scope="module")
def window_bins(tmp_path_factory):
    from edgeseq.export.c.multi import build_multi

    cache = {}

    def get(target):
        if target not in cache:
            for t in TOOLS[target]:
                need_tool(t)
            qgs = [window_model(m)[1] for m in MODELS]
            srcs = [
                generate_int(
                    q.program,
                    q.graph.in_features,
                    prefix=f"w{k}",
                    target=target,
                    order=list(q.graph.outputs),
                    window_steps=WINDOW,
                )
                for k, q in enumerate(qgs)
            ]
            srcs += [
                generate(window_model(m)[0], prefix=f"f{k}", target=target, window_steps=WINDOW)
                for k, m in enumerate(MODELS)
            ]
            mb = build_multi(srcs, target, tmp_path_factory.mktemp(f"window-{target}"))
            # (the float C prelude's unused static helpers warn under clang, as for streaming float models)
            warn = [ln for ln in mb.target.build_log.splitlines() if "warning:" in ln and "-Wunused-function" not in ln]
            assert not warn, mb.target.build_log
            cache[target] = (mb, qgs)
        return cache[target]

    return get


@pytest.mark.parametrize("target", tuple(TOOLS))
@pytest.mark.parametrize("name", MODELS)
def test_window_program_is_bit_exact_on_target(window_bins, target, name):
    mb, qgs = window_bins(target)
    k = MODELS.index(name)
    q, info, inputs = qgs[k], mb.infos[k], window_model(name)[2]
    prog = q.program
    assert info["window"]["steps"] == WINDOW and info["state_floats"] == 0
    rng = np.random.default_rng(k)
    for batch in BATCHES:
        for steps in LENGTHS:
            x = inputs(batch, steps, 100 + steps)
            xq = np.concatenate([s.quantize(x) for s in prog.inputs], axis=2)
            step, pooled, _, _ = int_reference(prog, info, xq)
            res = mb.run(k, x, mode="step", qout=True)  # a window model runs whole windows in every mode
            assert np.array_equal(res.step, step) and np.array_equal(res.pooled, pooled), (batch, steps)
            fstep, fpooled = dequantize(info, step, pooled)
            resf = mb.run(k, x, mode="run")
            assert np.array_equal(resf.step.view(np.int32), fstep.view(np.int32))
            assert np.array_equal(resf.pooled.view(np.int32), fpooled.view(np.int32))
    xr = np.concatenate(
        [rng.integers(-(1 << (s.bits - 1)), 1 << (s.bits - 1), size=(2, 11, len(s.channels))) for s in prog.inputs],
        axis=2,
    )
    step, pooled, _, _ = int_reference(prog, info, xr)
    res = mb.run(k, xr, mode="run", qin=True, qout=True)
    assert np.array_equal(res.step, step) and np.array_equal(res.pooled, pooled)
    want, _ = intexact.run(prog, _split_input(prog, xr))
    assert all(np.array_equal(a, b) for a, b in zip(split_outputs(info, step, pooled), want))
    if name == "synthetic":
        with pytest.raises(EdgeseqError, match="longer than the model's"):
            mb.run(k, inputs(1, WINDOW + 1, 0), mode="run")


@pytest.mark.parametrize("target", tuple(TOOLS))
@pytest.mark.parametrize("name", MODELS)
def test_float_window_model_matches_the_reference(window_bins, target, name):
    mb, _ = window_bins(target)
    k = len(MODELS) + MODELS.index(name)
    g, _, inputs = window_model(name)
    info = mb.infos[k]
    assert info["window"]["steps"] == WINDOW and info["state_floats"] == 0
    tol = 1e-4 if target.startswith("cortex-m") else 1e-5
    for batch in BATCHES:
        for steps in LENGTHS:
            x = inputs(batch, steps, 200 + steps)
            want, _ = run(g, x)
            for mode in ("step", "run"):  # a window model runs whole windows in every mode
                res = mb.run(k, x, mode=mode)
                for a, w in zip(split_outputs(info, res.step, res.pooled), want):
                    assert a.shape == w.shape and np.abs(a - w).max() <= tol * max(1.0, float(np.abs(w).max()))


def test_export_facade_and_validate_on_whole_windows(tmp_path):
    """edgeseq.export: the float x86 bundle (whole-window TVM "main" and C model), the quantized
    Cortex-M4 firmware and aarch64 bundle (integer C and TVM) verified bit for bit at export; all run
    and validate on whole windows."""
    import edgeseq
    from edgeseq.validate import validate

    for t in ("gcc", "arm-none-eabi-gcc", "qemu-system-arm"):
        need_tool(t)
    g, q, inputs = window_model("conv_same_bn_gru")
    fl = edgeseq.export(g, target="x86", out=tmp_path / "f", golden_input=inputs(2, 9, 0))
    assert set(fl.manifest["parts"]) == {"c", "tvm"}
    it = edgeseq.export(g, target="cortex-m4", quant=q, out=tmp_path / "q", golden_input=inputs(2, 9, 0))
    assert it.manifest["window"]["steps"] == 128 and it.manifest["golden"]["verification"]["bit_exact"]
    need_tool("aarch64-linux-gnu-gcc")
    need_tool("qemu-aarch64")
    ia = edgeseq.export(g, target="arm", quant=q, out=tmp_path / "a", golden_input=inputs(2, 9, 0))
    assert set(ia.manifest["parts"]) == {"c", "tvm"}
    for batch, steps in ((1, 5), (3, 13)):
        x = inputs(batch, steps, steps)
        np.testing.assert_allclose(fl.run(x), run(g, x)[0][0], atol=1e-5)
        np.testing.assert_allclose(fl.run(x, runtime="c"), run(g, x)[0][0], atol=1e-5)
        want = q.run(x)[0][0].astype(np.float32)
        for got in (it.run(x), ia.run(x), ia.run(x, runtime="tvm")):
            np.testing.assert_array_equal(got, want)
    np.savez(tmp_path / "d.npz", x=inputs(4, 12, 1), y=np.arange(4) % 4)
    for art in (fl, it, ia):
        rep = validate(art.path, data=tmp_path / "d.npz", reference="cpu", measure=False)
        assert rep.passed, rep.failure_message()
