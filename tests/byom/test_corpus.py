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
  bit against the integer-exact interpreter (one binary per target holds all five).
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
INT8 = ("lstm_time_major", "causal_conv_gru", "attention_pool_gru", "snn_synaptic_output", "tcn_causal_dilated")


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
        assert c.expect in text and "\n" not in text and g.hint, text


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
