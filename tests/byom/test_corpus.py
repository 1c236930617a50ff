"""The bring-your-own-model corpus (tests/byom/corpus.py): models written the way people write them,
with random weights.

- every model captures (capture itself checks it against torch), or raises the one-line error its case
  names;
- the reference interpreter and the exported ONNX model (onnxruntime) agree with the torch forward at
  two lengths and a batch size capture did not see, in the model's own layout (within 1e-5 relative;
  spiking outputs: identical spikes), every model expected to capture (49 of 51);
- window graphs (bidirectional RNNs, 'same'-padded convolutions, self-attention) refuse streaming exports and step-by-step
  targets with one line;
- five models quantized to int8 run on aarch64 (qemu-aarch64) and Cortex-M4 (qemu-system-arm) bit for
  bit against the integer-exact interpreter (one binary per target holds all five), with two loop-captured
  models (a public LMU cell, the snntorch tutorial network);
- every loop-captured model (a generic Scan whose step program is the loop body) quantizes, its
  quantization points placed automatically, with the integer outputs close to float; five of them (cell
  loops with explicit parameters, an nn.GRUCell loop, a public PyTorch LMU cell, both snntorch tutorial
  variants) export to int8 ONNX and integer C (x86) bit for bit against the integer-exact interpreter at
  two lengths and two batch sizes; a GRUCell loop quantizes exactly as well as nn.GRU with its weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgeseq
from edgeseq.errors import EdgeseqError

from .corpus import CASES, F_IN, example

LENGTHS = (10, 23)
TOL = 1e-5
NAMES = list(CASES)
INT8 = (
    "lstm_time_major",
    "causal_conv_gru",
    "attention_pool_gru",
    "snn_synaptic_output",
    "tcn_causal_dilated",
    "lmu_public_cell",
    "snn_tutorial_temporal",
)
LOOP_INT8 = ("elman_params", "gru_cell_loop", "lmu_public_cell", "snn_tutorial_temporal", "snn_tutorial_static")


def _model(name):
    torch.manual_seed(0)
    return CASES[name].build().eval()


class _Captured(dict):
    """name -> (model, graph or the EdgeseqError capture raised), each captured once, on first use (so
    a test worker captures only the models its tests need)."""

    def __missing__(self, name):
        m = _model(name)
        try:
            self[name] = (m, edgeseq.capture(m, example(CASES[name])))
        except EdgeseqError as e:
            self[name] = (m, e)
        return self[name]


@pytest.fixture(scope="module")
def captured():
    torch.set_num_threads(1)
    return _Captured()


@pytest.fixture(scope="module")
def exported(captured, tmp_path_factory):
    """name -> the ONNX artifact of each captured graph (exported lazily, once)."""
    root = tmp_path_factory.mktemp("byom-onnx")
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = edgeseq.export(captured[name][1], target="onnx", out=root / name)
        return cache[name]

    return get


def _torch(model, x) -> tuple:
    """The torch outputs for ``x`` in the model's layout (an snntorch step network runs step by step)."""
    from edgeseq.frontends import is_step_net, torch_forward

    if is_step_net(model):
        return torch_forward(model, x)
    with torch.no_grad():
        y = model(x)
    return tuple(o.double().numpy() for o in (y if isinstance(y, tuple) else (y,)))


def _agree(got, want, graph) -> bool:
    got = got if isinstance(got, tuple) else (got,)
    if len(got) != len(want):
        return False
    for g, w, t in zip(got, want, graph.output_types):
        g = np.asarray(g, np.float64)
        if g.shape != w.shape:
            return False
        if t.spikes:
            if not np.array_equal(g != 0, w != 0):
                return False
        elif np.max(np.abs(g - w)) > TOL * max(1.0, float(np.max(np.abs(w)))):
            return False
    return True


def _correct(name, captured, exported) -> dict:
    """Reference and ONNX against torch at each length: {'reference_T10': bool, ...}."""
    model, graph = captured[name]
    res = {}
    for steps in LENGTHS:
        x = example(CASES[name], batch=2, steps=steps, seed=steps)
        want = _torch(model, x)
        res[f"reference_T{steps}"] = _agree(edgeseq.reference(graph, x.numpy())[0], want, graph)
        res[f"onnx_T{steps}"] = _agree(exported(name).run(x.numpy()), want, graph)
    return res


