"""Compiled graphs: :class:`TvmModule` (in memory) and the calling convention shared with artifacts.

Calling convention of the compiled Relax functions (all tensors float32, batch-first):

- ``main(x)`` -> the graph output, or a tuple of outputs;
- ``stream(x, *state)`` -> ``(*outputs, *new_state)``, state in ``graph.state_spec()`` order.

``run(x, state=None)`` returns ``(y, new_state)`` like :func:`edgeseq.ir.interpret.reference`:
``y`` is one array (or a tuple for several outputs); ``new_state`` maps ``"<node>/<state>"`` to
(B, ...) float32 arrays for a streaming module and is None for a whole-sequence module.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ...errors import ConfigError, NumericsError, ShapeError

Caller = Callable[[str, Sequence[np.ndarray]], list]


@dataclass(frozen=True)
class Signature:
    """What a compiled graph takes and returns (enough to call it without the IR graph)."""

    in_features: int
    outputs: tuple[tuple[str, int, bool], ...]  # (name, features, temporal)
    state_spec: dict = field(default_factory=dict)  # key -> per-example shape, in order

    @classmethod
    def from_graph(cls, graph) -> "Signature":
        outs = tuple((o, t.features, t.temporal) for o, t in zip(graph.outputs, graph.output_types))
        return cls(graph.in_features, outs, {k: tuple(v) for k, v in graph.state_spec().items()})

    def to_json(self) -> dict:
        return {
            "in_features": self.in_features,
            "outputs": [{"name": n, "features": f, "temporal": t} for n, f, t in self.outputs],
            "state_spec": {k: list(v) for k, v in self.state_spec.items()},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Signature":
        return cls(
            int(d["in_features"]),
            tuple((o["name"], int(o["features"]), bool(o["temporal"])) for o in d["outputs"]),
            {k: tuple(int(s) for s in v) for k, v in d["state_spec"].items()},
        )

    # -- argument checks (same contract as the reference interpreter) -------------------------
    def check_input(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 3:
            raise ShapeError(
                f"input must have shape (batch, time, features) = (B, T, {self.in_features}), got shape {x.shape}"
            )
        if x.shape[2] != self.in_features:
            raise ShapeError(f"input has {x.shape[2]} features per step; the model expects {self.in_features}")
        if x.shape[0] < 1 or x.shape[1] < 1:
            raise ShapeError(f"input needs at least one sequence and one time step, got shape {x.shape}")
        if x.dtype.kind not in "fiub":
            raise ShapeError(f"input must be numeric, got dtype {x.dtype}")
        if not np.all(np.isfinite(x)):
            raise NumericsError("input contains NaN or Inf")
        return np.ascontiguousarray(x, dtype=np.float32)

    def check_state(self, state: Mapping[str, np.ndarray] | None, batch: int) -> list[np.ndarray]:
        if state is None:
            return [np.zeros((batch, *s), dtype=np.float32) for s in self.state_spec.values()]
        missing = sorted(set(self.state_spec) - set(state))
        extra = sorted(set(state) - set(self.state_spec))
        if missing or extra:
            raise ShapeError(
                "state does not match the graph's state contract"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; unexpected: {', '.join(extra)}" if extra else "")
            )
        out = []
        for k, shape in self.state_spec.items():
            a = np.asarray(state[k])
            if a.shape != (batch, *shape):
                raise ShapeError(f"state '{k}' must have shape {(batch, *shape)}, got {a.shape}")
            out.append(np.ascontiguousarray(a, dtype=np.float32))
        return out

    def run(self, call: Caller, x, state, streaming: bool):
        x = self.check_input(x)
        n_out = len(self.outputs)
        if streaming:
            args = [x, *self.check_state(state, x.shape[0])]
            outs = call("stream", args)
            y, rest = outs[:n_out], outs[n_out:]
            new_state = dict(zip(self.state_spec, rest))
        else:
            if state is not None:
                raise ConfigError(
                    "this module runs whole sequences from the zero state; it takes no state",
                    where="tvm",
                    hint="compile with streaming=True to pass state between chunks",
                )
            y, new_state = call("main", [x]), None
        return (y[0] if n_out == 1 else tuple(y)), new_state


NUMERICS = "integer"  # manifest numerics of an integer library


@dataclass(frozen=True)
class IntSignature:
    """What an integer library takes and returns (enough to call it without the program)."""

    in_features: int
    inputs: tuple[tuple[str, int, int], ...]  # (vec, n, bits)
    outputs: tuple[tuple[str, str, int, bool, int, tuple], ...]  # (name, vec, n, temporal, bits, scale)
    states: tuple[tuple[str, int, int, tuple], ...]  # (key, n, bits, shape)

    @classmethod
    def from_program(cls, prog, in_features: int) -> "IntSignature":
        return cls(
            int(in_features),
            tuple((s.vec, len(s.channels), int(s.bits)) for s in prog.inputs),
            tuple(
                (
                    o.name,
                    o.vec,
                    prog.vectors[o.vec].n,
                    bool(o.temporal),
                    prog.vectors[o.vec].bits,
                    tuple(float(v) for v in np.ravel(o.scale)),
                )
                for o in prog.outputs
            ),
            tuple((k, s.n, int(s.bits), tuple(int(d) for d in s.shape)) for k, s in prog.states.items()),
        )

    def to_json(self) -> dict:
        from .intgen import sdt

        return {
            "kind": NUMERICS,
            "in_features": self.in_features,
            "inputs": [{"vec": v, "n": n, "bits": b, "dtype": sdt(b)} for v, n, b in self.inputs],
            "outputs": [
                {"name": nm, "vec": v, "features": n, "temporal": t, "bits": b, "dtype": sdt(b), "scale": list(sc)}
                for nm, v, n, t, b, sc in self.outputs
            ],
            "states": [
                {"key": k, "n": n, "bits": b, "dtype": sdt(b), "shape": list(shp)} for k, n, b, shp in self.states
            ],
            "state_spec": {k: [n] for k, n, _, _ in self.states},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "IntSignature":
        return cls(
            int(d["in_features"]),
            tuple((i["vec"], int(i["n"]), int(i["bits"])) for i in d["inputs"]),
            tuple(
                (
                    o["name"],
                    o["vec"],
                    int(o["features"]),
                    bool(o["temporal"]),
                    int(o["bits"]),
                    tuple(float(v) for v in o["scale"]),
                )
                for o in d["outputs"]
            ),
            tuple((s["key"], int(s["n"]), int(s["bits"]), tuple(int(v) for v in s["shape"])) for s in d["states"]),
        )

    # -- views shared with the float Signature -----------------------------------------------------
    @property
    def state_spec(self) -> dict[str, tuple[int, ...]]:
        """State key -> per-example shape of the flat integer state, (n,)."""
        return {k: (n,) for k, n, _, _ in self.states}

    @property
    def state_dtypes(self) -> dict[str, np.dtype]:
        from .intgen import sdt

        return {k: np.dtype(sdt(b)) for k, _, b, _ in self.states}

    def init_state(self, batch: int) -> dict[str, np.ndarray]:
        return {k: np.zeros((batch, n), dt) for (k, n, _, _), dt in zip(self.states, self.state_dtypes.values())}

    # -- argument checks ---------------------------------------------------------------------------
    def check_input(self, x) -> np.ndarray:
        return Signature(self.in_features, (), {}).check_input(x)

    def check_int_inputs(self, xq) -> list[np.ndarray]:
        from ...quant.program import int_range
        from .intgen import sdt

        if isinstance(xq, Mapping):
            d = dict(xq)
        else:
            if len(self.inputs) != 1:
                raise ShapeError(
                    f"the program has {len(self.inputs)} integer input parts; pass a dict "
                    f"{{{', '.join(v for v, _, _ in self.inputs)}}}"
                )
            d = {self.inputs[0][0]: xq}
        out, shape = [], None
        for vec, n, bits in self.inputs:
            if vec not in d:
                raise ShapeError(f"missing integer input part '{vec}'")
            a = np.asarray(d[vec])
            if a.ndim != 3 or a.shape[2] != n:
                raise ShapeError(f"integer input '{vec}' must be (B, T, {n}), got shape {a.shape}")
            if a.dtype.kind not in "iu":
                raise ShapeError(f"integer input '{vec}' must have an integer dtype, got {a.dtype}")
            if a.shape[0] < 1 or a.shape[1] < 1:
                raise ShapeError(f"integer input needs at least one sequence and one step, got {a.shape}")
            lo, hi = int_range(bits)
            if int(a.min()) < lo or int(a.max()) > hi:
                raise NumericsError(f"integer input '{vec}' has values outside int{bits}")
            if shape is not None and a.shape[:2] != shape:
                raise ShapeError("integer input parts differ in batch or length")
            shape = a.shape[:2]
            out.append(np.ascontiguousarray(a, dtype=sdt(bits)))
        return out

    def check_state(self, state: Mapping[str, np.ndarray] | None, batch: int) -> list[np.ndarray]:
        from ...quant.program import int_range

        if state is None:
            return list(self.init_state(batch).values())
        keys = [k for k, _, _, _ in self.states]
        missing, extra = sorted(set(keys) - set(state)), sorted(set(state) - set(keys))
        if missing or extra:
            raise ShapeError(
                "integer state does not match the program's states"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; unexpected: {', '.join(extra)}" if extra else "")
            )
        out = []
        for (k, n, bits, _), dt in zip(self.states, self.state_dtypes.values()):
            a = np.asarray(state[k])
            if a.ndim >= 2 and a.shape[0] == batch and int(np.prod(a.shape[1:])) == n:
                a = a.reshape(batch, n)
            if a.shape != (batch, n) or a.dtype.kind not in "iuf":
                raise ShapeError(f"integer state '{k}' must have shape {(batch, n)}, got {a.dtype} {a.shape}")
            if a.dtype.kind == "f":
                if not np.all(np.isfinite(a)) or not np.array_equal(a, np.rint(a)):
                    raise NumericsError(f"state '{k}' must hold integers (the integer state of the program)")
            lo, hi = int_range(bits)
            if a.size and (a.min() < lo or a.max() > hi):
                raise NumericsError(f"integer state '{k}' has values outside int{bits}")
            out.append(np.ascontiguousarray(a.astype(dt)))
        return out

    # -- calls -------------------------------------------------------------------------------------
    def _call(self, call, fn, args):
        try:
            return call(fn, args)
        except Exception as e:  # a failed run-time check in a kernel (div / isqrt operands)
            from .intgen import ASSERT_PREFIX

            msg = str(e)
            if ASSERT_PREFIX in msg:
                detail = msg[msg.index(ASSERT_PREFIX) + len(ASSERT_PREFIX) :].strip().splitlines()[0]
                raise NumericsError(detail, where="tvm integer kernel") from None
            raise

    def _finish(self, outs, streaming, batch):
        n_out = len(self.outputs)
        y, rest = outs[:n_out], outs[n_out:]
        new_state = dict(zip((k for k, _, _, _ in self.states), rest)) if streaming else None
        return (y[0] if n_out == 1 else tuple(y)), new_state

    def run(self, call, x, state, streaming: bool):
        """Float input -> dequantized float32 outputs (and the integer state when streaming)."""
        x = self.check_input(x)
        if streaming:
            outs = self._call(call, "stream", [x, *self.check_state(state, x.shape[0])])
        else:
            if state is not None:
                raise ConfigError(
                    "'main' runs whole sequences from the zero state; it takes no state",
                    where="tvm",
                    hint="use streaming=True to pass the integer state between chunks",
                )
            outs = self._call(call, "main", [x])
        return self._finish(outs, streaming, x.shape[0])

    def run_int(self, call, xq, state, streaming: bool):
        """Integer input parts -> integer outputs (storage types) and state."""
        parts = self.check_int_inputs(xq)
        if streaming:
            outs = self._call(call, "stream_int", [*parts, *self.check_state(state, parts[0].shape[0])])
        else:
            if state is not None:
                raise ConfigError(
                    "'main_int' runs whole sequences from the zero state; it takes no state",
                    where="tvm",
                    hint="use streaming=True",
                )
            outs = self._call(call, "main_int", parts)
        return self._finish(outs, streaming, parts[0].shape[0])


# ----------------------------------------------------------------------------------------------
# lowering to Relax


def vm_caller(vm) -> Caller:
    """Call functions of an in-process Relax VM with numpy arrays."""
    import tvm

    fns: dict = {}

    def call(fn: str, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        if fn not in fns:
            fns[fn] = vm[fn]
        res = fns[fn](*[tvm.runtime.tensor(a) for a in args])
        items = [res] if isinstance(res, tvm.runtime.Tensor) else list(res)
        return [r.numpy() for r in items]

    return call


class TvmModule:
    """A graph compiled by TVM.

    For target ``x86`` it runs in this process in the Relax VM; for ``arm`` :meth:`run` exports the
    aarch64 library to a temporary directory and runs it under qemu-aarch64 (see
    :mod:`.runtime_arm`). ``streaming=True`` modules take and return the explicit state."""

    def __init__(self, graph, target, streaming: bool, lowered, executable):
        self.graph = graph
        self.target = target
        self.streaming = streaming
        self.lowered = lowered
        self.executable = executable
        self.signature = Signature.from_graph(graph)
        self._vm = None
        self._call: Caller | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    def with_streaming(self, streaming: bool) -> "TvmModule":
        """The same compiled module called as whole-sequence (False) or streaming (True); the
        corresponding function must have been compiled (``compile_tvm(..., functions=...)``)."""
        fn = "stream" if streaming else "main"
        if fn not in self.lowered.functions:
            raise ConfigError(
                f"this module was compiled without the '{fn}' function",
                where="tvm",
                hint=f"compile_tvm(graph, streaming={streaming}) or functions=('main', 'stream')",
            )
        view = TvmModule(self.graph, self.target, streaming, self.lowered, self.executable)
        view._vm, view._call = self._vm, self._call
        return view

    @property
    def kernels(self) -> dict[str, str]:
        """TVMScript source of every generated PrimFunc, by name."""
        return dict(self.lowered.kernels)

    @property
    def vm(self):
        if self.target.name != "x86":
            raise ConfigError(
                f"a '{self.target.name}' module cannot run in this process",
                where="tvm",
                hint="use run(), which goes through qemu, or export_tvm()",
            )
        if self._vm is None:
            import tvm
            from tvm import relax

            self._vm = relax.VirtualMachine(self.executable, tvm.cpu())
        return self._vm

    def run(self, x, state: Mapping[str, np.ndarray] | None = None):
        """``(y, new_state)`` for ``x`` (B, T, F); see the module docstring."""
        if self.target.name == "x86":
            if self._call is None:
                self._call = vm_caller(self.vm)
            return self.signature.run(self._call, x, state, self.streaming)
        from .runtime_arm import run_qemu

        lib = self._exported()

        def call(fn, args):
            return run_qemu(lib, fn, args)[0]

        return self.signature.run(call, x, state, self.streaming)

    def _exported(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="edgeseq-tvm-")
            self.export_library(Path(self._tmp.name) / "model.so")
        return Path(self._tmp.name) / "model.so"

    def export_library(self, path) -> Path:
        """Write the compiled module as a shared library (cross-compiled for ``arm``)."""
        from .build import export_library

        return export_library(self.executable, self.target, Path(path))

    def time(self, x, number: int = 10, repeat: int = 7) -> float:
        """Median seconds per call of the compiled function on ``x`` (x86, in process)."""
        import tvm

        fn = "stream" if self.streaming else "main"
        x = self.signature.check_input(x)
        args = [x] + (self.signature.check_state(None, x.shape[0]) if self.streaming else [])
        ev = self.vm.time_evaluator(fn, tvm.cpu(), number=number, repeat=repeat)
        return float(ev(*[tvm.runtime.tensor(a) for a in args]).median)
