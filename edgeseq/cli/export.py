"""edgeseq export: a model (shipped name, checkpoint, .esq graph or quantized graph) -> an artifact."""

from __future__ import annotations

import argparse
import sys

from . import args as A


def register(sub) -> None:
    from ..export import TARGETS

    p = sub.add_parser(
        "export",
        help="export a model for onnx / x86 / arm / cortex-m* (artifact directory with manifest and golden vectors)",
        description="Export MODEL (a shipped model name such as har_lmu, a .ckpt checkpoint, a training output "
        "directory, an .esq IR graph, or a quantized .esq from `edgeseq quantize`) for a target. "
        "The artifact is checked against the reference interpreter while it is written.",
    )
    p.add_argument("model", help="shipped model name, .ckpt, directory, or .esq")
    p.add_argument(
        "--target", required=True, help=f"one of: {', '.join(TARGETS)} (arm:cortex-a72 / arm:cortex-a76 pick a CPU)"
    )
    p.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument(
        "--quant",
        metavar="PLAN",
        help="integer export: 'edgeseq' (the outlier-aware int8 plan) or 'naive', "
        "calibrated here on the model's task data (--data), or a quantized graph (.q.esq) from "
        "`edgeseq quantize` (MODEL may itself be one)",
    )
    p.add_argument(
        "--data",
        help="with --quant edgeseq|naive: the task whose training split calibrates the model "
        "(default: the task recorded with the model, e.g. har for har_lmu), or an .npz "
        "holding x (N, T, F); a .nir model without one calibrates on random spike trains",
    )
    p.add_argument(
        "--onnx-numerics",
        choices=("exact", "qdq"),
        default="exact",
        help="onnx with --quant: 'exact' (default) the integer program, bit-exact; 'qdq' the float model "
        "with QuantizeLinear/DequantizeLinear pairs (onnxruntime QGemm kernels, within a stated tolerance)",
    )
    p.add_argument("--streaming", action="store_true", help="onnx: one chunk per call with explicit state in/out")
    p.add_argument("--inline", action="store_true", help="onnx: standard ops only (no edgeseq-domain functions)")
    p.add_argument(
        "--fused-rnn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="onnx, float: scan ops that compute exactly ONNX's GRU/LSTM use those ops (onnxruntime's fused "
        "kernels, about 2x faster than Scan); on by default, --no-fused-rnn keeps every one on Scan. "
        "onnx, --onnx-numerics qdq: LSTMs run on onnxruntime's quantized LSTM kernel (faster than the float "
        "model, wider tolerance: the manifest states it); off by default",
    )
    p.add_argument("--cpu", help="arm: LLVM/gcc CPU, e.g. cortex-a72")
    A.add_nir_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..export import Artifact, export

    model = args.model
    if args.model.endswith(".esq"):
        model = _maybe_quantized(args.model)
    nir_opts = A.nir_options(args)
    if args.model.endswith(".nir"):
        from ..models import load_model

        model = load_model(args.model, nir_options=nir_opts).graph
    quant = None
    if args.quant in ("edgeseq", "naive"):
        quant = _calibrated(args, model, args.quant)
    elif args.quant:
        quant = _maybe_quantized(args.quant)
        if isinstance(quant, str):
            from ..errors import ConfigError

            raise ConfigError(
                "not a quantized graph",
                where=args.quant,
                hint="make one with `edgeseq quantize MODEL --data TASK --out PLAN.q.esq`",
            )
    options = None
    if args.target == "nir" and nir_opts is not None:
        options = {k: v for k, v in (("dt", nir_opts.dt), ("method", nir_opts.method)) if v is not None}

    def say(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr)

    art: Artifact = export(
        model,
        target=args.target,
        out=args.out,
        quant=quant,
        force=args.force,
        streaming=args.streaming,
        inline=args.inline,
        cpu=args.cpu,
        progress=say,
        onnx_numerics=args.onnx_numerics,
        fused_rnn=args.fused_rnn,
        target_options=options,
    )
    _print_summary(art)
    return 0


def _calibrated(args, model, plan: str):
    """The model quantized with ``plan``, calibrated on --data: a task's training split, an .npz with
    x (N, T, F), or (a .nir model without data) random spike trains, with a warning."""
    from ..errors import ConfigError
    from ..models import load_model

    lm = load_model(args.model) if isinstance(model, str) else None
    graph = lm.graph if lm is not None else model
    if args.data and args.data.endswith(".npz"):
        from ..quant import quantize
        from ..quant.tasks import npz_calibration

        print(f"  quantizing ({plan} plan) with calibration data from {args.data}", file=sys.stderr)
        return quantize(graph, npz_calibration(args.data, graph), plan, progress=False)
    task = args.data or (lm.task if lm is not None else None)
    if not task and args.model.endswith(".nir"):
        from ..quant import quantize
        from ..quant.tasks import spike_calibration

        print(
            "  warning: no --data: calibrating on random spike trains (64 sequences of 64 steps, rate 0.2); "
            "give --data FILE.npz with real inputs for a plan that fits them",
            file=sys.stderr,
        )
        return quantize(graph, spike_calibration(graph), plan, progress=False)
    if not task:
        raise ConfigError(
            f"--quant {plan} needs calibration data: pass --data TASK (har, kws, ...) or FILE.npz", where=args.model
        )
    from ..quant.tasks import quantize_on_task, task_data

    print(f"  quantizing ({plan} plan) with calibration data of task '{task}'", file=sys.stderr)
    fe = lm.metrics.get("front_end") if lm is not None else None
    return quantize_on_task(graph, task_data(task, graph, where=args.model, front_end=fe), plan, progress=False)


def _maybe_quantized(path: str):
    """A quantized graph file if ``path`` holds one, else the path itself (a float graph)."""
    try:
        from ..quant import is_quantized_file, load_quantized
    except ImportError:
        return path
    return load_quantized(path) if is_quantized_file(path) else path


def _print_summary(art) -> None:
    print(f"wrote {art.path}  ({art.kind}, target {art.target})")
    m = art.manifest
    sizes = m.get("sizes") or {}
    if sizes:
        flash, ram = sizes.get("flash_bytes"), sizes.get("ram_bytes")
        if flash is not None:
            print(f"  flash {flash} bytes, RAM {ram} bytes")
    for name, part in (art.parts or {}).items():
        print(f"  {name + '/':5s} runs with {m['parts'][name]['runs_with']}")
    if art.kind == "bundle":
        print(f"  run on the device: {art.path}/run.sh step input.bin output.bin")
