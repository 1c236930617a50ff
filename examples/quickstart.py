"""Capture a zoo model into the edgeseq IR, save it, and check that the reference interpreter
reproduces PyTorch, whole-sequence and streamed step by step.

    .venv/bin/python examples/quickstart.py
"""

import tempfile
from pathlib import Path

import numpy as np
import torch

import edgeseq
from edgeseq.ir.interpret import run_chunked
from edgeseq.nn import build_model


def main() -> None:
    torch.manual_seed(0)
    model = build_model("lmu", in_features=6, n_classes=6, hidden=32, memory_d=4, order=8, theta=64.0).eval()
    x = torch.randn(4, 128, 6)
    graph = edgeseq.capture(model, x)
    print(graph.summary())
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "lmu.esq"
        graph.save(path)
        graph = edgeseq.load(path)
        print(f"\nsaved and reloaded {path.name}: {path.stat().st_size} bytes")
    with torch.no_grad():
        want = model(x).numpy()
    y, state = edgeseq.reference(graph, x.numpy())
    (streamed,), _ = run_chunked(graph, x.numpy(), chunk=1)
    print(f"reference vs torch:         max |diff| = {np.abs(y - want).max():.2e}")
    print(f"step-by-step vs whole:      bit-identical = {np.array_equal(streamed, y)}")
    print(f"state carried between calls: {sorted(state)}")


if __name__ == "__main__":
    main()
