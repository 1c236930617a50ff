"""Window graphs for the tests: a synthetic one (a bidirectional layer, a look-ahead, a temporal output
and a mean readout) and the corpus' window models (bidirectional RNNs, 'same' / symmetric-padded
convolutions), captured and quantized once per process."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from edgeseq.ir import ops as O
from edgeseq.ir.graph import GraphBuilder
from edgeseq.ir.types import ReadoutMode

CORPUS_WINDOW = ("bigru_last", "bilstm_mean", "conv_same_bn_gru", "conv_symmetric_pad")
LENGTHS = (5, 13)
BATCHES = (1, 3)


def window_graph():
    """y = [rnn(x) | reverse(rnn_b(reverse(x)))] + lookahead(x, 2) @ W, and mean(y); returns (graph, rng)."""
    rng = np.random.default_rng(0)
    b = GraphBuilder(3)
    rnn = lambda: O.RNN(w_ih=rng.normal(size=(4, 3)) * 0.5, w_hh=rng.normal(size=(4, 4)) * 0.3)  # noqa: E731
    fwd = b.add(rnn(), "x", name="fwd")
    back = b.add(O.Reverse(), b.add(rnn(), b.add(O.Reverse(), "x", name="rev_in"), name="bwd"), name="rev_out")
    ahead = b.add(O.Linear(weight=rng.normal(size=(8, 3))), b.add(O.Lookahead(steps=2), "x", name="ahead"))
    y = b.add(O.Add(), [b.add(O.Concat(), [fwd, back], name="cat"), ahead], name="y")
    return b.build([y, b.add(O.Readout(mode=ReadoutMode.MEAN), y, name="mean")], {"window": "test window"}), rng


@lru_cache(maxsize=None)
def window_model(name: str):
    """(graph, calibration-quantized graph, input maker) of 'synthetic' or a corpus window model;
    ``inputs(batch, steps, seed)`` gives float32 (B, T, F) windows."""
    import edgeseq.quant as Q

    if name == "synthetic":
        g, _ = window_graph()

        def inputs(batch, steps, seed):
            return np.random.default_rng(seed).normal(size=(batch, steps, 3)).astype(np.float32)

    else:
        import torch

        from ..byom.corpus import CASES, example

        c = CASES[name]
        torch.manual_seed(0)
        import edgeseq

        g = edgeseq.capture(c.build().eval(), example(c))

        def inputs(batch, steps, seed):
            return example(c, batch, steps, seed=seed).numpy()

    return g, Q.quantize(g, inputs(128, 13, 1)), inputs