@pytest.mark.parametrize("name", NAMES)
def test_capture_or_one_line_error(captured, name):
    c = CASES[name]
    _, g = captured[name]
    if c.expect == "capture":
        assert not isinstance(g, Exception), f"{name}: {g}"
        assert g.metadata["input_layout"] == ("static" if c.static else "TBF" if c.time_major else "BTF")
    else:
        assert isinstance(g, EdgeseqError), f"{name} captured, expected: {c.expect}"
        text = str(g)
        assert c.expect in text and "\n" not in text and g.hint and g.where, text


@pytest.mark.parametrize("name", [n for n in NAMES if CASES[n].expect == "capture"])
def test_reference_and_onnx_match_torch(captured, exported, name):
    if isinstance(captured[name][1], Exception):
        pytest.fail(f"{name} did not capture: {captured[name][1]}")
    res = _correct(name, captured, exported)
    assert all(res.values()), res


@pytest.mark.parametrize("name", ["bigru_last", "conv_same_bn_gru", "mha_classifier"])
def test_window_graph_refuses_streaming(captured, tmp_path, name):
    g = captured[name][1]
    assert g.is_window and "reads" in g.metadata["window"]
    with pytest.raises(EdgeseqError, match="needs a streaming graph, and this is a window graph") as ei:
        edgeseq.export(g, out=tmp_path / "s", target="onnx", streaming=True)
    assert "\n" not in str(ei.value)
    with pytest.raises(EdgeseqError, match="running in chunks"):
        from edgeseq.ir.interpret import run_chunked

        run_chunked(g, np.zeros((1, 8, g.in_features)), 4)


def test_layouts_round_trip_through_the_artifact(captured, exported):
    """Time-major and static models: Artifact.run and export's golden input take the model's own layout;
    an explicit layout overrides it; a shape that fits neither is a one-line error."""
    from edgeseq.errors import ShapeError

    for name in ("lstm_time_major", "snn_tutorial_temporal", "snn_tutorial_static"):
        model, g = captured[name]
        art = exported(name)
        x = example(CASES[name], batch=3, steps=7, seed=5)
        assert _agree(art.run(x.numpy()), _torch(model, x), g), name
        if g.metadata["input_layout"] == "TBF":
            btf = x.transpose(0, 1).numpy()
            y = art.run(btf, layout="BTF")
            want = _torch(model, x)
            y = y if isinstance(y, tuple) else (y,)
            assert y[0].shape == tuple(np.swapaxes(want[0], 0, 1).shape if want[0].ndim == 3 else want[0].shape)
        else:
            with pytest.raises(ShapeError, match="static"):
                art.run(np.zeros((2, 5, g.in_features), np.float32))


def test_export_golden_input_in_model_layout(captured, tmp_path):
    model, g = captured["lstm_time_major"]
    x = example(CASES["lstm_time_major"], batch=2, steps=9, seed=3)  # (T, B, F)
    art = edgeseq.export(model, target="onnx", out=tmp_path / "tm", example_input=x)
    assert np.load(tmp_path / "tm" / "golden" / "input.npy").shape == (2, 9, g.in_features)  # stored as (B, T, F)
    assert _agree(art.run(x.numpy()), _torch(model, x), g)


