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
        return {"in_features": self.in_features,
                "outputs": [{"name": n, "features": f, "temporal": t} for n, f, t in self.outputs],
                "state_spec": {k: list(v) for k, v in self.state_spec.items()}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Signature":
        return cls(int(d["in_features"]), tuple((o["name"], int(o["features"]), bool(o["temporal"]))
                                                for o in d["outputs"]),
                   {k: tuple(int(s) for s in v) for k, v in d["state_spec"].items()})

    # -- argument checks (same contract as the reference interpreter) -------------------------
    def check_input(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 3:
            raise ShapeError(f"input must have shape (batch, time, features) = (B, T, {self.in_features}), "
                             f"got shape {x.shape}")
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
            raise ShapeError("state does not match the graph's state contract"
                             + (f"; missing: {', '.join(missing)}" if missing else "")
                             + (f"; unexpected: {', '.join(extra)}" if extra else ""))
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
                raise ConfigError("this module runs whole sequences from the zero state; it takes no state",
                                  where="tvm", hint="compile with streaming=True to pass state between chunks")
            y, new_state = call("main", [x]), None
        return (y[0] if n_out == 1 else tuple(y)), new_state


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
            raise ConfigError(f"this module was compiled without the '{fn}' function", where="tvm",
                              hint=f"compile_tvm(graph, streaming={streaming}) or functions=('main', 'stream')")
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
            raise ConfigError(f"a '{self.target.name}' module cannot run in this process", where="tvm",
                              hint="use run(), which goes through qemu, or export_tvm()")
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
