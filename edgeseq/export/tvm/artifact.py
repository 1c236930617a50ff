"""TVM artifacts on disk: ``export_tvm`` writes one, :class:`TvmArtifact` loads, runs and verifies it.

Layout of an artifact directory::

    model.so                    Relax VM executable (functions "main" and "stream"), x86-64 or aarch64
    graph.esq                   the IR graph the library was compiled from
    manifest.json               versions, target, calling convention, state spec, sha256 of every file
    golden/x.f32                golden input (raw little-endian float32, shape in the manifest)
    golden/y<i>.f32             reference-interpreter outputs for it (float64 -> float32)
    golden/state<i>.f32         reference final state, in state_spec order (checks "stream")
    kernels.py                  TVMScript source of every generated TIR kernel (for inspection)
    driver/edgeseq_tvm_run.cc   C++ program that runs model.so with the TVM runtime on a device

The directory is written atomically (:func:`edgeseq.util.fs.output_dir`): complete or absent.

Integer artifacts (``export_tvm_int`` in :mod:`.intexport`, from a quantized graph) use the same
layout with ``"numerics": "integer"`` in the manifest: the library also has ``main_int`` /
``stream_int`` (integer inputs and outputs), the state is the program's flat integer state,
``quantized.esq`` holds the quantized graph, and the golden vectors come from the integer-exact
interpreter (``golden/xq*.bin`` integer inputs, ``golden/q*.bin`` integer outputs,
``golden/y*.f32`` the dequantized outputs, ``golden/state*.bin`` the final state; every entry
records its dtype). :meth:`TvmArtifact.verify` then requires bit-exact equality.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..._version import __version__
from ...errors import ArtifactError, ToleranceError, UnsupportedOpError
from ...util.fs import atomic_write_bytes, atomic_write_text, check_output_dir, output_dir
from ..manifest import open_checked, seal
from .module import IntSignature, Signature, vm_caller

FORMAT = "edgeseq.tvm"
FORMAT_VERSION = 1
TOLERANCE = 1e-4
GOLDEN_SHAPE = (2, 20)  # (B, T) of the golden input


def _write_f32(root: Path, name: str, a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a, dtype="<f4")
    atomic_write_bytes(root / name, a.tobytes())
    return {"file": name, "shape": list(a.shape)}


def export_tvm(
    graph, out_dir, target: str = "x86", force: bool = False, *, cpu: str | None = None, golden_seed: int = 0
) -> "TvmArtifact":
    """Compile ``graph`` for ``target`` ("x86" | "arm") and write an artifact directory (see the
    module docstring). Golden vectors come from the float64 reference interpreter."""
    from ...ir.interpret import run as reference_run
    from . import compile_tvm

    out = check_output_dir(out_dir, force)
    window = graph.is_window  # whole windows: "main" only (a window graph cannot stream)
    module = compile_tvm(graph, target, cpu=cpu, functions=("main",) if window else ("main", "stream"))
    rng = np.random.default_rng(golden_seed)
    x = rng.standard_normal((*GOLDEN_SHAPE, graph.in_features)).astype(np.float32)
    ref_out, ref_state = reference_run(graph, x)
    sig = module.signature
    with output_dir(out, force) as stage:
        lib = module.export_library(stage / "model.so")
        graph.save(stage / "graph.esq")
        (stage / "golden").mkdir()
        golden = {
            "input": _write_f32(stage, "golden/x.f32", x),
            "outputs": [_write_f32(stage, f"golden/y{i}.f32", y) for i, y in enumerate(ref_out)],
            "state": []
            if window
            else [
                dict(key=k, **_write_f32(stage, f"golden/state{i}.f32", ref_state[k]))
                for i, k in enumerate(sig.state_spec)
            ],
            "source": "edgeseq.ir.interpret (float64), cast to float32",
            "tolerance": TOLERANCE,
        }
        atomic_write_text(
            stage / "kernels.py",
            "# TVMScript of the generated TIR kernels\n"
            "from tvm.script import tirx as T\n\n\n" + "\n\n".join(module.kernels.values()),
        )
        (stage / "driver").mkdir()
        from .runtime_arm import DRIVER_SRC

        shutil.copyfile(DRIVER_SRC, stage / "driver" / DRIVER_SRC.name)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "edgeseq_version": __version__,
            "tvm_version": importlib.metadata.version("apache-tvm"),
            "tvm_ffi_version": importlib.metadata.version("apache-tvm-ffi"),
            "target": module.target.describe(),
            "library": "model.so",
            "ir_graph": "graph.esq",
            "library_bytes": lib.stat().st_size,
            "functions": {
                "main": "main(x[B,T,F]) -> outputs (one tensor, or a tuple for several outputs)",
                **(
                    {"window": "a window graph: main runs whole windows; no stream function"}
                    if window
                    else {"stream": "stream(x[B,T,F], *state) -> (*outputs, *new_state); state in state_spec order"}
                ),
            },
            "signature": sig.to_json(),
            "symbolic_dims": ["B", "T"],
            "golden": golden,
            "kernels": list(module.kernels),
            "graph": {"nodes": [[n.name, n.op.kind] for n in graph.nodes], "num_params": graph.num_params()},
            "runtime": {"libraries": ["libtvm_runtime.so", "libtvm_ffi.so"], "driver": "driver/edgeseq_tvm_run.cc"},
        }
        seal(stage, manifest)
    return TvmArtifact.load(out)


def _max_diff(a, b) -> float:
    """Max abs difference (exact for integer arrays); inf when the shapes differ."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return float("inf")
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return float(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64)), initial=0))
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))


