"""edgeseq export: a model (shipped name, checkpoint, .esq graph or quantized graph) -> an artifact."""

from __future__ import annotations

import sys


def register(sub) -> None:
    from ..export import TARGETS

    p = sub.add_parser(
        "export", help="export a model for onnx / x86 / arm / cortex-m* (artifact directory with manifest and golden vectors)",
        description="Export MODEL (a shipped model name such as har_lmu, a .ckpt checkpoint, a training output "
                    "directory, an .esq IR graph, or a quantized .esq from `edgeseq quantize`) for a target. "
                    "The artifact is checked against the reference interpreter while it is written.")
    p.add_argument("model", help="shipped model name, .ckpt, directory, or .esq")
    p.add_argument("--target", required=True, help=f"one of: {', '.join(TARGETS)} (arm:cortex-a72 / arm:cortex-a76 pick a CPU)")
    p.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--quant", metavar="PLAN", help="integer export: 'edgeseq' (the outlier-aware int8 plan) or 'naive', "
                   "calibrated here on the model's task data (--data), or a quantized graph (.q.esq) from "
                   "`edgeseq quantize` (MODEL may itself be one)")
    p.add_argument("--data", help="with --quant edgeseq|naive: the task whose training split calibrates the model "
                                  "(default: the task recorded with the model, e.g. har for har_lmu)")
    p.add_argument("--onnx-numerics", choices=("exact", "qdq"), default="exact",
                   help="onnx with --quant: 'exact' (default) the integer program, bit-exact; 'qdq' the float model "
                        "with QuantizeLinear/DequantizeLinear pairs (onnxruntime QGemm kernels, within a stated tolerance)")
    p.add_argument("--streaming", action="store_true", help="onnx: one chunk per call with explicit state in/out")
    p.add_argument("--inline", action="store_true", help="onnx: standard ops only (no edgeseq-domain functions)")
    p.add_argument("--fused-rnn", action="store_true",
                   help="onnx, float: GRU/LSTM function bodies use ONNX's own GRU/LSTM ops (onnxruntime's fused "
                        "kernels, about 2x faster than the Scan bodies) instead of Scan")
    p.add_argument("--cpu", help="arm: LLVM/gcc CPU, e.g. cortex-a72")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..export import Artifact, export

    model = args.model
    if args.model.endswith(".esq"):
        model = _maybe_quantized(args.model)
    quant = None
    if args.quant in ("edgeseq", "naive"):
        from ..errors import ConfigError
        from ..models import load_model
        from ..quant.tasks import quantize_on_task, task_data

        lm = load_model(args.model)
        task = args.data or lm.task
        if not task:
            raise ConfigError(f"--quant {args.quant} needs calibration data: pass --data TASK (har, kws, ...)",
                              where=args.model)
        print(f"  quantizing ({args.quant} plan) with calibration data of task '{task}'", file=sys.stderr)
        quant = quantize_on_task(lm.graph, task_data(task, lm.graph, where=args.model), args.quant, progress=False)
    elif args.quant:
        quant = _maybe_quantized(args.quant)
        if isinstance(quant, str):
            from ..errors import ConfigError

            raise ConfigError("not a quantized graph", where=args.quant,
                              hint="make one with `edgeseq quantize MODEL --data TASK --out PLAN.q.esq`")

    def say(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr)

    art: Artifact = export(model, target=args.target, out=args.out, quant=quant, force=args.force,
                           streaming=args.streaming, inline=args.inline, cpu=args.cpu, progress=say,
                           onnx_numerics=args.onnx_numerics, fused_rnn=args.fused_rnn)
    _print_summary(art)
    return 0


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
