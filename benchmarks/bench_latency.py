"""Streaming-step and whole-sequence latency, side by side in one process, one thread everywhere.

For each zoo model (hidden H, input I, T steps, batch 1) and each runtime:

- ``torch_eager``: the torch model (``forward`` over the sequence; for a step, the model's layers
  driven one step at a time with explicit state: ``nn.GRU`` on a 1-step chunk, ``MinGRU.step``,
  ``LMU.step``, ``LIF.step``, then the readout and the head);
- ``edgeseq_onnx``: ``build_onnx(graph)`` in onnxruntime; the step uses ``build_onnx(graph,
  streaming=True)`` on 1-step chunks, feeding each call's state outputs to the next call;
- ``torch_onnx``: torch's legacy ONNX exporter on the whole model (dynamic batch and time), and on
  the torch step module above (state as inputs/outputs) for the step, where the exporter handles it;
- ``tvm_x86``: ``compile_tvm(graph, "x86")``, the Relax VM's ``main`` on prepared TVM tensors, and
  ``stream`` on 1-step chunks with the returned state tensors fed back.

Every method is checked against torch (whole sequence; the step form after T steps) before it
is timed. Methods run in alternating warm blocks (``--rounds`` blocks of ``--repeats`` calls), so
they share the machine's drift; latency is the median (p10 / p90 recorded) of all timed calls.
Results: benchmarks/results/latency.json.

    python -m benchmarks.bench_latency [--hidden 128] [--steps 128] [--inputs 64] [--models gru,lmu]
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "1")  # before TVM starts its thread pool

import argparse  # noqa: E402
import io  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.common import write_results  # noqa: E402

MODELS = {
    "gru": lambda a: dict(hidden=a.hidden),
    "lstm": lambda a: dict(hidden=a.hidden),
    "rnn": lambda a: dict(hidden=a.hidden),
    "lmu": lambda a: dict(hidden=a.hidden, memory_d=1, order=64, theta=float(a.steps)),
    "mingru": lambda a: dict(hidden=a.hidden),
    "lif": lambda a: dict(hidden=a.hidden),
}


# ----------------------------------------------------------------------------------------------
# a torch streaming step for the zoo classifiers


class TorchStep(nn.Module):
    """``forward(x_t, *state) -> (logits, *new_state)``: one step of a zoo classifier, with every
    piece of state (recurrent state, readout accumulators) explicit."""

    def __init__(self, model: nn.Module):
        super().__init__()
        from edgeseq.nn.models import LIFClassifier, RecurrentClassifier

        self.m = model
        if isinstance(model, RecurrentClassifier):
            self.kind = "rnn" if model.rnn is not None else "layers"
        elif isinstance(model, LIFClassifier):
            self.kind = "lif"
        else:
            raise NotImplementedError(f"no streaming step for {type(model).__name__}")
        self.readout = model.readout.mode.value

    def init_state(self, batch: int) -> list[torch.Tensor]:
        m = self.m
        st: list[torch.Tensor] = []
        if self.kind == "rnn":
            n = m.rnn.num_layers
            st.append(torch.zeros(n, batch, m.rnn.hidden_size))
            if isinstance(m.rnn, nn.LSTM):
                st.append(torch.zeros(n, batch, m.rnn.hidden_size))
            feat = m.rnn.hidden_size
        elif self.kind == "layers":
            for layer in m.layers:
                s = layer.init_state(batch)
                st.extend(s[k] for k in sorted(s)) if isinstance(s, dict) else st.append(s)
            feat = m.head.in_features
        else:
            for lif in list(m.lifs) + [m.out_lif]:
                s = lif.init_state(batch)
                st.extend(s[k] for k in sorted(s))
            feat = m.out_lif.size
        if self.readout != "last":
            st += [torch.zeros(batch, feat), torch.zeros(batch, 1)]
        return st

    def forward(self, x_t: torch.Tensor, *state: torch.Tensor):
        m = self.m
        st = list(state)
        new: list[torch.Tensor] = []
        x = m.norm(x_t)
        if self.kind == "rnn":
            hx = (st.pop(0), st.pop(0)) if isinstance(m.rnn, nn.LSTM) else st.pop(0)
            y, h = m.rnn(x.unsqueeze(1), hx)
            feat = y[:, 0]
            new += list(h) if isinstance(h, tuple) else [h]
        elif self.kind == "layers":
            for layer in m.layers:
                if hasattr(layer, "memory_d"):  # LMU: dict state, keys sorted
                    keys = sorted(layer.init_state(1))
                    s = {k: st.pop(0) for k in keys}
                    x, s = layer.step(x, s)
                    new += [s[k] for k in keys]
                else:
                    x = layer.step(x, st.pop(0))
                    new.append(x)
            feat = x
        else:
            for fc, lif in zip(m.fcs, m.lifs):
                keys = sorted(lif.init_state(1))
                x, s = lif.step(fc(x), {k: st.pop(0) for k in keys})
                new += [s[k] for k in keys]
            keys = sorted(m.out_lif.init_state(1))
            feat, s = m.out_lif.step(m.out_fc(x), {k: st.pop(0) for k in keys})
            new += [s[k] for k in keys]
        if self.readout == "last":
            value = feat
        else:
            total, count = st.pop(0) + feat, st.pop(0) + 1.0
            value = total / count if self.readout == "mean" else total
            new += [total, count]
        if self.kind == "lif":
            logits = value
        else:
            logits = m.head(value)
        return (logits, *new)


# ----------------------------------------------------------------------------------------------


def _session(model_bytes: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 4
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _torch_export(module: nn.Module, args: tuple, names_in: list[str], names_out: list[str], dynamic: dict) -> bytes:
    from benchmarks.bench_onnx import _quiet_fds

    buf = io.BytesIO()
    with warnings.catch_warnings(), _quiet_fds():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buf,
            dynamo=False,
            input_names=names_in,
            output_names=names_out,
            opset_version=17,
            dynamic_axes=dynamic,
        )
    return buf.getvalue()


def _err(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def bench_model(arch: str, args) -> dict:
    import tvm

    from edgeseq import capture
    from edgeseq.export.onnx import build_onnx
    from edgeseq.export.onnx.lower import state_input_name, state_output_name
    from edgeseq.export.tvm import compile_tvm
    from edgeseq.nn import build_model

    torch.manual_seed(0)
    model = build_model(arch, args.inputs, 10, **MODELS[arch](args)).eval()
    x = torch.randn(1, args.steps, args.inputs)
    xn = x.numpy()
    x1 = xn[:, :1]
    graph = capture(model, x[:, :16])
    with torch.inference_mode():
        want = model(x).numpy()
    row: dict = {"config": MODELS[arch](args), "params": graph.num_params(), "methods": {}}
    seq: dict = {}
    step: dict = {}

    def record(name, key, value):
        row["methods"].setdefault(name, {})[key] = value

    # torch eager --------------------------------------------------------------------------------
    stepper = TorchStep(model).eval()
    st0 = stepper.init_state(1)
    with torch.inference_mode():
        s = st0
        for t in range(args.steps):
            out = stepper(x[:, t], *s)
            s = list(out[1:])
        record("torch_eager", "step_max_abs_diff_after_T", float(np.abs(out[0].numpy() - want).max()))
    xt1 = x[:, 0]
    seq["torch_eager"] = lambda: model(x)
    step["torch_eager"] = lambda: stepper(xt1, *st0)

    # edgeseq onnx ---------------------------------------------------------------------------------
    whole = build_onnx(graph).SerializeToString()
    stream = build_onnx(graph, streaming=True).SerializeToString()
    row["onnx_model_bytes"] = len(whole)
    s_whole, s_stream = _session(whole), _session(stream)
    (y,) = s_whole.run(None, {"x": xn})
    record("edgeseq_onnx", "max_abs_diff_vs_torch", float(np.abs(y - want).max()))
    keys = list(graph.state_spec())
    st_names_in = [state_input_name(k) for k in keys]
    out_names = [o.name for o in s_stream.get_outputs()]
    n_out = len(graph.outputs)
    feeds = {state_input_name(k): np.zeros((1, *sh), np.float32) for k, sh in graph.state_spec().items()}
    for t in range(args.steps):
        res = s_stream.run(None, {"x": xn[:, t : t + 1], **feeds})
        feeds = dict(zip(st_names_in, res[n_out:]))
    record("edgeseq_onnx", "step_max_abs_diff_after_T", float(np.abs(res[0] - want).max()))
    assert out_names[n_out:] == [state_output_name(k) for k in keys]
    seq["edgeseq_onnx"] = lambda: s_whole.run(None, {"x": xn})
    state_feed = {
        "x": x1,
        **{state_input_name(k): np.zeros((1, *sh), np.float32) for k, sh in graph.state_spec().items()},
    }
    carry = {"feeds": dict(state_feed)}

    def onnx_step():
        res = s_stream.run(None, carry["feeds"])
        carry["feeds"] = {"x": x1, **dict(zip(st_names_in, res[n_out:]))}

    step["edgeseq_onnx"] = onnx_step

    # torch's own onnx export ---------------------------------------------------------------------------
    try:
        s_t = _session(_torch_export(model, (x,), ["x"], ["y"], {"x": {0: "batch", 1: "time"}, "y": {0: "batch"}}))
        (y,) = s_t.run(None, {"x": xn})
        x_other = np.random.default_rng(1).standard_normal((1, args.steps // 2 + 7, args.inputs)).astype(np.float32)
        with torch.inference_mode():
            want_other = model(torch.as_tensor(x_other)).numpy()
        try:
            ok_other = bool(np.abs(s_t.run(None, {"x": x_other})[0] - want_other).max() < 1e-4)
        except Exception as e:  # noqa: BLE001 - a fixed-length export may refuse other lengths
            ok_other = False
            record("torch_onnx", "other_length_error", _err(e))
        record("torch_onnx", "max_abs_diff_vs_torch", float(np.abs(y - want).max()))
        record("torch_onnx", "correct_at_other_length", ok_other)
        if ok_other:
            seq["torch_onnx"] = lambda: s_t.run(None, {"x": xn})
    except Exception as e:  # noqa: BLE001 - recorded: torch's exporter does not handle every model
        record("torch_onnx", "error", _err(e))
    try:
        names = [f"s{i}" for i in range(len(st0))]
        dyn = {n: {0 if st0[i].dim() == 2 else 1: "batch"} for i, n in enumerate(names)}
        s_ts = _session(
            _torch_export(
                stepper,
                (xt1, *st0),
                ["x"] + names,
                ["y"] + [f"o{i}" for i in range(len(st0))],
                {"x": {0: "batch"}, **dyn},
            )
        )
        sf = {"x": x1[:, 0], **{n: t.numpy() for n, t in zip(names, st0)}}
        feeds_t = dict(sf)
        for t in range(args.steps):
            feeds_t["x"] = xn[:, t]
            res = s_ts.run(None, feeds_t)
            feeds_t.update(zip(names, res[1:]))
        diff = float(np.abs(res[0] - want).max())
        record("torch_onnx", "step_max_abs_diff_after_T", diff)
        if diff < 1e-4:
            carry_t = {"feeds": dict(sf)}

            def torch_onnx_step():
                res = s_ts.run(None, carry_t["feeds"])
                carry_t["feeds"] = {"x": sf["x"], **dict(zip(names, res[1:]))}

            step["torch_onnx"] = torch_onnx_step
    except Exception as e:  # noqa: BLE001 - recorded
        record("torch_onnx", "step_error", _err(e))

    # tvm x86 ----------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    module = compile_tvm(graph, "x86", functions=("main", "stream"))
    row["tvm_compile_s"] = time.perf_counter() - t0
    vm = module.vm
    main_fn, stream_fn = vm["main"], vm["stream"]
    xt = tvm.runtime.tensor(xn)
    y = main_fn(xt)
    y = y if isinstance(y, tvm.runtime.Tensor) else list(y)[0]
    record("tvm_x86", "max_abs_diff_vs_torch", float(np.abs(y.numpy() - want).max()))
    zero = [tvm.runtime.tensor(np.zeros((1, *sh), np.float32)) for sh in graph.state_spec().values()]
    stv = list(zero)
    for t in range(args.steps):
        res = list(stream_fn(tvm.runtime.tensor(np.ascontiguousarray(xn[:, t : t + 1])), *stv))
        stv = res[n_out:]
    record("tvm_x86", "step_max_abs_diff_after_T", float(np.abs(res[0].numpy() - want).max()))
    xt1v = tvm.runtime.tensor(np.ascontiguousarray(x1))
    carry_v = {"st": list(zero)}

    def tvm_step():
        carry_v["st"] = list(stream_fn(xt1v, *carry_v["st"]))[n_out:]

    seq["tvm_x86"] = lambda: main_fn(xt)
    step["tvm_x86"] = tvm_step

    # timing ------------------------------------------------------------------------------------------------
    for what, runners, reps in (("sequence", seq, args.repeats), ("step", step, args.repeats * 4)):
        samples: dict[str, list[float]] = {k: [] for k in runners}
        with torch.inference_mode():
            for _ in range(args.rounds):
                for k, fn in runners.items():
                    for _ in range(args.warmup):
                        fn()
                    for _ in range(reps):
                        t0 = time.perf_counter()
                        fn()
                        samples[k].append(time.perf_counter() - t0)
        base = statistics.median(samples["torch_eager"])
        for k, v in samples.items():
            med = statistics.median(v)
            record(
                k,
                f"{what}_us",
                {
                    "median": med * 1e6,
                    "p10": float(np.percentile(v, 10)) * 1e6,
                    "p90": float(np.percentile(v, 90)) * 1e6,
                    "n": len(v),
                    "speedup_vs_torch_eager": base / med,
                },
            )
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5, help="alternating blocks per method")
    ap.add_argument("--repeats", type=int, default=20, help="timed sequence calls per block (steps: 4x)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import onnxruntime
    import tvm

    results = {}
    for arch in args.models.split(","):
        row = bench_model(arch, args)
        results[arch] = row
        m = row["methods"]
        parts = []
        for k, v in m.items():
            s = f"{v['sequence_us']['median']:.0f}" if "sequence_us" in v else "-"
            st = f"{v['step_us']['median']:.1f}" if "step_us" in v else "-"
            parts.append(f"{k} {s}/{st}")
        print(f"{arch:7s} us per sequence/step: " + " | ".join(parts), flush=True)
    out = {
        "config": {k: v for k, v in vars(args).items() if k != "no_write"},
        "batch": 1,
        "threads": 1,
        "load_average_1_5_15min": list(os.getloadavg()),
        "versions": {"onnxruntime": onnxruntime.__version__, "tvm": tvm.__version__, "torch": torch.__version__},
        "method": "median over alternating warm blocks, one thread per runtime, B=1; step = one streaming "
        "step with explicit state carried between calls",
        "results": results,
    }
    if not args.no_write:
        print(f"wrote {write_results('latency', out)}")
    return out


QUICK = [
    "--hidden",
    "32",
    "--steps",
    "32",
    "--inputs",
    "16",
    "--rounds",
    "1",
    "--repeats",
    "5",
    "--models",
    "gru,lmu,lif",
]


def run(quick: bool = False, write: bool = True) -> dict:
    """The benchmark as a function: default settings, or a seconds-long smoke run with ``quick``."""
    return main((QUICK if quick else []) + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
