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
from ...errors import ConfigError, ShapeError, ToleranceError
from ...util.fs import atomic_write_bytes, atomic_write_json, atomic_write_text, check_output_dir, output_dir, sha256_file
from .artifact import (FORMAT, CArtifact, _dequantize_exact, _run_script, default_golden_input, read_golden_input,
                       split_outputs)
from .intgen import generate_int, supported_micro_ops

NUMERICS = "integer"

__all__ = ["IntCArtifact", "export_c_int", "int_reference", "supported_micro_ops"]


def _quantized_input(prog, xq) -> np.ndarray:
    """The program's integer input (an array, or a dict of parts) in the C layout (B, T, IN_Q)."""
    if isinstance(xq, Mapping):
        missing = [s.vec for s in prog.inputs if s.vec not in xq]
        if missing:
            raise ShapeError(f"missing integer input part(s): {', '.join(missing)}")
        parts = [np.asarray(xq[s.vec]) for s in prog.inputs]
    else:
        parts = [np.asarray(xq)]
        if len(prog.inputs) != 1:
            a = parts[0]
            want = sum(len(s.channels) for s in prog.inputs)
            if a.ndim == 3 and a.shape[2] == want:
                return a.astype(np.int64)
            raise ShapeError(f"the program has {len(prog.inputs)} input parts; pass a dict or a (B, T, {want}) array")
    for s, a in zip(prog.inputs, parts):
        if a.ndim != 3 or a.shape[2] != len(s.channels) or a.dtype.kind not in "iu":
            raise ShapeError(f"integer input '{s.vec}' must be an integer (B, T, {len(s.channels)}) array, got "
                             f"{a.dtype} {a.shape}")
        lo, hi = -(1 << (s.bits - 1)), (1 << (s.bits - 1)) - 1
        if a.size and (int(a.min()) < lo or int(a.max()) > hi):
            from ...errors import NumericsError

            raise NumericsError(f"integer input '{s.vec}' has values outside int{s.bits}")
    return np.concatenate([a.astype(np.int64) for a in parts], axis=2)


def _split_input(prog, xq: np.ndarray):
    """C layout (B, T, IN_Q) -> what intexact.run takes."""
    if len(prog.inputs) == 1:
        return xq
    out, off = {}, 0
    for s in prog.inputs:
        out[s.vec] = xq[..., off:off + len(s.channels)]
        off += len(s.channels)
    return out


def _state_array(info: Mapping, state, batch: int) -> np.ndarray:
    """An integer state (dict key -> (B, n), as intexact returns it, or a (B, Z) array) -> (B, Z)."""
    if isinstance(state, Mapping):
        rows = []
        for e in info["state_layout"]:
            if e["key"] not in state:
                raise ShapeError(f"initial state lacks '{e['key']}'")
            rows.append(np.asarray(state[e["key"]]).reshape(batch, e["size"]))
        a = np.concatenate(rows, axis=1) if rows else np.zeros((batch, 0), np.int64)
    else:
        a = np.asarray(state)
    if a.shape != (batch, info["state_floats"]) or a.dtype.kind not in "iu":
        raise ShapeError(f"integer state must be a dict of the program's states or a (B, {info['state_floats']}) "
                         f"integer array, got {a.dtype} {a.shape}")
    return a


def _state_dict(info: Mapping, a: np.ndarray) -> dict[str, np.ndarray]:
    return {e["key"]: np.asarray(a[:, e["offset"]:e["offset"] + e["size"]], np.int64) for e in info["state_layout"]}


def int_reference(prog, info: Mapping, xq: np.ndarray, state=None):
    """The integer-exact interpreter on ``xq`` (C layout) in the driver's layout: per-step
    (B, T, S), pooled (B, P), canonical state (B, Z), all int64, plus the raw outputs tuple."""
    from ...quant import intexact

    b, t = xq.shape[:2]
    st = None if state is None else _state_dict(info, _state_array(info, state, b))
    outs, new_state = intexact.run(prog, _split_input(prog, xq), st)
    by_name = {o.name: q for o, q in zip(prog.outputs, outs)}
    step = [by_name[d["name"]] for d in info["outputs"] if d["temporal"]]
    pooled = [by_name[d["name"]] for d in info["outputs"] if not d["temporal"]]
    step_a = np.concatenate(step, axis=2) if step else np.zeros((b, t, 0), np.int64)
    pooled_a = np.concatenate(pooled, axis=1) if pooled else np.zeros((b, 0), np.int64)
    state_a = _state_array(info, new_state, b)
    return step_a.astype(np.int64), pooled_a.astype(np.int64), state_a.astype(np.int64), \
        tuple(by_name[d["name"]] for d in info["outputs"])


