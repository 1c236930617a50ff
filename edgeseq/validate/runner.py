"""``validate``: run an artifact on its own runner and compare it with the reference.

Steps, each recorded in the :class:`ValidationReport`:

1. load the artifact directory (any exporter, :func:`~.artifacts.open_artifact`), check every file
   against the manifest's sha256 and load the IR graph stored with it;
2. reference: the float64 interpreter (``cpu``) or the reference kernels on a CUDA device
   (``gpu``, Triton when installed); ``auto`` picks the GPU when there is one. An integer artifact
   (a quantized graph's integer program: C, TVM, ONNX exact or QDQ, their bundles) is compared
   with the integer-exact interpreter (:mod:`edgeseq.quant.intexact`, on the CPU) running the
   quantized graph stored with it (``quantized.esq``), whatever ``reference`` says: the float
   graph would measure the quantisation error, not the artifact. Without a stored quantized
   graph, its stored golden outputs (written by that interpreter at export) are the reference and
   new inputs cannot be checked;
3. golden vectors: the stored outputs must equal the reference on the stored graph (so the graph
   is the one that was exported; integer artifacts: exactly, in output LSBs), and the artifact's
   outputs must match the reference within the tolerance of its number format (float formats:
   max abs error; integer formats: error in LSBs of each output's quantisation step, 0 = bit
   exact, QDQ: the LSBs its exporter declares for the model family); pooled outputs are also
   compared on prefixes of the golden input (error against sequence length);
4. with ``data``: a slice of a dataset (``har``, ``kws``, ``smartwatch`` or an ``.npz``) through both,
   with decision agreement, task accuracy of each and spike agreement (integer artifacts also
   report the float model's accuracy on the slice, for information);
5. cost: wall-clock latency per sequence and per step (p50 / p99) for native artifacts,
   executed instructions per inference / per step for emulated ones, artifact sizes and the
   reference's throughput.

Every check is named (``golden.head.max_abs_error``, ``data.accuracy_drop``, ...); failures are
collected, not raised, until the report is complete. :meth:`ValidationReport.raise_for_failure`
raises :class:`~edgeseq.errors.ToleranceError` naming them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from ..errors import ConfigError, DatasetError, EdgeseqError, ShapeError, ToleranceError
from .artifacts import Artifact, open_artifact, run_batched, safe
from .compare import FAIL, PASS, SKIP, Check, accuracy, decision_output, lower, output_metrics, upper
from .tolerance import QDQ_DEFAULT, FormatTolerance, NumberFormat, TolerancePolicy

REFERENCES = ("auto", "gpu", "cpu")
DATASETS = ("har", "kws", "smartwatch", "digits")


# ----------------------------------------------------------------------------------------------
# the reference


class Reference:
    """The reference computation: ``cpu`` = the float64 interpreter, ``gpu`` = the reference kernels
    on CUDA (float64 by default). Keeps count of the time it spends, for its throughput."""

    def __init__(self, graph, which: "str | Callable" = "auto", dtype: str = "float64"):
        self.graph = graph
        self.dtype = dtype
        self.seconds = 0.0
        self.sequences = 0
        self.steps = 0
        self.plan: Optional[dict] = None
        self._fn: Optional[Callable] = None
        if callable(which):  # e.g. an integer-exact interpreter for a quantized artifact
            self._fn, self._runner = which, None
            self.requested = self.which = "custom"
            self.name = getattr(which, "__doc__", None) or getattr(which, "__name__", "custom reference")
            self.name = self.name.strip().splitlines()[0]
            return
        if which not in REFERENCES:
            raise ConfigError(f"unknown reference '{which}'; choose one of: {', '.join(REFERENCES)}")
        self.requested = which
        if which == "auto":
            which = "gpu" if _cuda_available() else "cpu"
        self.which = which
        if which == "gpu":
            from .gpu import ReferenceRunner

            self._runner = ReferenceRunner(graph, device="cuda", dtype=dtype, kernels="auto")
            self.plan = self._runner.plan
            self.name = f"reference kernels ({self._runner.kernels}) on {_cuda_name()}, {dtype}"
        else:
            self._runner = None
            self.name = "float64 reference interpreter (edgeseq.ir.interpret) on the CPU"

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        t0 = time.perf_counter()
        if self._fn is not None:
            outs = self._fn(np.asarray(x))
        elif self._runner is not None:
            outs, _ = self._runner.run(np.asarray(x, dtype=np.float64))
        else:
            from ..ir.interpret import run

            outs, _ = run(self.graph, np.asarray(x, dtype=np.float64))
        self.seconds += time.perf_counter() - t0
        self.sequences += int(x.shape[0])
        self.steps += int(x.shape[0] * x.shape[1])
        return tuple(np.asarray(o, dtype=np.float64) for o in outs)

    def describe(self) -> dict:
        dtype = self.dtype if self._runner is not None else ("float64" if self._fn is None else "custom")
        d = {
            "requested": self.requested,
            "used": self.which,
            "name": self.name,
            "dtype": dtype,
            "seconds": self.seconds,
            "sequences": self.sequences,
            "steps": self.steps,
        }
        if self.seconds > 0:
            d["throughput"] = {
                "sequences_per_s": self.sequences / self.seconds,
                "steps_per_s": self.steps / self.seconds,
            }
        if self.plan:
            d["kernels"] = self.plan
        return d


class IntegerReference(Reference):
    """The integer-exact interpreter (:func:`edgeseq.quant.intexact.run`) on a quantized graph:
    ``x`` (B, T, F) float -> the program's outputs dequantized (``q * scale``, float64), in the
    order of ``names`` (the graph outputs)."""

    def __init__(self, qg, source: str, requested: str, names=None):
        self.graph = qg.graph
        self.dtype = "integer"
        self.seconds = 0.0
        self.sequences = 0
        self.steps = 0
        self.plan = None
        self._runner = None
        self.qg = qg
        self.source = source
        self.requested = requested
        self.which = "integer"
        self.name = f"integer-exact interpreter (edgeseq.quant.intexact) on {source}, CPU"
        self.note = None
        if requested == "gpu":
            self.note = (
                "--reference gpu computes the float graph; an integer artifact is compared with the "
                "integer-exact interpreter (CPU) instead"
            )
        order = [o.name for o in qg.program.outputs]
        names = list(names) if names is not None else order
        self._order = [order.index(n) for n in names] if set(names) <= set(order) else list(range(len(order)))
        self._fn = self._run

    def _run(self, x):
        outs, _ = self.qg.run(np.asarray(x), mode="int")
        return tuple(outs[i] for i in self._order)

    def float_model(self, x) -> tuple[np.ndarray, ...]:
        """The float graph the program was quantized from (the prepared graph, float64 interpreter)."""
        outs, _ = self.qg.run(np.asarray(x, np.float64), mode="float")
        return tuple(np.asarray(o, np.float64) for o in outs)

    def describe(self) -> dict:
        d = super().describe()
        d.update(
            dtype="integer (outputs dequantized q * scale, float64)",
            quantized_graph=self.source,
            config=getattr(getattr(self.qg.plan, "config", None), "name", None),
        )
        if self.note:
            d["note"] = self.note
        return d


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


def _cuda_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


# ----------------------------------------------------------------------------------------------
# data


@dataclass
class EvalData:
    name: str
    x: np.ndarray
    y: Optional[np.ndarray]
    labels: Optional[list]
    total: int


def load_data(
    spec: Any, in_features: int, samples: int, n_classes: Optional[int] = None, to_ir: Optional[Callable] = None
) -> EvalData:
    """An evenly spaced slice of ``samples`` sequences from a dataset name, an ``.npz`` file or a
    :class:`~edgeseq.data.Dataset`; sequences and labels are checked (shape, dtype, NaN/Inf, class
    range) before use. ``to_ir`` turns the x of an ``.npz`` (in the model's own layout) into (N, T, F)."""
    from ..data.dataset import Dataset
    from ..util import datacheck

    if isinstance(spec, Dataset):
        ds, name = spec, spec.name
    elif isinstance(spec, str) and spec in DATASETS:
        from ..data import load_dataset

        kw = {"classes": 6} if spec == "har" else {}
        ds, name = load_dataset(spec, "test", **kw), f"{spec} (test split)"
    elif isinstance(spec, (str, Path)):
        ds, name = _load_npz(Path(spec)), str(spec)
        if to_ir is not None and isinstance(ds, EvalData):
            ds = EvalData(ds.name, to_ir(ds.x), ds.y, ds.labels, ds.total)
    else:
        raise ConfigError(
            f"data must be a dataset name ({', '.join(DATASETS)}), an .npz path or a Dataset, got {type(spec).__name__}"
        )
    if isinstance(ds, EvalData):
        x, y, labels, name = ds.x, ds.y, ds.labels, ds.name
    else:
        x, y, labels = ds.x, ds.y, list(ds.labels)
    where = f"data {name}"
    x = datacheck.sequences(x, "x", where, features=in_features, error=ShapeError)
    if y is not None:
        y = datacheck.labels(y, x.shape[0], "y", where, n_classes=n_classes)
    total = int(x.shape[0])
    n = min(int(samples), total)
    idx = np.unique(np.linspace(0, total - 1, n).round().astype(np.int64))
    return EvalData(name, np.ascontiguousarray(x[idx], dtype=np.float32), None if y is None else y[idx], labels, total)


def _load_npz(path: Path) -> EvalData:
    from ..data.dataset import Dataset
    from ..util.safeio import npz_keys, read_npz

    if not path.is_file():
        choices = ", ".join(DATASETS)
        raise DatasetError(f"not a dataset name ({choices}) and no such .npz file", where=str(path))
    keys = npz_keys(path, DatasetError)
    if "info" in keys:
        ds = Dataset.load(path)
        return EvalData(ds.name, ds.x, ds.y, list(ds.labels), len(ds))
    if "x" not in keys:
        raise DatasetError(
            f"the .npz file needs an array 'x' (N, T, F) and optionally 'y' (N,); it has "
            f"{', '.join(sorted(keys)) or 'nothing'}",
            where=str(path),
        )
    z = read_npz(path, DatasetError, keys=("x", "y"))
    x, y = z["x"], z.get("y")
    return EvalData(path.name, x, y, None, int(x.shape[0]) if x.ndim else 0)


# ----------------------------------------------------------------------------------------------
# the report


@dataclass
class ValidationReport:
    artifact: dict
    reference: dict
    tolerance: dict
    checks: list[Check]
    golden: dict
    data: Optional[dict]
    performance: dict
    timing: dict
    plots: dict[str, bytes] = field(default_factory=dict, repr=False)
    written: dict[str, str] = field(default_factory=dict)
    parts: dict[str, "ValidationReport"] = field(default_factory=dict)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict:
        return {
            "format": "edgeseq-validation/1",
            "passed": self.passed,
            "failed_checks": [c.name for c in self.failed],
            "artifact": self.artifact,
            "reference": self.reference,
            "tolerance": self.tolerance,
            "checks": [c.to_dict() for c in self.checks],
            "golden": self.golden,
            "data": self.data,
            "performance": self.performance,
            "timing": self.timing,
            **({"parts": {k: r.to_dict() for k, r in self.parts.items()}} if self.parts else {}),
        }

    def summary(self) -> str:
        a = self.artifact
        lines = [
            f"validate {a['path']}: {a['kind']} artifact for {a['target']} ({a['number_format']}), "
            f"reference: {self.reference['name']}"
        ]
        for c in self.checks:
            mark = {PASS: "ok  ", FAIL: "FAIL", SKIP: "skip"}[c.status]
            lines.append(f"  {mark} {c.line()}")
        for name, rep in [("", self)] if not self.parts else list(self.parts.items()):
            lines += [f"  {name + ': ' if name else ''}{line}" for line in rep._cost_lines()]
        lines.append(
            ("PASSED" if self.passed else f"FAILED: {len(self.failed)} check(s)")
            + "".join(f"\n  wrote {v}" for v in self.written.values())
        )
        return "\n".join(lines)

    def _cost_lines(self) -> list[str]:
        lines = []
        perf = self.performance
        lat = perf.get("latency")
        if lat:
            lines.append(
                f"latency per sequence p50 {lat['per_sequence']['p50_s'] * 1e6:.1f} us, p99 "
                f"{lat['per_sequence']['p99_s'] * 1e6:.1f} us; per step p50 "
                f"{lat['per_step']['p50_s'] * 1e6:.2f} us (T={lat['steps']})"
            )
        ins = perf.get("instructions")
        if ins:
            per_inf = ins.get("per_inference", ins.get("per_inference_estimate"))
            lines.append(
                f"instructions per inference {per_inf:,.0f}, per step {ins['per_step']:,.0f} "
                f"({ins.get('emulator')}, T={ins['steps']})"
            )
            if ins.get("per_op"):
                from .report import per_op_lines

                lines += ["  per step, by micro-op:"] + ["    " + ln for ln in per_op_lines(ins["per_op"])]
        thr = self.reference.get("throughput")
        if thr:
            lines.append(f"reference throughput {thr['steps_per_s']:,.0f} steps/s")
        return lines

    def failure_message(self) -> str:
        return f"{len(self.failed)} check(s) failed: " + "; ".join(c.line() for c in self.failed)

    def raise_for_failure(self) -> None:
        if self.failed:
            raise ToleranceError(self.failure_message(), where=self.artifact["path"])


# ----------------------------------------------------------------------------------------------


def _policy(tolerance: Any) -> TolerancePolicy:
    if tolerance is None:
        return TolerancePolicy()
    if isinstance(tolerance, TolerancePolicy):
        return tolerance
    if isinstance(tolerance, Mapping):
        return TolerancePolicy().merged(tolerance)
    if not isinstance(tolerance, (str, Path)):
        raise ConfigError(
            f"tolerance must be a TolerancePolicy, a dict of overrides or a JSON path, got {type(tolerance).__name__}"
        )
    return TolerancePolicy.load(tolerance)


def _format_tolerance(art: Artifact, policy: TolerancePolicy) -> tuple[NumberFormat, FormatTolerance, str]:
    """(number format, its tolerance, where the tolerance comes from) for the artifact's outputs."""
    fmt = art.number_format
    ftol = policy.for_format(fmt)
    if fmt is NumberFormat.QDQ and ftol is QDQ_DEFAULT:
        lsb = art.declared_lsb()
        if lsb is not None:  # the exporter's declared limit for this model family
            fam = art.declared_family()
            return fmt, FormatTolerance(lsb=lsb), f"declared by the exporter{f' for the {fam} family' if fam else ''}"
        return fmt, ftol, "QDQ default; the manifest declares no limit"
    return fmt, ftol, ""


def _lsb_text(m: dict) -> str:
    lsb = m.get("lsb")
    if isinstance(lsb, list):
        return f"LSB {min(lsb):.3g}..{max(lsb):.3g} per feature"
    return f"LSB {lsb:.3g}"


def _lsb_check(
    name: str, abs_error: float, lsb_error: float, allowed: int, m: dict, how: str, extra: str = ""
) -> Check:
    """A check of an output on an integer grid: passes when the error is at most ``allowed`` LSBs.
    The value shown is the max abs error and the limit ``allowed`` x LSB (the largest LSB when it
    is per feature); the detail leads with the error in LSBs, which decides."""
    lsb = m["lsb"]
    step = max(lsb) if isinstance(lsb, list) else float(lsb)
    ok = bool(np.isfinite(lsb_error)) and lsb_error <= allowed
    n_values = int(np.prod(m["shape"])) if m.get("shape") else 0
    detail = (
        f"{lsb_error:.4g} LSB, allowed: {how}; {_lsb_text(m)}; {m['lsb_mismatches']} of {n_values} values "
        f"differ" + (f"; {extra}" if extra else "")
    )
    return Check(name, PASS if ok else FAIL, float(abs_error), float(allowed * step), detail)


def _output_checks(prefix: str, art: Artifact, policy: TolerancePolicy, metrics: dict, types, names) -> list[Check]:
    """Checks of each output. Integer formats (where the artifact records the output scales) are
    decided in LSBs of each output's quantisation step; float formats, and integer ones without
    scales, in absolute error."""
    checks = []
    fmt, ftol, source = _format_tolerance(art, policy)
    for k, (name, t) in enumerate(zip(names, types)):
        m = metrics[name]
        in_lsb = fmt.is_integer and ftol.lsb is not None and "max_lsb_error" in m
        how = ("bit exact" if ftol.lsb == 0 else f"{ftol.lsb} LSB") if in_lsb else ftol.limit(None)[1]
        how += f", {source}" if source else ""
        limit = ftol.limit(None)[0]
        note = how + ("; no output scale in the manifest" if fmt.is_integer and not in_lsb else "")
        if t.spikes:
            checks.append(
                upper(
                    f"{prefix}.{name}.spike_mismatches",
                    m.get("spike_mismatches", float("inf")),
                    policy.spike_mismatches,
                    f"spike agreement {m.get('spike_agreement', 0.0):.6f}; "
                    f"{m.get('spikes_reference', '?')} reference spikes",
                )
            )
            amp = m.get("spike_amplitude_max_abs_error", float("inf"))
            if in_lsb:
                checks.append(
                    _lsb_check(
                        f"{prefix}.{name}.spike_amplitude_error",
                        amp,
                        m["spike_amplitude_max_lsb_error"],
                        ftol.lsb,
                        m,
                        how,
                        "where both fire",
                    )
                )
            else:
                checks.append(upper(f"{prefix}.{name}.spike_amplitude_error", amp, limit, "where both fire; " + note))
        elif in_lsb:
            checks.append(
                _lsb_check(f"{prefix}.{name}.max_abs_error", m["max_abs_error"], m["max_lsb_error"], ftol.lsb, m, how)
            )
        else:
            checks.append(upper(f"{prefix}.{name}.max_abs_error", m["max_abs_error"], limit, note))
        if "decision_agreement" in m:
            checks.append(
                lower(
                    f"{prefix}.{name}.decision_agreement",
                    m["decision_agreement"],
                    policy.min_decision_agreement,
                    f"{m['decision_mismatches']} of {m['shape'][0]} sequences differ",
                )
            )
    return checks


def _metrics(art: Artifact, got, ref, types, names) -> dict:
    """output_metrics of every output; integer formats in LSBs, the reference rounded to the
    precision of the artifact's outputs (a float32 ``q * scale`` equals the reference's bit for bit)."""
    integer = art.number_format.is_integer
    out = {}
    for k, name in enumerate(names):
        g, r = np.asarray(got[k]), np.asarray(ref[k], np.float64)
        lsb = None
        if integer:
            lsb = art.output_scales(k, name)
            if g.dtype == np.float32:
                r = r.astype(np.float32)
        out[name] = output_metrics(g, r, types[k].temporal, types[k].spikes, lsb=lsb)
    return out


def _error_text(m: dict) -> str:
    if "max_lsb_error" in m:
        return f"max {m['max_lsb_error']:.4g} LSB (abs {m['max_abs_error']:.2e})"
    return f"max abs {m['max_abs_error']:.2e}"


def _make_reference(art: Artifact, reference, dtype: str) -> tuple[Reference, bool, list[Check]]:
    """(reference, stored_only, checks): integer artifacts get the integer-exact interpreter on their
    stored quantized graph, or (none stored) their stored golden outputs alone."""
    if callable(reference) or not art.number_format.is_integer:
        return Reference(art.graph, reference, dtype), False, []
    qf = art.quantized_file()
    checks = []
    if qf is not None:
        try:
            qg = art.quantized()
        except EdgeseqError as e:
            checks.append(
                Check(
                    "quantized_graph",
                    FAIL,
                    detail=f"cannot load the stored quantized graph "
                    f"{qf.name} ({e}); compared with the stored golden outputs only",
                )
            )
        else:
            try:
                qg.check_graph(art.graph, where=str(qf))
            except EdgeseqError as e:
                checks.append(
                    Check("quantized_graph", FAIL, detail=f"{e}; compared with the stored golden outputs only")
                )
            else:
                return (
                    IntegerReference(qg, qf.relative_to(art.path).as_posix(), reference, art.graph.outputs),
                    False,
                    [],
                )
    stored = Reference(art.graph, "cpu", dtype)  # never run: the stored golden outputs are the reference
    stored.requested = reference
    return stored, True, checks


def _prefix_lengths(steps: int, points: int) -> list[int]:
    if steps <= 1 or points <= 1:
        return [steps]
    return sorted({int(round(v)) for v in np.geomspace(1, steps, points)})


def validate(
    artifact,
    *,
    reference: "str | Callable" = "auto",
    data: Any = None,
    tolerance: Any = None,
    out=None,
    samples: int = 256,
    graph=None,
    measure: bool = True,
    batch: int = 64,
    prefix_points: int = 5,
    reference_dtype: str = "float64",
    log: Optional[Callable[[str], None]] = None,
    layout: Optional[str] = None,
) -> ValidationReport:
    """Validate the artifact directory ``artifact`` (see the module docstring).

    ``reference`` auto | gpu | cpu, or a callable ``x (B, T, F) -> outputs`` (float arrays in graph
    output order; its docstring's first line names it in the report). Integer artifacts are
    compared with the integer-exact interpreter on their stored ``quantized.esq`` unless a callable
    is given (``gpu`` then only adds a note: the GPU kernels compute the float graph); ``data`` a dataset name (har, kws, smartwatch), an .npz path or
    a Dataset; ``tolerance`` a :class:`TolerancePolicy`, a dict of overrides or a JSON path;
    ``out`` a directory for validation.json and report.html (nothing is written when None);
    ``samples`` sequences of ``data``; ``graph`` overrides the graph stored with the artifact;
    ``measure`` enables latency / instruction counts; ``layout`` is the layout of an ``.npz``'s x
    (default: the model's own, ``graph.metadata["input_layout"]``; dataset names are (N, T, F)). A bundle (``edgeseq export --target x86|arm``:
    ``tvm/`` + ``c/``) is validated part by part, its checks named ``<part>/<check>``. Returns the
    report (failures included; :meth:`ValidationReport.raise_for_failure` turns them into an
    exception)."""
    say = log or (lambda s: None)
    if not callable(reference) and reference not in REFERENCES:
        raise ConfigError(f"unknown reference '{reference}'; choose one of: {', '.join(REFERENCES)}")
    policy = _policy(tolerance)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"samples must be a positive integer, got {samples!r}")
    t_start = time.perf_counter()
    art = open_artifact(artifact, graph)
    out_dir = _check_out(out) if out is not None else None
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch must be a positive integer, got {batch!r}")
    if isinstance(prefix_points, bool) or not isinstance(prefix_points, int) or prefix_points < 0:
        raise ConfigError(f"prefix_points must be a non-negative integer, got {prefix_points!r}")
    n_classes = art.graph.output_types[0].features
    if data is not None:
        from ..ir.layout import layout_of, to_ir

        lay = layout_of(art.graph, layout)
        conv = None if lay == "BTF" else (lambda x: to_ir(art.graph, x, lay))
        d = load_data(data, art.graph.in_features, samples, n_classes, to_ir=conv)
    else:
        d = None
    opts = dict(measure=measure, batch=batch, prefix_points=prefix_points, say=say)
    if art.kind != "bundle":
        report = _validate_one(art, *_make_reference(art, reference, reference_dtype), policy, d, **opts)
    else:
        say(f"bundle for {art.target}: parts {', '.join(art.parts)}")
        parts = {}
        for name, part in art.parts.items():
            say(f"-- part {name}")
            parts[name] = _validate_one(part, *_make_reference(part, reference, reference_dtype), policy, d, **opts)
        checks = [_integrity_check(art)]
        for name, rep in parts.items():
            checks += [Check(f"{name}/{c.name}", c.status, c.value, c.limit, c.detail) for c in rep.checks]
        first = next(iter(parts.values()))
        report = ValidationReport(
            artifact=art.describe(),
            reference=first.reference,
            tolerance=policy.to_dict(),
            checks=checks,
            golden={},
            data=None,
            performance={"sizes": art.sizes()},
            timing={},
            parts=parts,
        )
    report.timing["total_s"] = time.perf_counter() - t_start
    if out_dir is not None:
        from .report import write_report

        write_report(report, _prepare_out(out_dir))
    return report


