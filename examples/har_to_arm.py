"""The shipped HAR model to a 64-bit ARM board in a dozen lines: outlier-aware int8 plan calibrated on
training subjects, aarch64 export (built with the cross compiler, checked under qemu-aarch64 while it is
written), then held-out windows run on the (emulated) device and compared with the integer-exact
reference and with the float model.

    .venv/bin/python examples/har_to_arm.py [--windows 256] [--out build/har-arm]
"""

import argparse

import numpy as np

import edgeseq
from edgeseq.data import load_dataset
from edgeseq.models import load_model
from edgeseq.quant import quantize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=256, help="held-out windows to run on the device")
    ap.add_argument("--out", default="build/har-arm", help="artifact directory (replaced)")
    args = ap.parse_args()

    graph = load_model("har_gru").graph  # the HAR default (har_lmu, har_l2mu: the alternatives)
    train, test = load_dataset("har", "train", classes=6), load_dataset("har", "test", classes=6)
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(train.x))
    q = quantize(graph, train.x[pick[:512]], "edgeseq", val=(train.x[pick[512:1536]], train.y[pick[512:1536]]))
    print(f"plan: {len(q.info.get('search', {}).get('promoted', []))} tensors promoted to 16 bits; "
          f"constants {q.sizes()['const_bytes']:,} B vs float32 {4 * graph.num_params():,} B")

    art = edgeseq.export(q, target="arm", out=args.out, force=True)
    x, y = test.x[: args.windows], test.y[: args.windows]
    device = art.run(x)                                   # qemu-aarch64, the zero-dependency executable
    (integer, *_), _ = q.run(x, mode="int")              # the integer-exact interpreter
    flt, _ = edgeseq.reference(graph, x.astype(np.float64))  # float64 reference interpreter
    print(f"device vs integer-exact reference: max |diff| {np.abs(device - integer).max():.2e}, "
          f"decisions equal {np.mean(device.argmax(-1) == integer.argmax(-1)):.2%}")
    print(f"accuracy on {len(y)} held-out windows: float {np.mean(flt.argmax(-1) == y):.2%}, "
          f"on device (int8) {np.mean(device.argmax(-1) == y):.2%}")


if __name__ == "__main__":
    main()