def dequantize(info: Mapping, step: np.ndarray, pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer outputs (driver layout) -> float32 exactly as the C code computes them:
    (float) q * (float) scale in float32 (onnxruntime's DequantizeLinear rounds the same way)."""
    fs = np.zeros(step.shape, np.float32)
    fp = np.zeros(pooled.shape, np.float32)
    for d in info["outputs"]:
        sc = np.asarray(d["scales"], np.float64).astype(np.float32)
        o, n = d["offset"], d["features"]
        if d["temporal"]:
            fs[..., o:o + n] = step[..., o:o + n].astype(np.float32) * sc
        else:
            fp[..., o:o + n] = pooled[..., o:o + n].astype(np.float32) * sc
    return fs, fp


def compare_int(ref: tuple[np.ndarray, ...], got: tuple[np.ndarray, ...], names=("step", "pooled", "state")) -> dict:
    """Exact comparison: mismatching values per part and the largest difference."""
    rep: dict[str, Any] = {"mismatches": 0, "values": 0, "max_abs_diff": 0, "parts": {}}
    for name, r, g in zip(names, ref, got):
        r, g = np.asarray(r), np.asarray(g)
        if r.shape != g.shape:
            rep["parts"][name] = {"shape_mismatch": [list(r.shape), list(g.shape)]}
            rep["mismatches"] += max(r.size, g.size, 1)
            continue
        bad = r != g
        n = int(np.count_nonzero(bad))
        d = int(np.max(np.abs(r.astype(np.int64) - g.astype(np.int64)))) if r.size else 0
        part = {"mismatches": n, "values": int(r.size), "max_abs_diff": d}
        if n:
            part["first"] = [int(v) for v in np.argwhere(bad)[0]]
        rep["parts"][name] = part
        rep["mismatches"] += n
        rep["values"] += int(r.size)
        rep["max_abs_diff"] = max(rep["max_abs_diff"], d)
    rep["bit_exact"] = rep["mismatches"] == 0
    return rep


def _is_quantized(q) -> bool:
    return hasattr(q, "program") and hasattr(q, "graph") and hasattr(q, "quantize_input")


def export_c_int(q, out_dir, target="arm", force: bool = False, golden_input=None,
                 target_options: Optional[Mapping[str, Any]] = None, prefix: str = "esq",
                 verify: bool = True) -> "IntCArtifact":
    """Generate C for the integer program of the quantized graph ``q``, build it for ``target``
    (``x86``, ``arm`` / ``arm:cortex-a72``, ``cortex-m4`` / ``-m7`` / ``-m55``, ``null``) and write a
    complete artifact to ``out_dir`` (atomically; an existing directory only with ``force``).

    ``golden_input`` (B, T, F) float defaults to a seeded random batch; the integer-exact
    interpreter's outputs on it are the golden vectors. With ``verify`` (and a target that runs)
    the built binary runs the golden input at export time, once on the integer API and once on
    the float API, and the export fails with ToleranceError unless every integer output and
    state value is identical and the float outputs equal the dequantized reference exactly."""
    from ...ir.interpret import check_input
    from ...targets import get_target
    from ...targets.driver import encode_output, write_input

    if not _is_quantized(q):
        raise ConfigError(f"export_c_int needs a quantized graph (edgeseq.quant.quantize), got {type(q).__name__}",
                          hint="for a float graph use edgeseq.export.c.export_c")
    prog, graph = q.program, q.graph
    tgt = get_target(target, **dict(target_options or {}))
    tgt.check_toolchain(run=verify and tgt.can_run)
    check_output_dir(out_dir, force)
    x = default_golden_input(graph) if golden_input is None else np.asarray(golden_input)
    x = check_input(graph, x, "golden input").astype(np.float32)
    sources = generate_int(prog, graph.in_features, prefix=prefix, target=tgt.name, order=list(graph.outputs))
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
        estep, epooled = _dequantize_exact(info, step, pooled)  # what IntCArtifact.run returns
        atomic_write_bytes(stage / "golden" / "expected.bin", encode_output(estep, epooled, state.astype(np.float32)))
        atomic_write_bytes(stage / "golden" / "expected_int.bin", encode_output(step, pooled, state, dtype="<i4"))
        verification = None
        if verify and tgt.can_run:
            res = tgt.run(binary, x, mode="step", state=True, qout=True)
            verification = compare_int((step, pooled, state), (res.step, res.pooled, res.state))
            resf = tgt.run(binary, x, mode="step")
            fl = compare_int((fstep.view(np.int32), fpooled.view(np.int32)),
                             (resf.step.view(np.int32), resf.pooled.view(np.int32)), names=("step", "pooled"))
            verification["float_api"] = {"bit_exact": fl["bit_exact"], "mismatches": fl["mismatches"]}
            verification["mode"] = "step"
            verification["reference"] = "edgeseq.quant.intexact"
            if not (verification["bit_exact"] and fl["bit_exact"]):
                parts = {k: v for k, v in verification["parts"].items() if v.get("mismatches") or "shape_mismatch" in v}
                raise ToleranceError(
                    f"built binary differs from the integer-exact interpreter: {verification['mismatches']} of "
                    f"{verification['values']} integer values (max difference {verification['max_abs_diff']}; "
                    f"{parts}), {fl['mismatches']} float outputs",
                    where=f"target {tgt.name}", hint="pass verify=False to keep the artifact for inspection")
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
            "graph": {"file": "graph.esq", "nodes": len(graph.nodes), "params": graph.num_params(),
                      "kinds": sorted({n.op.kind for n in graph.nodes})},
            "quantized_graph": "quantized.esq",
            "quantization": {"config": getattr(getattr(q.plan, "config", None), "name", None),
                             "program": prog.sizes(), "max_steps": prog.metadata.get("max_steps")},
            "golden": {"input": "golden/input.bin", "expected": "golden/expected.bin",
                       "expected_int": "golden/expected_int.bin", "shape": list(x.shape),
                       "reference": "the integer-exact interpreter (edgeseq.quant.intexact)",
                       "verification": verification},
        }
        manifest["files"] = {p.relative_to(stage).as_posix(): sha256_file(p)
                             for p in sorted(stage.rglob("*")) if p.is_file()}
        atomic_write_json(stage / "manifest.json", manifest)
    return IntCArtifact.load(out_dir)


class IntCArtifact(CArtifact):
    """A built integer C artifact (see :func:`export_c_int`). ``run`` / ``cost`` are those of the
    float C artifacts (float outputs = q * scale); ``run_int`` gives the integers."""

    def __init__(self, path, manifest: dict):
        if manifest.get("numerics") != NUMERICS:
            from ...errors import ArtifactError

            raise ArtifactError("not an integer C artifact (manifest numerics is not 'integer')", where=str(path))
        super().__init__(path, manifest)

    @property
    def quantized(self):
        from ...quant import load_quantized

        if not hasattr(self, "_q"):
            self._q = load_quantized(self.path / self.manifest["quantized_graph"])
        return self._q

    @property
    def program(self):
        return self.quantized.program

    def quantize_input(self, x) -> np.ndarray:
        """Float (B, T, F) -> the program's integer input in the C layout (B, T, IN_Q)."""
        return _quantized_input(self.program, self.quantized.quantize_input(self._check(x)))

    def run_int(self, x=None, *, xq=None, mode: str = "step", state: bool = False, init_state=None):
        """Integer outputs (one int64 array per output, graph order: (B, T, n) per step, (B, n)
        pooled) of the built binary, from float input ``x`` (quantized by the model's own boundary
        code) or integer input ``xq`` (the program's quantized input: an array or a dict of
        parts). ``init_state`` (a dict like intexact's state, or (B, Z)) continues sequences;
        with ``state=True`` also returns the final integer state (dict key -> (B, n))."""
        if (x is None) == (xq is None):
            raise ConfigError("run_int takes exactly one of x (float input) or xq (integer input)")
        if xq is not None:
            inp = _quantized_input(self.program, xq)
            if inp.shape[0] < 1 or inp.shape[1] < 1:
                raise ShapeError(f"input needs at least one sequence and one step, got {inp.shape}")
        else:
            inp = self._check(x)
        init = None if init_state is None else _state_array(self.manifest, init_state, inp.shape[0])
        res = self.target.run(self.binary, inp, mode=mode, state=state, qin=xq is not None, qout=True,
                              init_state=init)
        outs = split_outputs(self.manifest, res.step, res.pooled)
        if not state:
            return outs
        return outs, _state_dict(self.manifest, res.state)

    def run_golden(self) -> dict:
        """Run the golden input on the integer API and compare with the stored integers exactly."""
        from ...targets.driver import read_output

        x = read_golden_input(self.path / self.manifest["golden"]["input"])
        exp = read_output(self.path / self.manifest["golden"]["expected_int"], dtype="<i4")
        res = self.target.run(self.binary, x, mode="step", state=True, qout=True)
        return compare_int((exp["step"], exp["pooled"], exp["state"]), (res.step, res.pooled, res.state))

    def __repr__(self) -> str:
        return f"IntCArtifact({str(self.path)!r}, target={self.target.name})"


def load_int_artifact(path) -> IntCArtifact:
    return IntCArtifact.load(Path(path))