def _integrity_check(art: Artifact) -> Check:
    if art.integrity:
        return Check(
            "integrity",
            FAIL,
            float(len(art.integrity)),
            0.0,
            f"{len(art.integrity)} of {art.files_checked} files: " + "; ".join(art.integrity),
        )
    return Check("integrity", PASS, 0.0, 0.0, f"{art.files_checked} files match the manifest sha256")


def _validate_one(
    art: Artifact,
    ref: Reference,
    stored_only: bool,
    pre_checks: list[Check],
    policy: TolerancePolicy,
    d: Optional[EvalData],
    *,
    measure: bool,
    batch: int,
    prefix_points: int,
    say: Callable[[str], None],
) -> ValidationReport:
    g = art.graph
    types, names = g.output_types, list(g.outputs)
    timing: dict[str, float] = {}
    integer_ref = isinstance(ref, IntegerReference)
    say(
        f"{art.kind} artifact for {art.target}; graph from {art.graph_source}; reference: "
        + ("the stored golden outputs of the integer-exact interpreter" if stored_only else ref.name)
    )
    if getattr(ref, "note", None):
        say(ref.note)
    checks = [_integrity_check(art)] + list(pre_checks)

    # -- golden vectors --------------------------------------------------------------------------------
    t0 = time.perf_counter()
    xg, stored = art.golden()
    xg = np.asarray(xg, dtype=np.float32)
    if stored_only:
        ref_g = tuple(np.asarray(s, np.float64) for s in stored)
        checks.append(
            Check(
                "golden.consistency",
                SKIP,
                detail="integer artifact without a stored quantized graph: "
                "its stored golden outputs come from the integer-exact interpreter and are the reference",
            )
        )
    elif integer_ref:
        ref_g = ref(xg)
        cons = _metrics(art, stored, ref_g, types, names)
        worst = max((m.get("max_lsb_error", m["max_abs_error"]) for m in cons.values()), default=0.0)
        unit = "LSB" if all("max_lsb_error" in m for m in cons.values()) else "abs"
        checks.append(
            upper(
                "golden.consistency",
                worst,
                0.0,
                f"stored golden outputs vs the integer-exact interpreter on {ref.source}: exact (max error in {unit})",
            )
        )
    else:
        ref_g = ref(xg)
        consistency = max(
            (
                float(np.max(np.abs(np.asarray(s, np.float64) - r))) / max(1.0, float(np.max(np.abs(r))))
                for s, r in zip(stored, ref_g)
                if r.size
            ),
            default=0.0,
        )
        checks.append(
            upper(
                "golden.consistency",
                consistency,
                policy.golden_consistency,
                "stored golden outputs vs the reference on the stored graph (relative)",
            )
        )
    got_g = art.run(xg)
    golden: dict = {"input_shape": list(xg.shape), "outputs": _metrics(art, got_g, ref_g, types, names)}
    checks += _output_checks("golden", art, policy, golden["outputs"], types, names)
    pooled = [k for k, t in enumerate(types) if not t.temporal]
    if pooled and prefix_points > 1 and xg.shape[1] > 1 and not stored_only:
        curve = []
        for length in _prefix_lengths(xg.shape[1], prefix_points):
            if length == xg.shape[1]:
                a_out, r_out = got_g, ref_g
            else:
                a_out, r_out = art.run(xg[:, :length]), ref(xg[:, :length])
            ms = _metrics(art, a_out, r_out, types, names)
            point = {"steps": length, "max_abs_error": max(ms[names[k]]["max_abs_error"] for k in pooled)}
            if all("max_lsb_error" in ms[names[k]] for k in pooled):
                point["max_lsb_error"] = max(ms[names[k]]["max_lsb_error"] for k in pooled)
            curve.append(point)
        golden["pooled_error_vs_length"] = curve
    timing["golden_s"] = time.perf_counter() - t0
    say(f"golden vectors {tuple(xg.shape)}: " + ", ".join(f"{n} {_error_text(golden['outputs'][n])}" for n in names))

    # -- data --------------------------------------------------------------------------------------------
    data_rep = None
    x1 = xg[:1]
    if d is not None and stored_only:
        checks.append(
            Check(
                "data",
                SKIP,
                detail="integer artifact without a stored quantized graph (quantized.esq): "
                "no integer-exact reference for new inputs; re-export it, or pass that interpreter as "
                "reference=callable (edgeseq.validate.validate)",
            )
        )
    elif d is not None:
        t0 = time.perf_counter()
        x1 = d.x[:1]
        try:
            ref_d = ref(d.x)
        except EdgeseqError as e:  # e.g. sequences longer than an integer program's documented max_steps
            ref_d = None
            checks.append(Check("data.reference", FAIL, detail=f"the reference cannot run the data: {e}"))
        if ref_d is not None:
            got_d = run_batched(art, d.x, batch)
            data_rep = {
                "name": d.name,
                "sequences": int(d.x.shape[0]),
                "of": d.total,
                "steps": int(d.x.shape[1]),
                "outputs": _metrics(art, got_d, ref_d, types, names),
            }
            checks += _output_checks("data", art, policy, data_rep["outputs"], types, names)
            k_dec = decision_output(types)
            if d.y is not None and k_dec is not None:
                n_cls = types[k_dec].features
                if d.y.max(initial=0) < n_cls:
                    acc_a, acc_r = accuracy(got_d[k_dec], d.y), accuracy(ref_d[k_dec], d.y)
                    data_rep["accuracy"] = {"output": names[k_dec], "artifact": acc_a, "reference": acc_r}
                    checks.append(
                        upper(
                            "data.accuracy_drop",
                            abs(acc_r - acc_a),
                            policy.max_accuracy_drop,
                            f"artifact {acc_a:.4f} vs reference {acc_r:.4f}"
                            + (" (the integer-exact interpreter)" if integer_ref else ""),
                        )
                    )
                    if integer_ref:
                        data_rep["accuracy"]["float_model"] = _float_accuracy(ref, d, k_dec)
                else:
                    checks.append(
                        Check(
                            "data.accuracy_drop", SKIP, detail=f"labels exceed the {n_cls} outputs of '{names[k_dec]}'"
                        )
                    )
            acc = data_rep.get("accuracy")
            say(
                f"data {d.name}: {d.x.shape[0]} sequences: "
                + ", ".join(f"{n} {_error_text(data_rep['outputs'][n])}" for n in names)
                + (f"; accuracy artifact {acc['artifact']:.4f} / reference {acc['reference']:.4f}" if acc else "")
            )
        timing["data_s"] = time.perf_counter() - t0

    # -- cost ----------------------------------------------------------------------------------------------
    perf: dict = {"sizes": art.sizes()}
    if measure:
        t0 = time.perf_counter()
        if art.native:
            lat, err = safe(lambda: art.latency(x1))
            perf["latency"] = lat
            if err:
                perf["latency_error"] = err
        else:
            ins, err = safe(lambda: art.instructions(x1))
            perf["instructions"] = ins
            if err:
                perf["instructions_error"] = err
        timing["measure_s"] = time.perf_counter() - t0
    refd = ref.describe()
    if stored_only:
        refd = {
            "requested": refd["requested"],
            "used": "stored golden outputs",
            "name": "the integer-exact interpreter's outputs stored at export (golden vectors)",
            "dtype": "stored",
            "seconds": 0.0,
            "sequences": 0,
            "steps": 0,
        }
    return ValidationReport(
        artifact=art.describe(),
        reference=refd,
        tolerance=policy.to_dict(),
        checks=checks,
        golden=golden,
        data=data_rep,
        performance=perf,
        timing=timing,
    )


def _float_accuracy(ref: "IntegerReference", d: EvalData, k_dec: int) -> Optional[float]:
    """Task accuracy of the float graph the integer program was quantized from (information only)."""
    try:
        return accuracy(ref.float_model(d.x)[k_dec], d.y)
    except EdgeseqError:
        return None


def _check_out(out) -> Path:
    """Where the report goes, checked before the validation runs (nothing is created yet)."""
    from ..errors import ArtifactError
    from ..util.fs import check_parent

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ArtifactError("exists and is not a directory", where=str(out), hint="pass --out DIR")
    if out.is_dir():
        if not os.access(out, os.W_OK | os.X_OK):
            raise ArtifactError("output directory is not writable", where=str(out), hint="pass --out DIR")
    else:
        check_parent(out)
    return out


def _prepare_out(out) -> Path:
    from ..errors import ArtifactError

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArtifactError(
            f"cannot create the output directory ({e.strerror})",
            where=str(out),
            hint="pass --out DIR with a writable directory",
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ArtifactError("output directory is not writable", where=str(out), hint="pass --out DIR")
    return out
