"""Parallel vs sequential training step (forward + backward) for minGRU, minLSTM and the LMU at T=512.

The parallel forms (log-space scan for minGRU/minLSTM, FFT convolution for the LMU memory) are what
`edgeseq train` uses; the sequential forms are the streaming step loop. Both run in one process,
side by side, on this CPU; the ratio is sequential / parallel median time.

    python -m benchmarks.bench_parallel [--steps 512] [--batch 16] [--hidden 128]
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import time_fn, write_results
from edgeseq.nn import LMU, MinGRU, MinLSTM


def train_step(module, x, form: str):
    def go():
        module.zero_grad(set_to_none=True)
        if isinstance(module, LMU):
            y, _ = module.forward_parallel(x) if form == "parallel" else module.forward_sequential(x)
        else:
            y = module.forward_parallel(x) if form == "parallel" else module.forward_sequential(x)
        y.square().mean().backward()

    return go


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="print only, do not write the results file")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.steps, args.inputs)
    cells = {
        "mingru": MinGRU(args.inputs, args.hidden),
        "minlstm": MinLSTM(args.inputs, args.hidden),
        "lmu": LMU(
            args.inputs,
            args.hidden,
            memory_d=4,
            order=32,
            theta=float(args.steps),
            hidden_cell="dense",
            input_to_hidden=True,
        ),
    }
    rows = {}
    for name, cell in cells.items():
        par = time_fn(train_step(cell, x, "parallel"), repeats=args.repeats, warmup=1)
        seq = time_fn(train_step(cell, x, "sequential"), repeats=max(2, args.repeats // 2), warmup=1)
        rows[name] = {
            "parallel_s": par["median_s"],
            "sequential_s": seq["median_s"],
            "speedup": seq["median_s"] / par["median_s"],
        }
        print(
            f"{name:8} parallel {par['median_s'] * 1e3:8.1f} ms   sequential {seq['median_s'] * 1e3:8.1f} ms   "
            f"speedup {rows[name]['speedup']:.1f}x"
        )
    result = {
        "config": {k: v for k, v in vars(args).items() if k != "no_write"},
        "torch_threads": torch.get_num_threads(),
        "results": rows,
        "note": "forward+backward of one training step; the minGRU paper reports 175x at T=512 on a GPU",
    }
    if not args.no_write:
        print(f"wrote {write_results('parallel_training', result)}")
    return result


QUICK = ["--steps", "64", "--batch", "4", "--hidden", "32", "--inputs", "16", "--repeats", "2"]


def run(quick: bool = False, write: bool = True) -> dict:
    """The benchmark as a function: default settings, or a seconds-long smoke run with ``quick``."""
    return main((QUICK if quick else []) + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
