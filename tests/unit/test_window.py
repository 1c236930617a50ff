"""Window graphs: the window ops' equations (Reverse, Lookahead), layered execution, serialization,
the ONNX lowering, and the one-line refusals of everything that runs graphs step by step."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgeseq.errors import EdgeseqError, UnsupportedOpError
from edgeseq.ir import ops as O
from edgeseq.ir.graph import GraphBuilder
from edgeseq.ir.interpret import run, run_chunked

from .window_cases import window_graph


def _graph():
    return window_graph()


def _numpy_ref(g, x):
    ops = {n.name: n.op for n in g.nodes}

    def rnn(op, xs):
        h, out = np.zeros((xs.shape[0], 4)), []
        for t in range(xs.shape[1]):
            h = np.tanh(xs[:, t] @ op.w_ih.T + h @ op.w_hh.T)
            out.append(h)
        return np.stack(out, 1)

    ahead = np.zeros_like(x)
    ahead[:, :-2] = x[:, 2:]
    y = np.concatenate([rnn(ops["fwd"], x), rnn(ops["bwd"], x[:, ::-1])[:, ::-1]], -1) + ahead @ ops["linear"].weight.T
    return y, y.mean(1)


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_layered_execution_is_the_window_equations(steps):
    g, rng = _graph()
    assert g.is_window and [n.name for n in g.window_nodes] == ["rev_in", "rev_out", "ahead"]
    x = rng.normal(size=(2, steps, 3))
    (y, m), _ = run(g, x)
    want_y, want_m = _numpy_ref(g, x)
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m, want_m, rtol=1e-12, atol=1e-12)
    _, _, values = run(g, x, trace=True)
    np.testing.assert_array_equal(values["rev_in"], x[:, ::-1])


def test_reference_kernels_run_window_graphs():
    """The validation reference kernels (layer by layer; torch on the CPU here) compute the same."""
    from edgeseq.validate import reference_run

    g, rng = _graph()
    for steps in (1, 7):
        x = rng.normal(size=(2, steps, 3))
        got, _ = reference_run(g, x, device="cpu", dtype="float64", kernels="torch")
        for a, b in zip(got, run(g, x)[0]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    with pytest.raises(UnsupportedOpError, match="window graph"):
        reference_run(g, x, g.init_state(2), device="cpu", kernels="torch")


def test_window_graph_round_trips_and_refuses_streaming(tmp_path):
    from edgeseq.ir.serialize import load

    g, rng = _graph()
    g.save(tmp_path / "w.esq")
    g2 = load(tmp_path / "w.esq")
    x = rng.normal(size=(1, 5, 3))
    np.testing.assert_array_equal(run(g2, x)[0][0], run(g, x)[0][0])
    assert g2.metadata["window"] == "test window"
    for call in (lambda: run_chunked(g, x, 2), lambda: run(g, x, g.init_state(1))):
        with pytest.raises(
            UnsupportedOpError,
            match="needs a streaming graph, and this is a window graph "
            r"\(test window\)",
        ):
            call()


def test_onnx_lowering_of_window_ops(tmp_path):
    from edgeseq.export.onnx import build_onnx, export_onnx

    g, rng = _graph()
    art = export_onnx(g, tmp_path / "o")
    for steps in (1, 6):
        x = rng.normal(size=(2, steps, 3)).astype(np.float32)
        got = art.run(x)
        want, _ = run(g, x)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(UnsupportedOpError, match="a streaming ONNX export needs a streaming graph"):
        build_onnx(g, streaming=True)


def test_cli_refuses_step_targets_in_one_line(tmp_path):
    g, _ = _graph()
    g.save(tmp_path / "w.esq")
    for args in (["--target", "onnx", "--streaming"],):
        p = subprocess.run(
            [sys.executable, "-m", "edgeseq", "export", str(tmp_path / "w.esq"), "--out", str(tmp_path / "out"), *args],
            capture_output=True,
            text=True,
        )
        err = [ln for ln in p.stderr.splitlines() if ln.startswith("edgeseq: error:")]
        assert p.returncode == 2 and len(err) == 1 and "Traceback" not in p.stderr, p.stderr
        assert "window graph (test window)" in err[0]
    info = subprocess.run(
        [sys.executable, "-m", "edgeseq", "info", str(tmp_path / "w.esq")], capture_output=True, text=True
    )
    assert info.returncode == 0 and "window graph: runs on whole windows" in info.stdout, info.stderr
    assert "streaming state" not in info.stdout


def test_lookahead_checks_its_steps():
    with pytest.raises(EdgeseqError, match="steps >= 1"):
        GraphBuilder(2).add(O.Lookahead(steps=0), "x")


def test_bidirectional_final_states_capture():
    """torch.cat((h_n[-2], h_n[-1]), 1) of a bidirectional GRU / LSTM (time-major too): the last forward
    step and the backward direction's last step, in a window graph that matches torch at a new length."""
    import torch
    from torch import nn

    import edgeseq

    class M(nn.Module):
        def __init__(self, cls, batch_first):
            super().__init__()
            self.rnn = cls(3, 5, num_layers=2, bidirectional=True, batch_first=batch_first)
            self.fc = nn.Linear(10, 2)

        def forward(self, x):
            _, h = self.rnn(x)
            return self.fc(torch.cat((h[-2], h[-1]), dim=1))

    class L(M):
        def forward(self, x):
            _, (h, c) = self.rnn(x)
            return self.fc(torch.cat((h[-2], h[-1]), dim=1))

    torch.manual_seed(0)
    for wrap, cls, bf in ((M, nn.GRU, False), (L, nn.LSTM, True)):
        m = wrap(cls, bf).eval()
        shape = (2, 6, 3) if bf else (6, 2, 3)
        g = edgeseq.capture(m, torch.randn(*shape))
        assert g.is_window and g.metadata["input_layout"] == ("BTF" if bf else "TBF")
        x = torch.randn(*((3, 11, 3) if bf else (11, 3, 3)))
        with torch.no_grad():
            want = m(x).numpy()
        np.testing.assert_allclose(edgeseq.reference(g, x.numpy())[0], want, atol=1e-6)


def test_tvm_main_runs_whole_windows_and_stream_is_refused(tmp_path):
    """The TVM "main" function runs every node over the whole window (window ops: flip / shift kernels);
    a "stream" function, or running the artifact from a state, is a one-line refusal."""
    from edgeseq.export.tvm import compile_tvm, export_tvm

    from .window_cases import BATCHES, LENGTHS, window_model

    g, _, inputs = window_model("synthetic")
    art = export_tvm(g, tmp_path / "t", "x86")
    assert set(art.verify()) == {"main/out0", "main/out1"}
    for batch in BATCHES:
        for steps in LENGTHS:
            x = inputs(batch, steps, steps)
            got, _ = art.run(x)
            for a, b in zip(got, run(g, x)[0]):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for call in (lambda: compile_tvm(g, "x86", streaming=True), lambda: art.run(x, g.init_state(batch))):
        with pytest.raises(UnsupportedOpError, match="window graph") as ei:
            call()
        assert "\n" not in str(ei.value)
