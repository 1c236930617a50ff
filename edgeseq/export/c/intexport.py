"""Integer C artifacts: a quantized graph's integer program as self-contained C99, built for a
target, verified bit for bit against the integer-exact interpreter at export time.

    from edgeseq.export.c.intexport import export_c_int
    art = export_c_int(qg, "out/har-m4", target="cortex-m4")     # qg = edgeseq.quant.quantize(...)
    ys = art.run(x)                   # float outputs (q * scale), exactly intexact.dequantize_outputs
    outs, st = art.run_int(x, state=True)   # the integers themselves, and the integer state
    art.cost(x)                       # instructions per inference / step, flash / RAM bytes

The artifact directory has the layout of the float C artifacts (:mod:`edgeseq.export.c.artifact`)
and loads through :func:`edgeseq.export.Artifact.load` and ``edgeseq validate``::

    manifest.json        numerics "integer", output scales, target, toolchain, flags, sizes, buffer
                         plan, state layout, verification, sha256 of every file
    graph.esq            the (prepared) float graph the program implements
    quantized.esq        the quantized graph (plan + integer program)
    src/                 model.h, model.c (see :mod:`edgeseq.export.c.intgen`), main.c, support files
    obj/, bin/           object files, the executable or firmware
    golden/input.bin     golden float input; expected.bin: the integer-exact interpreter's outputs
                         dequantized (float32) and its final state; expected_int.bin: the same as
                         int32 words (the driver's ``qout`` layout)
    run.sh               ``./run.sh step golden/input.bin out.bin`` on its target

The binary speaks the float protocol of the generated driver (float inputs quantized in the model,
float outputs = q * scale) and, with the driver options ``qout`` / ``qin``, the integer one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ..._version import __version__
from ...errors import ConfigError, ToleranceError
from ...util.fs import atomic_write_bytes, atomic_write_text, check_output_dir, output_dir
from ..manifest import seal
from .artifact import (
    FORMAT,
    IntCArtifact,
    _quantized_input,
    _run_script,
    compare_int,
    default_golden_input,
    dequantize,
    int_reference,
)
from .intgen import generate_int, supported_micro_ops
from .windowops import DEFAULT_WINDOW_STEPS

__all__ = ["IntCArtifact", "export_c_int", "int_reference", "supported_micro_ops"]


def _is_quantized(q) -> bool:
    return hasattr(q, "program") and hasattr(q, "graph") and hasattr(q, "quantize_input")


def export_c_int(
    q,
    out_dir,
    target="arm",
    force: bool = False,
    golden_input=None,
    target_options: Optional[Mapping[str, Any]] = None,
    prefix: str = "esq",
    verify: bool = True,
    window_steps: Optional[int] = None,
) -> "IntCArtifact":
    """Generate C for the integer program of the quantized graph ``q``, build it for ``target``
    (``x86``, ``arm`` / ``arm:cortex-a72``, ``cortex-m4`` / ``-m7`` / ``-m55``, ``null``) and write a
    complete artifact to ``out_dir`` (atomically; an existing directory only with ``force``).

    ``golden_input`` (B, T, F) float defaults to a seeded random batch; the integer-exact
    interpreter's outputs on it are the golden vectors. With ``verify`` (and a target that runs)
    the built binary runs the golden input at export time, once on the integer API and once on
    the float API, and the export fails with ToleranceError unless every integer output and
    state value is identical and the float outputs equal the dequantized reference exactly. A window
    program becomes a whole-window model for windows of up to ``window_steps`` steps (default: 128,
    or the golden input's length if longer)."""
    from ...ir.interpret import check_input
    from ...targets import get_target
    from ...targets.driver import encode_output, write_input

    if not _is_quantized(q):
        raise ConfigError(
            f"export_c_int needs a quantized graph (edgeseq.quant.quantize), got {type(q).__name__}",
            hint="for a float graph use edgeseq.export.c.export_c",
        )
    prog, graph = q.program, q.graph
    tgt = get_target(target, **dict(target_options or {}))
    tgt.check_toolchain(run=verify and tgt.can_run)
    check_output_dir(out_dir, force)
    x = default_golden_input(graph) if golden_input is None else np.asarray(golden_input)
    x = check_input(graph, x, "golden input").astype(np.float32)
    if window_steps is None and prog.is_window:  # a window model holds at least the golden window
        window_steps = max(DEFAULT_WINDOW_STEPS, x.shape[1])
    sources = generate_int(
        prog, graph.in_features, prefix=prefix, target=tgt.name, order=list(graph.outputs), window_steps=window_steps
    )
    info = sources.info
    tgt.precheck(info)
    xq = _quantized_input(prog, q.quantize_input(x))
    step, pooled, state, _ = int_reference(prog, info, xq)
    fstep, fpooled = dequantize(info, step, pooled)
    with output_dir(out_dir, force) as stage:
        binary = tgt.build(sources, stage)
        sizes = tgt.sizes(binary)
        graph.save(stage / "graph.esq")
        q.save(stage / "quantized.esq")
        write_input(stage / "golden" / "input.bin", x)
        estep, epooled = dequantize(info, step, pooled, exact=True)  # what IntCArtifact.run returns
        atomic_write_bytes(stage / "golden" / "expected.bin", encode_output(estep, epooled, state.astype(np.float32)))
        atomic_write_bytes(stage / "golden" / "expected_int.bin", encode_output(step, pooled, state, dtype="<i4"))
        verification = None
        if verify and tgt.can_run:
            res = tgt.run(binary, x, mode="step", state=True, qout=True)
            verification = compare_int((step, pooled, state), (res.step, res.pooled, res.state))
            resf = tgt.run(binary, x, mode="step")
            fl = compare_int(
                (fstep.view(np.int32), fpooled.view(np.int32)),
                (resf.step.view(np.int32), resf.pooled.view(np.int32)),
                names=("step", "pooled"),
            )
            verification["float_api"] = {"bit_exact": fl["bit_exact"], "mismatches": fl["mismatches"]}
            verification["mode"] = "step"
            verification["reference"] = "edgeseq.quant.intexact"
            if not (verification["bit_exact"] and fl["bit_exact"]):
                parts = {k: v for k, v in verification["parts"].items() if v.get("mismatches") or "shape_mismatch" in v}
                raise ToleranceError(
                    f"built binary differs from the integer-exact interpreter: {verification['mismatches']} of "
                    f"{verification['values']} integer values (max difference {verification['max_abs_diff']}; "
                    f"{parts}), {fl['mismatches']} float outputs",
                    where=f"target {tgt.name}",
                    hint="pass verify=False to keep the artifact for inspection",
                )
        rel_bin = binary.relative_to(stage).as_posix()
        script = stage / "run.sh"
        atomic_write_text(script, _run_script(tgt, rel_bin))
        os.chmod(script, 0o755)
        inf = dict(info)
        plan = dict(inf.pop("buffer_plan"))
        manifest = {
            "format": FORMAT,
            "edgeseq_version": __version__,
            "target": tgt.spec(),
            "toolchain": tgt.toolchain_versions(run=verify and tgt.can_run),
            "cflags": tgt.cflags(),
            "binary": rel_bin,
            **inf,
            "buffer_plan": {k: v for k, v in plan.items() if k not in ("scratch", "pooled")},
            "buffer_plan_detail": {"scratch": plan["scratch"], "pooled": plan["pooled"]},
            "sizes": sizes,
            "graph": {
                "file": "graph.esq",
                "nodes": len(graph.nodes),
                "params": graph.num_params(),
                "kinds": sorted({n.op.kind for n in graph.nodes}),
            },
            "quantized_graph": "quantized.esq",
            "quantization": {
                "config": getattr(getattr(q.plan, "config", None), "name", None),
                "program": prog.sizes(),
                "max_steps": prog.metadata.get("max_steps"),
            },
            "golden": {
                "input": "golden/input.bin",
                "expected": "golden/expected.bin",
                "expected_int": "golden/expected_int.bin",
                "shape": list(x.shape),
                "reference": "the integer-exact interpreter (edgeseq.quant.intexact)",
                "verification": verification,
            },
        }
        seal(stage, manifest)
    return IntCArtifact.load(out_dir)


def load_int_artifact(path) -> IntCArtifact:
    return IntCArtifact.load(Path(path))
