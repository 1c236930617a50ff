"""Loading any artifact directory the export stages write, behind one interface.

``open_artifact(dir)`` reads ``manifest.json``, detects the exporter from its ``format`` field
(``edgeseq-onnx``, ``edgeseq.tvm``, ``edgeseq-c-artifact/1``, ``edgeseq-bundle/1``), checks every
file against the manifest's sha256 (reported, not raised, so a modified artifact can still be run
and diagnosed), loads the IR graph the artifact was exported from (``graph.esq``) and returns an
:class:`Artifact` that runs inputs on the artifact's own runner:

=========  =================  ===========================================================
kind       target             runner                                         cost measure
=========  =================  ===========================================================
onnx       onnxruntime-cpu    onnxruntime in this process                    wall time
tvm        x86                Relax VM in this process                       wall time
tvm        arm                aarch64 TVM runtime under qemu-aarch64         instructions (QEMU plugin)
c          x86                the built binary                               wall time (in-driver clock)
c          arm, cortex-m*     qemu-aarch64 / qemu-system-arm                 instructions (QEMU plugin)
bundle     x86, arm           its parts (``tvm/`` and ``c/``), each as above
=========  =================  ===========================================================

(``edgeseq export --target x86|arm`` writes a bundle: ``edgeseq-bundle/1`` with a TVM library and a
static C executable as parts.)

Integer artifacts (a quantized graph's integer program; manifest ``numerics`` "integer", or "qdq"
for the ONNX QDQ form) have the same kinds and runners; they also store the quantized graph
(``quantized.esq``, :meth:`Artifact.quantized`) and the quantisation step of each output
(:meth:`Artifact.output_scales`), and a QDQ manifest declares its tolerance in LSBs
(:meth:`Artifact.declared_lsb`).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..errors import ArtifactError, ConfigError, EdgeseqError
from ..export.manifest import FORMATS, detect_kind, file_problems, golden_file, integrity_table, read_checked
from ..util.safeio import read_npy
from .tolerance import NumberFormat, format_of


def _percentiles(samples: list[float]) -> dict:
    a = np.asarray(samples, dtype=np.float64)
    return {
        "p50_s": float(np.percentile(a, 50)),
        "p99_s": float(np.percentile(a, 99)),
        "mean_s": float(a.mean()),
        "n": int(a.size),
    }


def _timed(fn: Callable[[], Any], repeats: int, warmup: int = 2, budget_s: float = 2.0) -> list[float]:
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeats:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        if len(samples) >= 5 and time.perf_counter() - start > budget_s:
            break
    return samples


@dataclass
class Artifact:
    """An exported artifact, ready to run. Subclasses implement ``run``, ``golden`` and the costs."""

    path: Path
    manifest: dict
    kind: str
    target: str
    graph: Any = None
    graph_source: str = ""
    integrity: list[str] = field(default_factory=list)
    files_checked: int = 0
    _quantized: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Subclasses open their exporter's artifact class here."""

    # -- description ----------------------------------------------------------------------------
    @property
    def native(self) -> bool:
        return self.target in ("x86", "onnxruntime-cpu")

    @property
    def emulated(self) -> bool:
        return not self.native

    @property
    def number_format(self) -> NumberFormat:
        return format_of(self.manifest.get("numerics"))

    def _output_entries(self) -> list:
        """The manifest's per-output records: ONNX / C ``outputs``, TVM ``signature.outputs``."""
        outs = self.manifest.get("outputs")
        if not isinstance(outs, list):
            outs = (self.manifest.get("signature") or {}).get("outputs")
        return [o for o in outs if isinstance(o, dict)] if isinstance(outs, list) else []

    def output_scales(self, k: int, name: Optional[str] = None) -> Optional[np.ndarray]:
        """Quantisation step (LSB size) of graph output ``k`` (named ``name``), one value or one per
        feature, as the manifest records it (ONNX ``outputs[].scale``, C ``outputs[].scales``, TVM
        ``signature.outputs[].scale``), else from the program in the artifact's quantized graph;
        None for float artifacts."""
        entries = self._output_entries()
        entry = None
        if name is not None:
            entry = next((e for e in entries if e.get("ir_value", e.get("name")) == name), None)
        if entry is None and k < len(entries):
            entry = entries[k]
        for key in ("scales", "scale"):
            v = (entry or {}).get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                v = [v]
            if isinstance(v, list) and v and all(isinstance(e, (int, float)) and e > 0 for e in v):
                return np.asarray(v, np.float64)
        if self.number_format.is_integer and self.quantized_file() is not None:
            try:
                outs = self.quantized().program.outputs
            except EdgeseqError:
                return None
            spec = next((o for o in outs if o.name == name), outs[k] if k < len(outs) else None)
            if spec is not None:
                return np.asarray(np.ravel(spec.scale), np.float64)
        return None

    def output_lsb(self, k: int, name: Optional[str] = None) -> Optional[float]:
        """LSB size of output ``k`` when it is one value for every feature (see :meth:`output_scales`)."""
        s = self.output_scales(k, name)
        return float(s[0]) if s is not None and np.all(s == s[0]) else None

    def declared_lsb(self) -> Optional[int]:
        """The output tolerance in LSBs that the exporter declares for this model (QDQ artifacts:
        ``quantization.tolerance.lsb[family]``, or ``max_lsb``)."""
        q = self.manifest.get("quantization") or {}
        tol = q.get("tolerance") or {}
        if not isinstance(tol, dict):
            return None
        fam = q.get("family") or tol.get("family")
        lsb = tol.get("lsb")
        if isinstance(lsb, dict):
            lsb = lsb.get(fam) if fam in lsb else tol.get("max_lsb")
        if lsb is None:
            lsb = tol.get("max_lsb")
        return lsb if isinstance(lsb, int) and not isinstance(lsb, bool) and lsb >= 0 else None

    def declared_family(self) -> Optional[str]:
        q = self.manifest.get("quantization") or {}
        fam = q.get("family") or (q.get("tolerance") or {}).get("family")
        return fam if isinstance(fam, str) else None

    # -- the quantized graph (integer artifacts) ---------------------------------------------------
    def quantized_file(self) -> Optional[Path]:
        """The quantized graph the exporter stored with an integer artifact (``quantized.esq``)."""
        named = self.manifest.get("quantized_graph")
        if isinstance(named, str) and (self.path / named).is_file():
            return self.path / named
        if (self.path / "quantized.esq").is_file():
            return self.path / "quantized.esq"
        return None

    def quantized(self):
        """The stored quantized graph (:func:`edgeseq.quant.load_quantized`), loaded once; raises
        ArtifactError when there is none and the loader's error when it cannot be read."""
        if self._quantized is None:
            f = self.quantized_file()
            if f is None:
                raise ArtifactError(
                    "the integer artifact stores no quantized graph (quantized.esq)", where=str(self.path)
                )
            from ..quant import load_quantized

            self._quantized = load_quantized(f)
        return self._quantized

    def describe(self) -> dict:
        d = {
            "path": str(self.path),
            "kind": self.kind,
            "target": self.target,
            "format": self.manifest.get("format"),
            "number_format": self.number_format.value,
            "graph_source": self.graph_source,
            "files_checked": self.files_checked,
            "integrity_problems": list(self.integrity),
            "edgeseq_version": self.manifest.get("edgeseq_version") or self.manifest.get("versions", {}).get("edgeseq"),
        }
        if self.number_format.is_integer:
            qf = self.quantized_file()
            d["quantized_graph"] = qf.relative_to(self.path).as_posix() if qf is not None else None
            if self.number_format is NumberFormat.QDQ:
                d["declared_lsb"] = self.declared_lsb()
                d["declared_family"] = self.declared_family()
        return d

    # -- execution --------------------------------------------------------------------------------
    def run(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """Outputs (graph order, float32) of the artifact for ``x`` (B, T, F) from the zero state."""
        raise NotImplementedError

    def golden(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """(golden input, stored reference outputs) written at export time."""
        raise NotImplementedError

    def sizes(self) -> dict:
        return {}

    def latency(self, x1: np.ndarray, repeats: int = 30) -> Optional[dict]:
        """Wall-clock latency per sequence and per step for one sequence ``x1`` (1, T, F); None
        when the artifact does not run natively."""
        return None

    def instructions(self, x1: np.ndarray) -> Optional[dict]:
        """Executed instructions per inference / per step under emulation; None when native."""
        return None


# ----------------------------------------------------------------------------------------------


class OnnxRunner(Artifact):
    def __post_init__(self):
        from ..export.onnx import OnnxArtifact

        self._art = OnnxArtifact(self.path, self.manifest)
        self._art1 = OnnxArtifact(self.path, self.manifest, threads=1)

    @property
    def number_format(self) -> NumberFormat:
        meta = self.manifest.get("metadata") or {}
        return format_of(self.manifest.get("numerics") or meta.get("numerics"))

    def run(self, x):
        out = self._art.run(x)
        return tuple(out[0] if self._art.streaming else out)

    def golden(self):
        g = self.manifest["golden"]

        def read(rel: str) -> np.ndarray:
            return read_npy(golden_file(self.path, rel), ArtifactError, what="golden array", kind="model")

        return _golden_input(read(g["input"]), self.path), [read(p) for p in g["outputs"]]

    def sizes(self):
        return {"model_bytes": self._art.model_path.stat().st_size}

    def latency(self, x1, repeats=30):
        a = self._art1
        x1 = np.ascontiguousarray(x1, dtype=np.float32)
        steps = x1.shape[1]
        if a.streaming:
            seq = _timed(lambda: a.run(x1, None), repeats)
            st = a.init_state(1)
            xs = x1[:, :1]
            step = _timed(lambda: a.run(xs, st), repeats * 4)
            step_how = "streaming model, one-step chunks with explicit state"
        else:
            seq = _timed(lambda: a.run(x1), repeats)
            step = [s / steps for s in seq]
            step_how = "whole-sequence model: per-sequence time / T (amortised)"
        return {
            "per_sequence": _percentiles(seq),
            "per_step": _percentiles(step),
            "steps": steps,
            "method": f"onnxruntime CPUExecutionProvider, 1 thread; {step_how}",
        }


class TvmRunner(Artifact):
    def __post_init__(self):
        from ..export.tvm.artifact import TvmArtifact

        self._art = TvmArtifact(self.path, self.manifest)

    def run(self, x):
        y, _ = self._art.run(np.asarray(x, dtype=np.float32), streaming=False)
        return tuple(y) if isinstance(y, tuple) else (y,)

    def golden(self):
        g = self.manifest["golden"]
        return _golden_input(_raw(self.path, g["input"]), self.path), [_raw(self.path, e) for e in g["outputs"]]

    def sizes(self):
        return {"library_bytes": int(self.manifest.get("library_bytes") or self._art.library.stat().st_size)}

    def latency(self, x1, repeats=30):
        if not self.native:
            return None
        a = self._art
        x1 = np.ascontiguousarray(x1, dtype=np.float32)
        seq = _timed(lambda: a.run(x1, streaming=False), repeats)
        st = a.init_state(1)  # float32 zeros, or the program's integer state for integer artifacts
        xs = x1[:, :1]
        step = _timed(lambda: a.run(xs, st, streaming=True), repeats * 4)
        return {
            "per_sequence": _percentiles(seq),
            "per_step": _percentiles(step),
            "steps": int(x1.shape[1]),
            "method": "Relax VM in process through TvmArtifact.run (numpy in/out); per step: the 'stream' "
            "function on one-step chunks with explicit state",
        }

    def instructions(self, x1):
        if self.native:
            return None
        return _tvm_arm_instructions(self, np.asarray(x1, dtype=np.float32))


class CRunner(Artifact):
    def __post_init__(self):
        from ..export.c.artifact import CArtifact

        self._art = CArtifact(self.path, self.manifest)

    def run(self, x):
        return tuple(self._art.run(np.asarray(x, dtype=np.float32)))

    def golden(self):
        from ..export.c.artifact import read_golden_input, split_outputs
        from ..targets.driver import read_output

        g = self.manifest["golden"]
        where = str(self.path)
        try:
            x = read_golden_input(golden_file(self.path, g["input"]))
            exp = read_output(golden_file(self.path, g["expected"]))
        except (ValueError, struct.error) as e:
            raise ArtifactError(f"corrupt golden vectors ({type(e).__name__}: {e})", where=where) from None
        return _golden_input(x, self.path), [
            np.asarray(o) for o in split_outputs(self.manifest, exp["step"], exp["pooled"])
        ]

    def sizes(self):
        s = dict(self.manifest.get("sizes") or {})
        out = {k: s[k] for k in ("binary_file_bytes", "flash_bytes", "ram_bytes", "state_struct_bytes") if k in s}
        out["weights_bytes"] = self.manifest.get("weights_bytes")
        if "model" in s:
            out["model_code_bytes"] = s["model"].get("code_bytes")
            out["model_const_bytes"] = s["model"].get("const_bytes")
        return out

    def latency(self, x1, repeats=30):
        if not self.native:
            return None
        t = self._art.target
        x1 = np.asarray(x1, dtype=np.float32)
        steps = x1.shape[1]
        per_seq = []
        runs = max(5, min(15, repeats // 2))
        for _ in range(runs):
            res = t.run(self._art.binary, x1, mode="run", repeat=10)
            per_seq.append(res.model_ns * 1e-9 / res.repeat)
        return {
            "per_sequence": _percentiles(per_seq),
            "per_step": _percentiles([s / steps for s in per_seq]),
            "steps": steps,
            "method": f"clock_gettime inside the driver around esq_reset + esq_run; each sample is the mean "
            f"of 10 repeats, {runs} driver runs; per step = per sequence / T",
        }

    def instructions(self, x1):
        if self.native:
            return None
        cost = self._art.cost(np.asarray(x1, dtype=np.float32))
        ins = cost.get("instructions")
        if not ins:
            return None
        out = {
            "per_inference": float(ins["per_inference"]),
            "per_step": float(ins["per_step"]),
            "per_sequence_fixed": float(ins["per_sequence_fixed"]),
            "steps": int(x1.shape[1]),
            "emulator": cost.get("emulator"),
            "method": ins.get("method"),
        }
        if self._art.manifest.get("profile_map"):  # integer C: where the instructions of a step go, per micro-op
            try:
                prof = self._art.profile(np.asarray(x1, dtype=np.float32))
                out["per_op"] = [
                    {
                        "region": e["label"],
                        "instructions_per_step": round(e["instructions"], 1),
                        "share": round(e["share"], 4),
                    }
                    for e in prof["per_step"]
                ]
                out["per_op_method"] = prof["method"]
            except EdgeseqError as e:
                out["per_op_error"] = e.message
        return out


@dataclass
class Bundle(Artifact):
    """``edgeseq export --target x86|arm``: a TVM library (``tvm/``) and a static C executable
    (``c/``) under one manifest. Each part is an artifact of its own and is validated as such."""

    parts: dict = field(default_factory=dict)

    @property
    def native(self) -> bool:
        return False

    @property
    def number_format(self) -> NumberFormat:
        return format_of(self.manifest.get("numerics"))

    def describe(self) -> dict:
        d = super().describe()
        d["parts"] = {name: {"kind": a.kind, "target": a.target, "dir": a.path.name} for name, a in self.parts.items()}
        return d


_RUNNERS = {"onnx": OnnxRunner, "tvm": TvmRunner, "c": CRunner}


def _raw(path: Path, entry: dict) -> np.ndarray:
    """A raw little-endian array file of the TVM exporter ({file, shape, dtype}), size checked first."""
    dt = np.dtype(entry.get("dtype", "<f4"))
    shape = tuple(entry["shape"])
    want = int(np.prod(shape, dtype=object)) * dt.itemsize
    p = golden_file(path, entry["file"])
    if p.stat().st_size != want:
        raise ArtifactError(
            f"golden file '{entry['file']}' has {p.stat().st_size} bytes; shape {list(shape)} {dt.str} needs {want}",
            where=str(path),
        )
    return np.fromfile(p, dtype=dt).reshape(shape).astype(dt.newbyteorder("="))


def _golden_input(x: np.ndarray, path: Path) -> np.ndarray:
    """The golden input must be a (B, T, F) numeric array with finite values."""
    from ..util.finite import check_finite

    if x.ndim != 3 or 0 in x.shape or x.dtype.kind not in "biuf":
        raise ArtifactError(
            f"the golden input must be a non-empty (B, T, F) numeric array, got shape {x.shape} {x.dtype}",
            where=str(path),
        )
    return check_finite(x, "golden input", str(path))


# ----------------------------------------------------------------------------------------------
# instruction counts of aarch64 TVM artifacts (the TVM runtime is loaded in every process, so the
# per-step count is the difference of two sequence lengths)


def _tvm_arm_instructions(art: TvmRunner, x1: np.ndarray) -> Optional[dict]:
    import subprocess
    import tempfile

    from ..export.tvm.runtime_arm import SYSROOT, driver_path, runtime_dir
    from ..targets.base import parse_insn_count, qemu_plugin
    from ..toolchains import require

    qemu = require("qemu-aarch64")
    drv, rt, plugin = driver_path(), runtime_dir(), qemu_plugin()
    lib = art._art.library

    def count(x: np.ndarray) -> int:
        with tempfile.TemporaryDirectory(prefix="edgeseq-validate-") as tmp:
            arg = Path(tmp) / "arg0.f32"
            arg.write_bytes(np.ascontiguousarray(x, dtype="<f4").tobytes())
            log = Path(tmp) / "qemu.log"
            argv = [
                qemu,
                "-L",
                SYSROOT,
                "-E",
                f"LD_LIBRARY_PATH={rt}",
                "-plugin",
                plugin,
                "-d",
                "plugin",
                "-D",
                str(log),
                str(drv),
                str(lib),
                "main",
                tmp,
                f"{arg}:{','.join(str(d) for d in x.shape)}",
            ]
            res = subprocess.run(argv, capture_output=True, text=True, timeout=600)
            if res.returncode != 0:
                raise ArtifactError(
                    f"counting instructions under qemu-aarch64 failed (exit {res.returncode}): "
                    f"{(res.stderr or res.stdout).strip()[-500:]}",
                    where=str(lib),
                )
            return parse_insn_count(log, where=str(lib))

    steps = int(x1.shape[1])
    full = count(x1)
    double = count(np.concatenate([x1, x1], axis=1))
    per_step = (double - full) / steps
    return {
        "per_step": per_step,
        "process_total": full,
        "steps": steps,
        "per_inference_estimate": per_step * steps,
        "emulator": "qemu-aarch64",
        "method": "qemu TB-count plugin on the whole driver process (TVM runtime start-up included in "
        "process_total); per_step = (count(2T) - count(T)) / T for one sequence of 'main'",
    }


# ----------------------------------------------------------------------------------------------


def check_integrity(path: Path, kind: str, manifest: dict) -> tuple[list[str], int]:
    """Files listed in the manifest that are missing or whose sha256 differs (and how many are listed)."""
    return file_problems(path, manifest), len(integrity_table(manifest))


GRAPH_HINT = (
    "the exporter must store the IR graph it exported from as graph.esq in the artifact "
    "(and name it in manifest.json); pass --graph FILE.esq meanwhile"
)


def _graph_file(path: Path, kind: str, manifest: dict) -> tuple[Optional[Path], str]:
    named = manifest.get("ir_graph") if kind in ("onnx", "tvm", "bundle") else manifest["graph"]["file"]
    if named and (path / named).is_file():  # inside the artifact: checked with the manifest
        return path / named, f"{named} (stored in the artifact, named by the manifest)"
    if (path / "graph.esq").is_file():
        return path / "graph.esq", "graph.esq (in the artifact, not named by the manifest)"
    for cand in (path.parent / f"{path.name}.esq", path.parent / "model.esq"):
        if cand.is_file():
            return cand, f"{cand} (next to the artifact)"
    return None, ""


def open_artifact(path, graph=None, *, _nested: bool = False) -> Artifact:
    """Load the artifact directory ``path``. ``graph`` (a Graph or an .esq path) overrides the
    graph stored with the artifact (and must be that graph when the artifact stores one); without
    either, ArtifactError says which exporter lacks it."""
    from ..ir.graph import Graph
    from ..ir.serialize import digest, load

    if not isinstance(path, (str, Path)) or (isinstance(path, str) and not path):
        raise ArtifactError(f"expected the path of an artifact directory, got {type(path).__name__} {path!r:.40}")
    path = Path(path)
    manifest, kind = read_checked(path, nested=_nested)
    problems, n_files = check_integrity(path, kind, manifest)
    gfile, source = _graph_file(path, kind, manifest)
    if graph is not None:
        if isinstance(graph, Graph):
            g, source = graph, "given by the caller"
        elif isinstance(graph, (str, Path)):
            g, source = load(graph), f"{graph} (given with --graph)"
        else:
            raise ConfigError(f"graph must be an IR Graph or the path of an .esq file, got {type(graph).__name__}")
        if gfile is not None and gfile.parent == path and not _nested:
            stored = load(gfile)
            if digest(stored) != digest(g):
                raise ArtifactError(
                    f"the graph {source} is not the one this artifact was exported from "
                    f"({gfile.name} in the artifact differs)",
                    where=str(path),
                    hint="leave out --graph to use the artifact's own graph",
                )
    else:
        if gfile is None:
            raise ArtifactError(
                f"the {kind} artifact does not store the IR graph it was exported from",
                where=str(path),
                hint=GRAPH_HINT,
            )
        g = load(gfile)
    target = _target_of(kind, manifest)
    if kind == "bundle":
        parts = {
            name: open_artifact(path / info["dir"], graph=g, _nested=True) for name, info in manifest["parts"].items()
        }
        return Bundle(
            path=path,
            manifest=manifest,
            kind=kind,
            target=target,
            graph=g,
            graph_source=source,
            integrity=problems,
            files_checked=n_files,
            parts=parts,
        )
    cls = _RUNNERS[kind]
    try:
        return cls(
            path=path,
            manifest=manifest,
            kind=kind,
            target=target,
            graph=g,
            graph_source=source,
            integrity=problems,
            files_checked=n_files,
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise ArtifactError(f"malformed {kind} manifest ({type(e).__name__}: {e})", where=str(path)) from None


def _target_of(kind: str, manifest: dict) -> str:
    if kind == "onnx":
        return "onnxruntime-cpu"
    t = manifest.get("target")
    if kind == "bundle" and isinstance(t, str) and manifest.get("cpu"):
        return f"{t}:{manifest['cpu']}"
    name = t.get("name") if isinstance(t, dict) else t
    if not isinstance(name, str):
        raise ArtifactError(f"the {kind} manifest names no target")
    return name


def run_batched(art: Artifact, x: np.ndarray, batch: int) -> tuple[np.ndarray, ...]:
    """Run ``x`` through the artifact in batches of ``batch`` sequences and concatenate."""
    parts = []
    for s in range(0, x.shape[0], batch):
        parts.append(art.run(x[s : s + batch]))
    return tuple(np.concatenate([p[k] for p in parts], axis=0) for k in range(len(parts[0])))


def safe(fn: Callable[[], Any]) -> tuple[Any, Optional[str]]:
    """(result, None) or (None, error message) for optional measurements."""
    try:
        return fn(), None
    except EdgeseqError as e:
        return None, str(e)
    except (OSError, RuntimeError, ValueError, ConfigError) as e:  # runtime libraries raise their own types
        return None, f"{type(e).__name__}: {e}"


__all__ = ["Artifact", "Bundle", "open_artifact", "detect_kind", "check_integrity", "run_batched", "FORMATS"]
