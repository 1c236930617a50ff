"""C artifacts: generated sources, the built binary or firmware, golden vectors, a manifest.

``export_c`` writes a directory atomically (nothing is left behind on failure)::

    manifest.json        target, toolchain versions, flags, sizes, buffer plan, state spec, outputs,
                         verification against the reference, sha256 of every file
    graph.esq            the IR graph the artifact was generated from
    src/                 model.h, model.c, main.c and the support files (startup, linker scripts, I/O)
    obj/                 object files (model.o gives the model's own code / weight bytes)
    bin/model[.elf]      the executable or firmware
    golden/input.bin     golden input (driver format), expected.bin: reference outputs and final state
    run.sh               one line: run the binary on its target (``./run.sh step golden/input.bin out.bin``)

``CArtifact.load(dir)`` checks the hashes and gives ``run(x)`` (outputs as numpy arrays, natively or
under QEMU) and ``cost(x)`` (instructions per inference / step, flash / RAM bytes, wall time).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..._version import __version__
from ...errors import ArtifactError, ConfigError, ShapeError, ToleranceError
from ...util.fs import atomic_write_bytes, atomic_write_text, check_output_dir, output_dir
from ..manifest import open_checked, seal
from .codegen import generate
from .cwriter import CSources

FORMAT = "edgeseq-c-artifact/1"


def reference_arrays(graph, info: Mapping[str, Any], x) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """The reference interpreter's outputs in the driver's layout: per-step (B, T, S), pooled
    (B, P), canonical final state (B, Z), plus the raw output tuple."""
    from ...ir.interpret import run

    x = np.asarray(x, dtype=np.float64)
    outs, state = run(graph, x)
    b, t = x.shape[:2]
    step = [o for o, d in zip(outs, info["outputs"]) if d["temporal"]]
    pooled = [o for o, d in zip(outs, info["outputs"]) if not d["temporal"]]
    step_a = np.concatenate(step, axis=2) if step else np.zeros((b, t, 0))
    pooled_a = np.concatenate(pooled, axis=1) if pooled else np.zeros((b, 0))
    st = [state[e["key"]].reshape(b, -1) for e in info["state_layout"]]
    state_a = np.concatenate(st, axis=1) if st else np.zeros((b, 0))
    return step_a, pooled_a, state_a, outs


def split_outputs(info: Mapping[str, Any], step: np.ndarray, pooled: np.ndarray) -> tuple[np.ndarray, ...]:
    """Driver layout -> one array per graph output, in graph order."""
    outs = []
    for d in info["outputs"]:
        a, o, n = (step, d["offset"], d["features"]) if d["temporal"] else (pooled, d["offset"], d["features"])
        outs.append(a[..., o : o + n])
    return tuple(outs)


def compare(info: Mapping[str, Any], graph, ref: tuple, got_step, got_pooled, ref_state=None, got_state=None) -> dict:
    """Max abs error over all outputs, spike mismatches on spiking outputs, and the state's max
    relative error (|diff| / max(1, |ref|))."""
    got = split_outputs(info, got_step, got_pooled)
    rep: dict[str, Any] = {"max_abs_error": 0.0, "per_output": {}, "spike_mismatches": 0}
    for d, r, g in zip(info["outputs"], ref, got):
        err = float(np.max(np.abs(np.asarray(r, dtype=np.float64) - g))) if r.size else 0.0
        entry = {"max_abs_error": err}
        if graph is not None and graph.type_of(d["name"]).spikes:
            mism = int(np.count_nonzero(np.asarray(r) != g))
            entry["spike_mismatches"] = mism
            entry["spikes"] = int(np.count_nonzero(g))
            rep["spike_mismatches"] += mism
        rep["per_output"][d["name"]] = entry
        rep["max_abs_error"] = max(rep["max_abs_error"], err)
    if ref_state is not None and got_state is not None and ref_state.size:
        rep["state_max_rel_error"] = float(np.max(np.abs(ref_state - got_state) / np.maximum(1.0, np.abs(ref_state))))
    return rep


def default_golden_input(graph, batch: int = 2, steps: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, steps, graph.in_features)) * 1.5).astype(np.float32)


_USAGE = (
    "# usage: run.sh [step|run|chunk:K|io] [input.bin] [output.bin]  (paths relative to the current "
    "directory; default input: this artifact's golden/input.bin)\n"
)


def _run_script(target, binary_rel: str) -> str:
    """The artifact's ``run.sh``. Every path is quoted. QEMU's semihosting arguments cannot carry a
    comma, and the firmware splits its command line at spaces, so on Cortex-M the script copies the
    firmware and the input into a fresh temporary directory and passes only the names ``in.bin`` and
    ``out.bin`` (any artifact, input or output path works, spaces and commas included)."""
    name = target.name
    q = shlex.quote
    if not target.can_run:
        return f"#!/bin/sh\necho {q(f'edgeseq target {name} only builds; no binary to run')} >&2\nexit 2\n"
    head = "#!/bin/sh\n" + _USAGE + 'd="$(cd -- "$(dirname -- "$0")" && pwd)"\n'
    if name == "x86":
        return head + f'exec "$d/"{q(binary_rel)} "${{1:-step}}" "${{2:-$d/golden/input.bin}}" "${{3:-output.bin}}"\n'
    if name == "arm":
        cpu = target.options.get("cpu")
        return head + (
            "exec qemu-aarch64 -L /usr/aarch64-linux-gnu"
            + (f" -cpu {q(str(cpu))}" if cpu else "")
            + f' "$d/"{q(binary_rel)} "${{1:-step}}" "${{2:-$d/golden/input.bin}}" "${{3:-output.bin}}"\n'
        )
    return (
        head
        + f"""mode="${{1:-step}}"