def test_validate_takes_the_model_layout(captured, exported, tmp_path):
    """edgeseq validate: an .npz in the model's own layout (time-major here) by default, --layout BTF for
    a sample-first one; a window graph's ONNX artifact validates on whole windows."""
    import subprocess
    import sys

    from edgeseq.validate import validate

    art = exported("lstm_time_major")
    x = example(CASES["lstm_time_major"], batch=6, steps=12, seed=2).numpy()  # (T, B, F)
    y = np.arange(6) % 4
    np.savez(tmp_path / "tm.npz", x=x, y=y)
    np.savez(tmp_path / "btf.npz", x=np.swapaxes(x, 0, 1), y=y)
    rep = validate(art.path, data=tmp_path / "tm.npz", reference="cpu", measure=False)
    assert rep.passed and rep.data["steps"] == 12 and rep.data["sequences"] == 6, rep.failure_message()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeseq",
            "validate",
            str(art.path),
            "--data",
            str(tmp_path / "btf.npz"),
            "--layout",
            "BTF",
            "--reference",
            "cpu",
            "--no-measure",
            "--quiet",
            "--out",
            str(tmp_path / "v"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert validate(exported("bigru_last").path, reference="cpu", measure=False).passed


# ---------------------------------------------------------------- int8 on the cross targets


@pytest.fixture(scope="module")
def int8_programs(captured):
    from edgeseq.quant import quantize

    out = []
    for k, name in enumerate(INT8):
        g = captured[name][1]
        rng = np.random.default_rng(k)
        scale = 2.0 if CASES[name].spiking else 1.0
        out.append(quantize(g, rng.normal(size=(32, 16, g.in_features)) * scale, "edgeseq", budget=None).program)
    return out


@pytest.mark.toolchain
@pytest.mark.parametrize("target", ("arm", "cortex-m4"))
def test_int8_bit_exact_on_target(int8_programs, target, tmp_path_factory):
    from edgeseq.export.c.intgen import generate_int
    from edgeseq.export.c.multi import build_multi

    from ..conftest import need_tool
    from ..unit.c_int_cases import check_bit_exact

    for tool in {
        "arm": ("aarch64-linux-gnu-gcc", "qemu-aarch64"),
        "cortex-m4": ("arm-none-eabi-gcc", "qemu-system-arm"),
    }[target]:
        need_tool(tool)
    srcs = [generate_int(p, F_IN, prefix=f"m{k}", target=target) for k, p in enumerate(int8_programs)]
    mb = build_multi(srcs, target, tmp_path_factory.mktemp(f"byom-int-{target}"))
    for k, prog in enumerate(int8_programs):
        check_bit_exact(lambda x, **kw: mb.run(k, x, **kw), mb.infos[k], prog, seed=k, steps=12)


# ---------------------------------------------------------------- int8 of loop-captured models


def _calibration(name, g, n=32, steps=16, seed=0):
    scale = 2.0 if CASES[name].spiking else 1.0
    return np.random.default_rng(seed).normal(size=(n, steps, g.in_features)) * scale


def _error(got, want, spikes: bool) -> float:
    """Spikes: the fraction that differ; else the rms error relative to the output's spread."""
    if spikes:
        return float(np.mean((got != 0) != (want != 0)))
    return float(np.sqrt(np.mean((got - want) ** 2)) / (np.std(want) + 1e-12))


def _loop_names():
    return [n for n in NAMES if CASES[n].expect == "capture"]


def test_every_loop_captured_model_quantizes(captured):
    """Every captured graph with a generic Scan (a loop body) quantizes; integer outputs stay close to float."""
    from edgeseq.quant import quantize

    loops = []
    for name in _loop_names():
        g = captured[name][1]
        if isinstance(g, Exception) or g.is_window or not any(n.op.kind == "Scan" for n in g.nodes):
            continue
        loops.append(name)
        q = quantize(g, _calibration(name, g, 16, 12), "edgeseq", budget=None)
        x = _calibration(name, g, 8, 20, seed=1)
        yf, yi = q.run(x, mode="float")[0], q.run(x)[0]
        for k, (a, b, t) in enumerate(zip(yi, yf, q.graph.output_types)):
            err = _error(a, b, t.spikes or CASES[name].spiking and k == 0)
            assert err < (0.05 if t.spikes else 0.3), (name, k, err)
    assert len(loops) >= 20, loops


@pytest.fixture(scope="module")
def loop_int8(captured):
    from edgeseq.quant import quantize

    return {
        name: quantize(captured[name][1], _calibration(name, captured[name][1]), "edgeseq", budget=None)
        for name in LOOP_INT8
    }


@pytest.mark.parametrize("name", LOOP_INT8)
def test_loop_model_int8_onnx_is_bit_exact(loop_int8, tmp_path, name):
    from edgeseq.quant import intexact

    q = loop_int8[name]
    art = edgeseq.export(q, target="onnx", out=tmp_path / name)
    for steps in (7, 19):
        for batch in (1, 3):
            x = _calibration(name, q.graph, batch, steps, seed=steps + batch).astype(np.float32)
            outs, _ = intexact.run(q.program, q.quantize_input(x))
            want = intexact.dequantize_outputs(q.program, outs)
            got = art.run(x, layout="BTF")
            got = got if isinstance(got, tuple) else (got,)
            assert len(got) == len(want)
            for g_, w in zip(got, want):
                assert g_.shape == w.shape and np.array_equal(g_, w), (name, steps, batch)


@pytest.mark.toolchain
def test_loop_models_int8_c_x86_is_bit_exact(loop_int8, tmp_path_factory):
    from edgeseq.export.c.intgen import generate_int
    from edgeseq.export.c.multi import build_multi

    from ..conftest import need_tool
    from ..unit.c_int_cases import check_bit_exact

    need_tool("gcc")
    progs = [loop_int8[n].program for n in LOOP_INT8]
    srcs = [
        generate_int(p, loop_int8[n].graph.in_features, prefix=f"m{k}", target="x86")
        for k, (n, p) in enumerate(zip(LOOP_INT8, progs))
    ]
    mb = build_multi(srcs, "x86", tmp_path_factory.mktemp("byom-loop-x86"))
    for k, prog in enumerate(progs):
        check_bit_exact(lambda x, **kw: mb.run(k, x, **kw), mb.infos[k], prog, seed=k, steps=12)


def test_gru_cell_loop_quantizes_like_nn_gru(captured):
    """The GRUCell loop and nn.GRU holding the same weights: the same integer error against float."""
    from torch import nn

    from edgeseq.quant import quantize

    loop, g_loop = captured["gru_cell_loop"]

    class Named(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(F_IN, 16, batch_first=True)
            for a, b in (
                ("weight_ih", "weight_ih_l0"),
                ("weight_hh", "weight_hh_l0"),
                ("bias_ih", "bias_ih_l0"),
                ("bias_hh", "bias_hh_l0"),
            ):
                getattr(self.gru, b).data = getattr(loop.cell, a).data.clone()
            self.fc = loop.fc

        def forward(self, x):
            return self.fc(self.gru(x)[0][:, -1])

    g_named = edgeseq.capture(Named().eval(), example(CASES["gru_cell_loop"]))
    x = _calibration("gru_cell_loop", g_loop, 32, 30, seed=9)
    errs = []
    for g in (g_loop, g_named):
        q = quantize(g, _calibration("gru_cell_loop", g), "edgeseq", budget=None)
        errs.append(_error(q.run(x)[0][0], q.run(x, mode="float")[0][0], False))
    assert errs[0] < 0.05 and errs[0] <= 1.2 * errs[1] + 0.002, errs


def test_edgeseq_quantize_cli_on_a_loop_model(captured, tmp_path, capsys):
    """`edgeseq quantize model.esq --data calib.npz`: a captured loop model of one's own, calibrated on a
    file of sequences; the saved integer program equals edgeseq.quantize's on the same data."""
    from edgeseq.cli import main
    from edgeseq.quant import intexact, load_quantized, quantize

    g = captured["elman_params"][1]
    g.save(tmp_path / "m.esq")
    x = _calibration("elman_params", g).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    cmd = ["quantize", str(tmp_path / "m.esq"), "--data", str(tmp_path / "calib.npz")]
    assert main(cmd + ["--out", str(tmp_path / "q.esq"), "--quiet"]) == 0
    q = load_quantized(tmp_path / "q.esq")
    ref = quantize(g, x.astype(np.float64), "edgeseq", budget=None)
    xt = _calibration("elman_params", g, 2, 9, seed=4)
    got, want = intexact.run(q.program, q.quantize_input(xt))[0], intexact.run(ref.program, ref.quantize_input(xt))[0]
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert main(cmd[:-1] + ["nosuch", "--out", str(tmp_path / "b.esq")]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'nosuch'" in err and err.count("\n") == 1
