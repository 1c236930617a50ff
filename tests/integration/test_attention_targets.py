"""Self-attention over the window (the corpus' nn.MultiheadAttention models) in float C: both models in
one executable / firmware per target -- x86, Cortex-M4 under qemu-system-arm -- run whole windows at two
lengths x two batch sizes within 1e-5 of the reference interpreter (1e-4 on the microcontroller); the
attention is a whole-window computation between the per-step segments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgeseq
from edgeseq.export.c.artifact import split_outputs
from edgeseq.export.c.codegen import generate
from edgeseq.ir.interpret import run
from edgeseq.ir.layout import to_ir

from ..byom.corpus import CASES, example
from ..conftest import need_tool

pytestmark = pytest.mark.toolchain

MODELS = ("mha_classifier", "conv_mha")
TOOLS = {"x86": ("gcc",), "cortex-m4": ("arm-none-eabi-gcc", "qemu-system-arm")}
WINDOW = 16


@pytest.mark.parametrize("target", tuple(TOOLS))
def test_float_attention_models_match_the_reference(target, tmp_path):
    from edgeseq.export.c.multi import build_multi

    for t in TOOLS[target]:
        need_tool(t)
    graphs = []
    for name in MODELS:
        torch.manual_seed(0)
        graphs.append(edgeseq.capture(CASES[name].build().eval(), example(CASES[name])))
    srcs = [generate(g, prefix=f"f{k}", target=target, window_steps=WINDOW) for k, g in enumerate(graphs)]
    assert all("SelfAttention" in [s.get("window_op") for s in src.info["window"]["stages"]] for src in srcs)
    mb = build_multi(srcs, target, tmp_path)
    warn = [ln for ln in mb.target.build_log.splitlines() if "warning:" in ln and "-Wunused-function" not in ln]
    assert not warn, mb.target.build_log
    tol = 1e-4 if target.startswith("cortex-m") else 1e-5
    for k, (name, g) in enumerate(zip(MODELS, graphs)):
        for batch in (1, 3):
            for steps in (5, 13):
                x = to_ir(g, example(CASES[name], batch, steps, seed=steps).numpy()).astype(np.float32)
                want, _ = run(g, x)
                res = mb.run(k, x, mode="run")
                for a, w in zip(split_outputs(mb.infos[k], res.step, res.pooled), want):
                    assert a.shape == w.shape and np.abs(a - w).max() <= tol * max(1.0, float(np.abs(w).max()))
