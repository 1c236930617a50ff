"""Write a spiking network to NIR the way snntorch users do (snntorch's export_to_nir), read the .nir
file into edgeseq, and check that edgeseq reproduces snntorch's spikes.

    .venv/bin/python examples/snntorch_to_nir.py --out snn.nir
    .venv/bin/edgeseq info snn.nir
    .venv/bin/edgeseq export snn.nir --target cortex-m4 --quant edgeseq --out snn_m4
    .venv/bin/edgeseq validate snn_m4
"""

import argparse

import nir
import numpy as np
import snntorch as snn
import torch
from snntorch.export_nir import export_to_nir

import edgeseq
from edgeseq.frontends import torch_forward
from edgeseq.ir.interpret import run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="snn.nir")
    args = ap.parse_args()
    torch.manual_seed(0)
    # snntorch's exporter needs per-neuron beta / threshold tensors and writes every reset as 'zero'
    net = torch.nn.Sequential(
        torch.nn.Linear(16, 32), snn.Leaky(beta=torch.full((32,), 0.9), threshold=torch.ones(32), init_hidden=True,
                                           reset_mechanism="zero"),
        torch.nn.Linear(32, 32), snn.RLeaky(beta=torch.full((32,), 0.85), threshold=torch.ones(32),
                                            linear_features=32, init_hidden=True, reset_mechanism="zero"),
        torch.nn.Linear(32, 4), snn.Synaptic(alpha=torch.full((4,), 0.6), beta=torch.full((4,), 0.8),
                                             threshold=torch.ones(4), init_hidden=True, reset_mechanism="zero"))
    nir.write(args.out, export_to_nir(net, torch.zeros(1, 16), ignore_dims=[0]))
    graph = edgeseq.capture(args.out)
    print(graph.summary())
    print(f"\nread {args.out}: {graph.metadata['nir']}")
    x = (torch.rand(8, 100, 16) < 0.3).float() * 2.0
    want = torch_forward(net, x)[0]
    got = run(graph, x.double().numpy())[0][0]
    print(f"spikes: snntorch {int(want.sum())}, edgeseq {int(got.sum())}, identical = {bool(np.array_equal(want, got))}")


if __name__ == "__main__":
    main()