class TvmArtifact:
    """A TVM artifact directory (see the module docstring).

    ``run`` executes the library: in process for x86, under qemu-aarch64 for arm."""

    def __init__(self, path: Path, manifest: Mapping[str, Any]):
        self.path = Path(path)
        self.manifest = dict(manifest)
        self.numerics = manifest.get("numerics", "float32")
        if self.integer:
            self.signature = IntSignature.from_json(manifest["signature"])
        else:
            self.signature = Signature.from_json(manifest["signature"])
        self.target = manifest["target"]["name"]
        self._vm = None

    @classmethod
    def load(cls, path) -> "TvmArtifact":
        path = Path(path)
        return cls(path, open_checked(path, "tvm"))

    @property
    def integer(self) -> bool:
        """True for an integer artifact (a quantized graph's integer program)."""
        return self.numerics == "integer"

    @property
    def library(self) -> Path:
        return self.path / self.manifest["library"]

    def _check_host(self) -> None:
        """An x86 artifact runs in this process: same TVM minor version, and this CPU must have
        every feature of the CPU it was compiled for (else the library would die on SIGILL)."""
        import tvm
        from tvm.target import codegen

        built = self.manifest["tvm_version"].split(".")[:2]
        if tvm.__version__.split(".")[:2] != built:
            raise ArtifactError(
                f"built with TVM {self.manifest['tvm_version']}, this is TVM {tvm.__version__}",
                where=str(self.path),
                hint="re-export the artifact with this TVM",
            )
        spec = self.manifest["target"]["tvm_target"]
        need = set(codegen.llvm_get_cpu_features(tvm.target.Target(spec)))
        have = set(
            codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()}))
        )
        isa = {f for f in need - have if f.startswith(("avx", "sse", "fma", "f16c", "bmi", "amx"))}
        if isa:
            raise ArtifactError(
                f"compiled for CPU '{spec.get('mcpu')}'; this CPU lacks {', '.join(sorted(isa))}",
                where=str(self.path),
                hint="export with cpu='x86-64-v3' (AVX2) or 'x86-64'",
            )

    def _caller(self):
        if self.target == "x86":
            if self._vm is None:
                import tvm
                from tvm import relax

                self._check_host()
                self._vm = vm_caller(relax.VirtualMachine(tvm.runtime.load_module(str(self.library)), tvm.cpu()))
            return self._vm
        from .runtime_arm import run_qemu

        return lambda fn, args: run_qemu(self.library, fn, args)[0]

    def run(self, x, state: Mapping[str, np.ndarray] | None = None, *, streaming: bool | None = None):
        """``(y, new_state)``. ``streaming`` defaults to "a state was given": the "stream" function
        (state in, state out; zero state if None) or "main" (whole sequence, new_state None)."""
        streaming = state is not None if streaming is None else streaming
        if streaming and self.window:
            raise UnsupportedOpError(
                "this TVM artifact is a window graph: it runs on whole windows (no state in or out)",
                where=str(self.path),
                hint="run whole windows: run(x)",
            )
        return self.signature.run(self._caller(), x, state, streaming)

    @property
    def window(self) -> bool:
        """A window graph's artifact: "main" only, whole windows."""
        return "window" in self.manifest.get("functions", {})

    def run_int(self, xq, state: Mapping[str, np.ndarray] | None = None, *, streaming: bool | None = None):
        """Integer artifacts: ``(yq, new_state)`` for integer inputs (an array, or a dict of input
        parts), through "main_int" / "stream_int"; bit-exact with ``edgeseq.quant.intexact.run``."""
        if not self.integer:
            raise ArtifactError(
                "run_int needs an integer artifact (exported from a quantized graph)", where=str(self.path)
            )
        streaming = state is not None if streaming is None else streaming
        if streaming and self.window:
            raise UnsupportedOpError(
                "this TVM artifact is a window program: it runs on whole windows (no state in or out)",
                where=str(self.path),
                hint="run whole windows: run_int(xq)",
            )
        return self.signature.run_int(self._caller(), xq, state, streaming)

    def init_state(self, batch: int) -> dict[str, np.ndarray]:
        """The zero state for ``batch`` sequences (integer for integer artifacts)."""
        if self.integer:
            return self.signature.init_state(batch)
        return {k: np.zeros((batch, *s), np.float32) for k, s in self.signature.state_spec.items()}

    def _read(self, e: Mapping[str, Any]) -> np.ndarray:
        dt = np.dtype(e.get("dtype", "<f4"))
        return np.fromfile(self.path / e["file"], dtype=dt).reshape(e["shape"]).astype(dt.newbyteorder("="))

    def golden(self) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
        g = self.manifest["golden"]
        read = self._read
        return read(g["input"]), [read(e) for e in g["outputs"]], {e["key"]: read(e) for e in g["state"]}

    def golden_int(self) -> tuple[dict[str, np.ndarray], list[np.ndarray], dict[str, np.ndarray]]:
        """Integer artifacts: (integer input parts, integer outputs, final integer state)."""
        if not self.integer:
            raise ArtifactError("not an integer artifact", where=str(self.path))
        g = self.manifest["golden"]
        return (
            {e["vec"]: self._read(e) for e in g["int_inputs"]},
            [self._read(e) for e in g["int_outputs"]],
            {e["key"]: self._read(e) for e in g["state"]},
        )

    def verify(self, tolerance: float | None = None) -> dict[str, float]:
        """Run the golden input through "main" and "stream" (and, for integer artifacts,
        "main_int" / "stream_int"); max abs error per output and state. Raises ToleranceError
        when any exceeds ``tolerance`` (default: the manifest's; 0 for integer artifacts)."""
        tol = self.manifest["golden"]["tolerance"] if tolerance is None else tolerance
        x, ys, st = self.golden()
        errs: dict[str, float] = {}
        if self.integer:
            xq, qs, _ = self.golden_int()
            q1, _ = self.run_int(xq, streaming=False)
            runs = [("main_int", q1)]
            if not self.window:
                q2, st3 = self.run_int(xq, streaming=True)
                runs.append(("stream_int", q2))
            for tag, got in runs:
                got = got if isinstance(got, tuple) else (got,)
                for i, (a, b) in enumerate(zip(got, qs)):
                    errs[f"{tag}/out{i}"] = _max_diff(a, b)
            for k, ref in st.items():
                errs[f"stream_int/state/{k}"] = _max_diff(st3[k], ref)
        y, _ = self.run(x, streaming=False)
        y = y if isinstance(y, tuple) else (y,)
        for i, (a, b) in enumerate(zip(y, ys)):
            errs[f"main/out{i}"] = float(np.max(np.abs(a - b)))
        if not self.window:
            y2, st2 = self.run(x, streaming=True)
            y2 = y2 if isinstance(y2, tuple) else (y2,)
            for i, (a, b) in enumerate(zip(y2, ys)):
                errs[f"stream/out{i}"] = float(np.max(np.abs(a - b)))
            for k, ref in st.items():
                errs[f"stream/state/{k}"] = _max_diff(st2[k], ref)
        bad = {k: v for k, v in errs.items() if not v <= tol}
        if bad:
            worst = max(bad, key=bad.get)
            raise ToleranceError(
                f"{len(bad)} golden comparison(s) exceed {tol:g}; worst {worst} = {bad[worst]:.3g}",
                where=str(self.path),
            )
        return errs