in="${{2:-$d/golden/input.bin}}"
out="${{3:-output.bin}}"
case "$mode" in
  ""|*[!a-z0-9:]*) echo "run.sh: mode must be step, run, chunk:K or io, got '$mode'" >&2; exit 2 ;;
esac
tmp="$(mktemp -d)" || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 143' INT TERM HUP
cp -- "$d/"{q(binary_rel)} "$tmp/firmware.elf" || exit 1
if [ -e "$in" ]; then cp -- "$in" "$tmp/in.bin" || exit 1; fi
(cd "$tmp" && qemu-system-arm -M {q(target.board.machine)} -nographic -monitor none -serial none \\
  -semihosting-config enable=on,target=native,arg=model,arg="$mode",arg=in.bin,arg=out.bin -kernel firmware.elf)
rc=$?
if [ -f "$tmp/out.bin" ]; then cp -- "$tmp/out.bin" "$out" || rc=1; fi
exit $rc
"""
    )


def export_c(
    graph,
    out_dir,
    target="arm",
    force: bool = False,
    golden_input=None,
    *,
    prefix: str = "esq",
    numerics: Mapping[str, str] | None = None,
    verify: bool = True,
    tolerance: float = 1e-4,
    target_options: Mapping[str, Any] | None = None,
    window_steps: int | None = None,
) -> "CArtifact":
    """Generate C for ``graph``, build it for ``target`` and write a complete artifact to ``out_dir``.

    ``golden_input`` (B, T, F) defaults to a seeded random batch; its reference outputs and final
    state become the golden vectors. With ``verify`` (and a target that can run) the built binary
    runs the golden input at export time and the export fails with ToleranceError if any output
    differs from the reference by more than ``tolerance``. ``numerics`` maps node names to a
    numeric format (float32 ``"f32"`` by default). A window graph becomes a whole-window model for
    windows of up to ``window_steps`` steps (default: 128, or the golden input's length if longer)."""
    from ...ir.graph import Graph
    from ...ir.interpret import check_input
    from ...targets import get_target
    from .windowops import DEFAULT_WINDOW_STEPS

    if not isinstance(graph, Graph):
        raise ShapeError(f"export_c needs an IR Graph, got {type(graph).__name__}")
    tgt = get_target(target, **dict(target_options or {}))
    tgt.check_toolchain(run=verify and tgt.can_run)
    check_output_dir(out_dir, force)
    tgt.precheck_graph(graph)
    x = default_golden_input(graph) if golden_input is None else np.asarray(golden_input)
    x = check_input(graph, x, "golden input").astype(np.float32)
    if window_steps is None and graph.is_window:  # a window model holds at least the golden window
        window_steps = max(DEFAULT_WINDOW_STEPS, x.shape[1])
    sources: CSources = generate(graph, prefix=prefix, numerics=numerics, target=tgt.name, window_steps=window_steps)
    tgt.precheck(sources.info)
    with output_dir(out_dir, force) as stage:
        binary = tgt.build(sources, stage)
        sizes = tgt.sizes(binary)
        graph.save(stage / "graph.esq")
        step, pooled, state, ref = reference_arrays(graph, sources.info, x)
        from ...targets.driver import encode_output, write_input

        write_input(stage / "golden" / "input.bin", x)
        atomic_write_bytes(stage / "golden" / "expected.bin", encode_output(step, pooled, state))
        verification = None
        if verify and tgt.can_run:
            res = tgt.run(binary, x, mode="step", state=True)
            verification = compare(sources.info, graph, ref, res.step, res.pooled, state, res.state)
            verification["tolerance"] = tolerance
            verification["mode"] = "step"
            if not verification["max_abs_error"] <= tolerance:
                raise ToleranceError(
                    f"built binary differs from the reference by {verification['max_abs_error']:.3g} "
                    f"(tolerance {tolerance:g}); spike mismatches: {verification['spike_mismatches']}",
                    where=f"target {tgt.name}",
                    hint="pass verify=False to keep the artifact for inspection",
                )
        rel_bin = binary.relative_to(stage).as_posix()
        script = stage / "run.sh"
        atomic_write_text(script, _run_script(tgt, rel_bin))
        os.chmod(script, 0o755)
        info = dict(sources.info)
        plan = dict(info.pop("buffer_plan"))
        manifest = {
            "format": FORMAT,
            "edgeseq_version": __version__,
            "target": tgt.spec(),
            "toolchain": tgt.toolchain_versions(run=verify and tgt.can_run),
            "cflags": tgt.cflags(),
            "binary": rel_bin,
            **info,
            "buffer_plan": {k: v for k, v in plan.items() if k not in ("scratch", "pooled")},
            "buffer_plan_detail": {"scratch": plan["scratch"], "pooled": plan["pooled"]},
            "sizes": sizes,
            "graph": {
                "file": "graph.esq",
                "nodes": len(graph.nodes),
                "params": graph.num_params(),
                "kinds": sorted({n.op.kind for n in graph.nodes}),
            },
            "golden": {
                "input": "golden/input.bin",
                "expected": "golden/expected.bin",
                "shape": list(x.shape),
                "verification": verification,
            },
        }
        seal(stage, manifest)
    return CArtifact.load(out_dir)


class CArtifact:
    """A built C artifact directory (see :func:`export_c`)."""

    NUMERICS = "float32"

    def __init__(self, path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        from ...targets import get_target

        spec = manifest["target"]
        self.target = get_target(spec["name"], **spec.get("options", {}))

    @classmethod
    def load(cls, path, check_hashes: bool = True) -> "CArtifact":
        """Open a C artifact; ``CArtifact.load`` gives an :class:`IntCArtifact` for an integer one."""
        path = Path(path)
        manifest = open_checked(path, "c", verify=check_hashes)
        if cls is CArtifact and manifest.get("numerics") == NUMERICS:
            cls = IntCArtifact
        return cls(path, manifest)

    # -- properties -------------------------------------------------------------------------------
    @property
    def binary(self) -> Path:
        return self.path / self.manifest["binary"]

    @property
    def sizes(self) -> dict:
        return self.manifest["sizes"]

    @property
    def graph(self):
        from ...ir.serialize import load

        return load(self.path / self.manifest["graph"]["file"])

    def _check(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[2] != self.manifest["in_features"]:
            raise ShapeError(f"input must have shape (B, T, {self.manifest['in_features']}), got {x.shape}")
        if x.shape[0] < 1 or x.shape[1] < 1:
            raise ShapeError(f"input needs at least one sequence and one step, got {x.shape}")
        if not np.all(np.isfinite(x)):
            from ...errors import NumericsError

            raise NumericsError("input contains NaN or Inf")
        return x.astype(np.float32)

    # -- running ----------------------------------------------------------------------------------
    def run(self, x, mode: str = "step", state: bool = False):
        """Run the built binary on ``x`` (B, T, F) on its target; returns one float32 array per
        graph output (graph order), and with ``state=True`` also the final state per state_spec key.
        Integer models: the binary's integer outputs dequantized as the integer-exact interpreter
        does (float64 q * scale, rounded to float32 once; the device's own float API multiplies in
        float32, see :mod:`edgeseq.export.c.intgen`)."""
        x = self._check(x)
        integer = self.manifest.get("numerics") == "integer"
        res = self.target.run(self.binary, x, mode=mode, state=state, qout=integer)
        if integer:  # the program's outputs, dequantized like the integer-exact interpreter's (q * scale)
            res.step, res.pooled = dequantize(self.manifest, res.step, res.pooled, exact=True)
            res.state = res.state.astype(np.float32)
        outs = split_outputs(self.manifest, res.step, res.pooled)
        if not state:
            return outs
        b = x.shape[0]
        st = {
            e["key"]: res.state[:, e["offset"] : e["offset"] + e["size"]].reshape((b, *e["shape"]))
            for e in self.manifest["state_layout"]
        }
        return outs, st

    def run_golden(self) -> dict:
        """Run the golden input and compare with the stored reference outputs."""
        from ...targets.driver import read_output

        x = read_golden_input(self.path / self.manifest["golden"]["input"])
        exp = read_output(self.path / self.manifest["golden"]["expected"])
        res = self.target.run(self.binary, x, mode="step", state=True)
        ref = split_outputs(self.manifest, exp["step"], exp["pooled"])
        return compare(self.manifest, None, ref, res.step, res.pooled, exp["state"], res.state)

    def cost(self, x, timing_repeats: int = 20, profile: bool = False) -> dict:
        """Instructions (total, per inference, per step; QEMU targets), flash / RAM bytes, and
        wall-time latency (native targets) on input ``x``; with ``profile`` (QEMU targets, models
        whose generator wrote a region map: the integer ones) also the instructions per step of
        every micro-op (``cost["profile"]``, see :func:`edgeseq.targets.profile.profile`)."""
        x = self._check(x)
        out = self.target.cost(self.binary, x, timing_repeats=timing_repeats)
        out["buffer_plan"] = self.manifest["buffer_plan"]
        out["weights_bytes"] = self.manifest["weights_bytes"]
        if profile and self.target.counts_instructions and self.manifest.get("profile_map"):
            out["profile"] = self.profile(x)
        return out

    def profile(self, x) -> dict:
        """Instructions per step and per micro-op on ``x`` (QEMU targets), measured on a debug-info
        build of the artifact's sources; its model code must be the artifact's, byte for byte."""
        from ...targets.profile import profile

        src = self.path / "src"
        files = {f: (src / f).read_text() for f in ("model.h", "model.c")}
        prof = profile(
            self.target,
            CSources(self.manifest["prefix"], files, dict(self.manifest)),
            self._check(x),
            reference_object=self.binary.parent.parent / "obj" / "model.o",
        )
        if not prof["same_code"]:
            raise ArtifactError(
                "the debug-info build of the model generated different code; its profile would "
                "not describe this artifact",
                where=str(self.path),
            )
        return prof

    def __repr__(self) -> str:
        return f"CArtifact({str(self.path)!r}, target={self.target.name})"


def read_golden_input(path) -> np.ndarray:
    import struct

    from ...targets.driver import IN_MAGIC

    raw = Path(path).read_bytes()
    magic, b, t, f = struct.unpack_from("<4I", raw, 0)
    if magic != IN_MAGIC or len(raw) != 16 + 4 * b * t * f:
        raise ArtifactError("golden input is corrupt", where=str(path))
    return np.frombuffer(raw, dtype="<f4", offset=16).reshape(b, t, f).copy()


__all__: Sequence[str] = ["CArtifact", "export_c", "reference_arrays", "split_outputs", "compare"]


# -- integer artifacts -------------------------------------------------------------------------------
NUMERICS = "integer"


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
            raise ShapeError(
                f"integer input '{s.vec}' must be an integer (B, T, {len(s.channels)}) array, got {a.dtype} {a.shape}"
            )
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
        out[s.vec] = xq[..., off : off + len(s.channels)]
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
        raise ShapeError(
            f"integer state must be a dict of the program's states or a (B, {info['state_floats']}) "
            f"integer array, got {a.dtype} {a.shape}"
        )
    return a


def _state_dict(info: Mapping, a: np.ndarray) -> dict[str, np.ndarray]:
    return {e["key"]: np.asarray(a[:, e["offset"] : e["offset"] + e["size"]], np.int64) for e in info["state_layout"]}


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
    return (
        step_a.astype(np.int64),
        pooled_a.astype(np.int64),
        state_a.astype(np.int64),
        tuple(by_name[d["name"]] for d in info["outputs"]),
    )


def dequantize(
    info: Mapping, step: np.ndarray, pooled: np.ndarray, *, exact: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Integer outputs (driver layout) -> float32. Default: as the C code's float API computes them,
    (float) q * (float) scale in float32 (onnxruntime's DequantizeLinear rounds the same way).
    ``exact``: q * scale rounded once to float32, exactly ``intexact.dequantize_outputs`` (what
    ``IntCArtifact.run`` returns)."""
    ft = np.float64 if exact else np.float32
    fs = np.zeros(step.shape, ft)
    fp = np.zeros(pooled.shape, ft)
    for d in info["outputs"]:
        sc = np.asarray(d["scales"], np.float64).astype(ft)
        o, n = d["offset"], d["features"]
        if d["temporal"]:
            fs[..., o : o + n] = step[..., o : o + n].astype(ft) * sc
        else:
            fp[..., o : o + n] = pooled[..., o : o + n].astype(ft) * sc
    return fs.astype(np.float32), fp.astype(np.float32)


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


class IntCArtifact(CArtifact):
    """A built integer C artifact (see :func:`export_c_int`). ``run`` / ``cost`` are those of the
    float C artifacts (float outputs = q * scale); ``run_int`` gives the integers."""

    NUMERICS = NUMERICS

    def __init__(self, path, manifest: dict):
        if manifest.get("numerics") != NUMERICS:
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
        res = self.target.run(self.binary, inp, mode=mode, state=state, qin=xq is not None, qout=True, init_state=init)
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
