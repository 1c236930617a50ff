"""Quantization plans: bits, scales and granularity of every quantization point and weight.

:func:`make_plan` turns calibration statistics (:mod:`edgeseq.quant.calibrate`) and a
:class:`~edgeseq.quant.config.QuantConfig` into a :class:`QuantPlan`. Every entry is symmetric
(real = scale * q) except the graph input, which may carry a per-channel offset
(real = scale * q + offset, applied by the boundary quantizer and folded into the consumers'
biases). Scales are float64 vectors with one value per channel; a per-tensor entry repeats one
value.

Rules by role (see :class:`edgeseq.quant.sim.Point`):

- values consumed only by linear maps (matvec inputs, readouts) may have per-channel scales: the
  consumer folds them into its weight columns (this is also how SmoothQuant migration and the
  per-channel input quantizer are realised); every other value is per tensor;
- a value whose only consumer is a tanh/sigmoid Activation is that table's input ('pre' rules);
- 'pre' ranges are capped where the function saturates to within half an output LSB;
- 'unit' outputs of tanh / sigmoid have the fixed scale 2^-(bits-1);
- states use the state observer (min/max by default) times ``state_margin``.

Weights are planned when the graph is lowered (their scales absorb the scales of their inputs);
the lowering records them in :attr:`QuantPlan.weights`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from ..errors import ConfigError
from ..ir import ops as O
from ..ir.activations import CLAMP_ACTS
from ..ir.cells import has_step_program, step_program
from ..ir.graph import Graph
from ..ir.step.analysis import input_matrices, output_amplitude, state_thresholds
from ..ir.types import Act
from .config import Granularity, Observer, OutlierAction, QuantConfig
from .observe import CalibrationStats, TensorStats, observe_amax, observe_range, resolve_alias


def qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


@dataclass
class TensorPlan:
    """Quantization of one point: q = clamp(round(x / scale)) in ``bits`` (per-channel scale vector).

    ``offset`` (graph input only) shifts the range: q = clamp(rint((x - offset) / scale)).
    ``split`` lists channels carried in a separate ``split_bits`` vector (their scales are in
    ``scale`` too). ``absorbed`` marks a graph input quantized together with the BatchNorm after
    it (the BatchNorm output is then the ``boundary`` point)."""

    name: str
    role: str
    bits: int
    scale: np.ndarray
    granularity: str
    observer: Optional[str] = None
    amax: float = 0.0
    offset: Optional[np.ndarray] = None
    fn: Optional[str] = None
    note: str = ""
    boundary: bool = False
    absorbed: bool = False
    split: tuple = ()
    split_bits: int = 16

    @property
    def n(self) -> int:
        return int(self.scale.size)

    @property
    def per_tensor(self) -> bool:
        return bool(np.all(self.scale == self.scale.flat[0])) and not self.split

    def channel_bits(self) -> np.ndarray:
        b = np.full(self.n, self.bits, dtype=np.int64)
        if self.split:
            b[list(self.split)] = self.split_bits
        return b

    def inv_scale(self) -> np.ndarray:
        return 1.0 / self.scale

    def fake(self, x: np.ndarray) -> np.ndarray:
        """Quantize-dequantize ``x`` exactly as the integer program rounds this point."""
        if self.absorbed or self.role in ("spikes", "concat"):
            return x
        bits = self.channel_bits() if self.split else self.bits
        lo = -(np.left_shift(1, np.asarray(bits) - 1))
        hi = np.left_shift(1, np.asarray(bits) - 1) - 1
        if self.boundary or self.role == "input":
            off = 0.0 if self.offset is None else self.offset
            q = np.clip(np.rint((x - off) * self.inv_scale()), lo, hi)
            return q * self.scale + off
        # half up, as the integer requantization; the small bias keeps exact ties (which float
        # rounding may put a hair below .5) on the integer program's side
        q = np.clip(np.floor(x / self.scale + (0.5 + 1e-7)), lo, hi)
        return q * self.scale

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "bits": self.bits,
            "granularity": self.granularity,
            "observer": self.observer,
            "amax": self.amax,
            "scale": [float(v) for v in self.scale],
        }
        if self.offset is not None:
            d["offset"] = [float(v) for v in self.offset]
        for k in ("fn", "note"):
            if getattr(self, k):
                d[k] = getattr(self, k)
        if self.boundary:
            d["boundary"] = True
        if self.absorbed:
            d["absorbed"] = True
        if self.split:
            d["split"] = [int(c) for c in self.split]
            d["split_bits"] = self.split_bits
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "TensorPlan":
        return cls(
            name=d["name"],
            role=d["role"],
            bits=int(d["bits"]),
            scale=np.asarray(d["scale"], np.float64),
            granularity=d["granularity"],
            observer=d.get("observer"),
            amax=float(d.get("amax", 0.0)),
            offset=None if d.get("offset") is None else np.asarray(d["offset"], np.float64),
            fn=d.get("fn"),
            note=d.get("note", ""),
            boundary=bool(d.get("boundary", False)),
            absorbed=bool(d.get("absorbed", False)),
            split=tuple(d.get("split", ())),
            split_bits=int(d.get("split_bits", 16)),
        )


@dataclass
class WeightPlan:
    """A quantized weight matrix: ``bits``, per-row (``per_channel``) or single ``scale`` in the
    units of its (scale-absorbed) input; ``sqnr_db`` of the quantized matrix."""

    name: str
    bits: int
    granularity: str
    scale: np.ndarray
    shape: tuple
    sqnr_db: float = float("inf")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "bits": self.bits,
            "granularity": self.granularity,
            "scale_min": float(self.scale.min()),
            "scale_max": float(self.scale.max()),
            "scale": [float(v) for v in self.scale],
            "shape": list(self.shape),
            "sqnr_db": None if math.isinf(self.sqnr_db) else float(self.sqnr_db),
        }


@dataclass
class QuantPlan:
    """Per point :class:`TensorPlan` entries, value -> state aliases, weight plans and the config."""

    entries: dict[str, TensorPlan]
    aliases: dict[str, str]
    config: QuantConfig
    weights: dict[str, WeightPlan] = field(default_factory=dict)
    outliers: dict[str, dict] = field(default_factory=dict)

    def resolve(self, name: str) -> str:
        return resolve_alias(self.aliases, name)

    def __getitem__(self, name: str) -> TensorPlan:
        try:
            return self.entries[self.resolve(name)]
        except KeyError:
            raise ConfigError(f"the quantization plan has no entry for '{name}'") from None

    def __contains__(self, name: str) -> bool:
        return self.resolve(name) in self.entries

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "entries": [e.to_dict() for e in self.entries.values()],
            "aliases": dict(self.aliases),
            "weights": [w.to_dict() for w in self.weights.values()],
            "outliers": self.outliers,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "QuantPlan":
        try:
            entries = [TensorPlan.from_dict(e) for e in d["entries"]]
            weights = {}
            for w in d.get("weights", []):
                weights[w["name"]] = WeightPlan(
                    w["name"],
                    int(w["bits"]),
                    w["granularity"],
                    np.asarray(w.get("scale", [w["scale_min"], w["scale_max"]]), np.float64),
                    tuple(w["shape"]),
                    float("inf") if w.get("sqnr_db") is None else float(w["sqnr_db"]),
                )
            return cls(
                {e.name: e for e in entries},
                dict(d.get("aliases", {})),
                QuantConfig.from_dict(d["config"]),
                weights,
                dict(d.get("outliers", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"malformed quantization plan ({type(e).__name__}: {e})") from None

    def summary(self) -> str:
        rows = [("point", "role", "bits", "granularity", "scale", "range", "observer", "note")]
        for e in self.entries.values():
            sc = f"{e.scale.min():.3g}" if e.per_tensor else f"{e.scale.min():.3g}..{e.scale.max():.3g}"
            rows.append(
                (
                    e.name,
                    e.role + (f":{e.fn}" if e.fn else ""),
                    str(e.bits) + (f"+{e.split_bits}x{len(e.split)}" if e.split else ""),
                    e.granularity,
                    sc,
                    f"{e.amax:.4g}",
                    e.observer or "-",
                    e.note,
                )
            )
        for w in self.weights.values():
            rows.append(
                (
                    w.name,
                    "weight",
                    str(w.bits),
                    w.granularity,
                    f"{w.scale.min():.3g}..{w.scale.max():.3g}",
                    "-",
                    "minmax",
                    f"SQNR {w.sqnr_db:.1f} dB" if not math.isinf(w.sqnr_db) else "",
                )
            )
        wd = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(x) for c, x in zip(r, wd)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * x for x in wd))
        return "\n".join(lines)

    def high_precision(self) -> list[str]:
        """Points quantized above the config's activation width (8 -> 16 promotions)."""
        return [k for k, o in self.config.overrides.items() if o.bits and o.bits > self.config.activation_bits]


# ----------------------------------------------------------------------------------------------
# graph facts used by the planner


def _scan_reads_linearly(graph: Graph, node) -> bool:
    """A scan whose step program reads its input only through matrix products."""
    if not has_step_program(node.op):
        return False
    return input_matrices(step_program(node.op, graph.type_of(node.inputs[0]).features)) is not None


def absorbing_consumer(graph: Graph, node, value: str) -> bool:
    """True if ``node`` consumes ``value`` only through linear maps (weights can absorb a
    per-channel input scale and offset)."""
    return isinstance(node.op, (O.Linear, O.Conv1d, O.Readout)) or _scan_reads_linearly(graph, node)


def offset_consumer(graph: Graph, node) -> bool:
    """Consumers that can fold an input offset into a bias (linear maps with a bias path)."""
    return isinstance(node.op, O.Linear) or _scan_reads_linearly(graph, node)


def lut_cap(fn: str, out_bits: int) -> Optional[float]:
    """Input magnitude beyond which ``fn`` is within half an output LSB of its limit."""
    eps = 2.0**-out_bits  # half an LSB of a Q(bits-1) unit output
    if fn == "tanh":
        return float(math.atanh(1.0 - eps))
    if fn == "sigmoid":
        return float(math.log(1.0 / eps - 1.0))
    if fn == "hardsigmoid":
        return 3.0
    return None


def _spike_scale(graph: Graph, value: str) -> np.ndarray:
    prod = graph.producers().get(value)
    n = graph.type_of(value).features
    sc = None
    if prod is not None and has_step_program(prod.op):
        prog = step_program(prod.op, graph.type_of(prod.inputs[0]).features)
        sc = output_amplitude(prog, prod.outputs.index(value))
    if sc is None:
        return np.ones(n)
    s = np.broadcast_to(np.asarray(sc, np.float64), (n,)).copy()
    return s


# ----------------------------------------------------------------------------------------------
# the planner


def make_plan(graph: Graph, stats: CalibrationStats, config: QuantConfig | str | None = None) -> QuantPlan:
    """Bits and scales of every quantization point of ``graph`` (see the module docstring)."""
    from .config import resolve_config

    cfg = resolve_config(config)
    consumers = graph.consumers()
    producers = graph.producers()
    in_name = graph.inputs[0].name
    specs = dict(stats.specs)
    entries: dict[str, TensorPlan] = {}
    outl: dict[str, dict] = {}

    def cons_of(v):
        return consumers.get(v, [])

    def absorbable(v):
        cs = cons_of(v)
        return bool(cs) and v not in graph.outputs and all(absorbing_consumer(graph, n, v) for n in cs)

    def lut_consumer(v) -> Optional[str]:
        cs = cons_of(v)
        if (
            len(cs) == 1
            and isinstance(cs[0].op, O.Activation)
            and cs[0].op.fn not in CLAMP_ACTS
            and v not in graph.outputs
        ):
            return cs[0].op.fn.value
        return None

    def relu_only(v) -> bool:
        cs = cons_of(v)
        return (
            bool(cs)
            and v not in graph.outputs
            and all(isinstance(n.op, O.Activation) and n.op.fn is Act.RELU for n in cs)
        )

    def override(name, bits):
        o = cfg.override(name)
        return o.bits if o.bits is not None else bits

    def observer_of(name, default):
        o = cfg.override(name)
        return (o.observer or default).value

    # share points that widen their reference
    widen: dict[str, list[str]] = {}
    for name, sp in specs.items():
        if sp.role == "share" and sp.widen and sp.ref:
            widen.setdefault(stats.resolve(sp.ref), []).append(name)

    def absmax_with_widen(name, amax):
        for w in widen.get(name, []):
            amax = max(amax, stats.points[w].absmax)
        return amax

    def sym(name, st: TensorStats, bits, obs, per_channel=False, margin=1.0, cap=None, positive=False):
        if positive and st.rows.size:
            tmp = TensorStats(st.n, 1)
            tmp.rows = np.maximum(st.rows, 0)
            tmp.ch_min = np.zeros(st.n)
            tmp.ch_max = np.maximum(st.ch_max, 0)
            st = tmp
        a = observe_amax(st, obs, bits, per_channel, cfg.percentile)
        if not per_channel:
            a = absmax_with_widen(name, float(a))
        a = np.asarray(a, np.float64) * margin
        if cap is not None:
            a = np.minimum(a, cap)
        a = np.maximum(a, 1e-8)
        scale = np.broadcast_to(a / qmax(bits), (st.n,)).astype(np.float64).copy()
        return scale, float(np.max(a))

    bn_absorbs_input = False
    in_cons = cons_of(in_name)
    if cfg.input_per_channel and len(in_cons) == 1 and isinstance(in_cons[0].op, O.BatchNorm):
        bn_absorbs_input = True

    pending = []
    for name, sp in specs.items():
        st = stats.points[name]
        role = sp.role
        if role == "input":
            bits = override(name, cfg.activation_bits)
            obs = observer_of(name, cfg.observer)
            if bn_absorbs_input:
                entries[name] = TensorPlan(
                    name,
                    role,
                    bits,
                    np.ones(st.n),
                    "per_channel",
                    None,
                    st.absmax,
                    absorbed=True,
                    note=f"quantized with {in_cons[0].name}",
                )
                continue
            per_ch = cfg.input_per_channel and absorbable(name)
            use_off = cfg.input_offset and per_ch and all(offset_consumer(graph, n) for n in cons_of(name))
            if per_ch:
                if use_off:
                    lo, hi = observe_range(st, obs, cfg.percentile)
                    off = (lo + hi) / 2.0
                    amax = np.maximum((hi - lo) / 2.0, 1e-8)
                else:
                    off = None
                    amax = np.maximum(np.asarray(observe_amax(st, obs, bits, True, cfg.percentile)), 1e-8)
                scale = amax / qmax(bits)
                e = TensorPlan(
                    name,
                    role,
                    bits,
                    scale,
                    "per_channel",
                    obs,
                    float(amax.max()),
                    offset=off,
                    note="offset" if off is not None else "",
                )
            else:
                scale, a = sym(name, st, bits, obs)
                e = TensorPlan(name, role, bits, scale, "per_tensor", obs, a)
            if cfg.outlier_action is OutlierAction.SPLIT and per_ch is False and absorbable(name):
                e = _split(e, st, stats, cfg, name)
            entries[name] = e
        elif role == "act" or (role == "pre" and sp.fn == "relu" and not sp.state):
            fn = lut_consumer(name)
            is_boundary = bn_absorbs_input and name == in_cons[0].outputs[0]
            if role == "act" and sp.bits is None and _is_readout_sum(graph, name):
                bits = override(name, cfg.readout_bits)
            elif fn is not None:
                bits = override(name, cfg.lut_bits)
            else:
                bits = override(name, cfg.activation_bits)
            obs = observer_of(name, cfg.observer)
            if name in graph.outputs:
                # model outputs (logits) decide: never clip them, and give them the readout width
                bits = max(bits, override(name, cfg.readout_bits))
                obs = observer_of(name, Observer.MINMAX)
            cap = lut_cap(fn, cfg.lut_bits) if fn else None
            gran = cfg.override(name).granularity or cfg.activation_granularity
            made = producers.get(name)  # a table's output: one scale (the table maps to one grid)
            from_table = made is not None and isinstance(made.op, O.Activation) and made.op.fn not in CLAMP_ACTS
            can_pc = absorbable(name) and fn is None and not from_table
            pc = can_pc and (gran is Granularity.PER_CHANNEL or is_boundary)
            positive = relu_only(name)
            if pc:
                scale, a = sym(name, st, bits, obs, per_channel=True, positive=positive)
                e = TensorPlan(name, role, bits, scale, "per_channel", obs, a, fn=fn)
            else:
                scale, a = sym(name, st, bits, obs, cap=cap, positive=positive)
                e = TensorPlan(
                    name,
                    "pre" if fn else role,
                    bits,
                    scale,
                    "per_tensor",
                    obs,
                    a,
                    fn=fn,
                    note="relu range" if positive else "",
                )
                if can_pc and cfg.outlier_action is not OutlierAction.NONE:
                    e = _outlier_fix(graph, e, st, stats, cfg, name, outl)
            if is_boundary:
                e.boundary = True
                e.note = (e.note + " boundary").strip()
            entries[name] = e
        elif role in ("state", "inner"):
            bits = override(name, cfg.state_bits)
            obs = observer_of(name, cfg.state_observer)
            floor = _threshold_floor(graph, name)
            scale, a = sym(name, st, bits, obs, margin=cfg.state_margin)
            if floor is not None and a < floor:
                a = floor
                scale = np.full(st.n, a / qmax(bits))
            entries[name] = TensorPlan(name, role, bits, scale, "per_tensor", obs, a)
        elif role == "pre":
            bits = override(name, cfg.state_bits if sp.state else cfg.lut_bits)
            obs = observer_of(name, cfg.observer)
            out_bits = cfg.state_bits if sp.state else cfg.lut_bits
            cap = lut_cap(sp.fn, out_bits) if sp.fn else None
            scale, a = sym(name, st, bits, obs, cap=cap)
            entries[name] = TensorPlan(
                name,
                role,
                bits,
                scale,
                "per_tensor",
                obs,
                a,
                fn=sp.fn,
                note="capped" if cap is not None and a >= cap - 1e-12 else "",
            )
        elif role == "unit":
            bits = override(name, cfg.state_bits if sp.state else cfg.lut_bits)
            entries[name] = TensorPlan(
                name, role, bits, np.full(st.n, 2.0 ** -(bits - 1)), "fixed", None, 1.0, fn=sp.fn
            )
        elif role == "spikes":
            entries[name] = TensorPlan(name, role, 2, _spike_scale(graph, name), "fixed", None, 1.0)
        else:
            pending.append(name)

    # derived points, resolved once their references are
    for _ in range(len(pending) + 1):
        left = []
        for name in pending:
            sp = specs[name]
            st = stats.points[name]
            refs = [stats.resolve(r) for r in ((sp.ref,) if sp.ref else sp.refs)]
            if not all(r in entries for r in refs):
                left.append(name)
                continue
            if sp.role == "share":
                ref = entries[refs[0]]
                bits = sp.bits or ref.bits
                entries[name] = TensorPlan(
                    name, "share", bits, ref.scale.copy(), ref.granularity, None, ref.amax, note=f"scale of {refs[0]}"
                )
            elif sp.role == "mean":
                ref = entries[refs[0]]
                k = max(cfg.readout_bits - ref.bits, 0)
                bits = max(cfg.readout_bits, ref.bits)
                entries[name] = TensorPlan(
                    name,
                    "mean",
                    bits,
                    ref.scale / (1 << k),
                    ref.granularity,
                    None,
                    ref.amax,
                    note=f"scale of {refs[0]} / 2^{k}",
                )
            elif sp.role == "concat":
                parts = [entries[r] for r in refs]
                scale = np.concatenate([p.scale for p in parts])
                bits = max(p.bits for p in parts)
                gran = "per_tensor" if np.all(scale == scale[0]) else "per_channel"
                entries[name] = TensorPlan(name, "concat", bits, scale, gran, None, max(p.amax for p in parts))
            else:
                raise ConfigError(f"unknown point role '{sp.role}' for '{name}'")
        if not left:
            break
        pending = left
    else:  # pragma: no cover - references always resolve on valid graphs
        raise ConfigError(f"cannot resolve the scales of: {', '.join(pending)}")
    return QuantPlan(entries, dict(stats.aliases), cfg, {}, outl)


def _threshold_floor(graph: Graph, name: str) -> Optional[float]:
    """A membrane state must represent its firing threshold (with 25% headroom)."""
    if "/" not in name:
        return None
    node_name, key = name.split("/", 1)
    try:
        node = graph.node(node_name)
    except ConfigError:
        return None
    if not has_step_program(node.op):
        return None
    thr = state_thresholds(step_program(node.op, graph.type_of(node.inputs[0]).features)).get(key)
    return None if thr is None else 1.25 * thr


def _is_readout_sum(graph: Graph, name: str) -> bool:
    prod = graph.producers().get(name)
    return prod is not None and isinstance(prod.op, O.Readout)


def _outlier_fix(graph, e: TensorPlan, st: TensorStats, stats, cfg: QuantConfig, name: str, outl: dict) -> TensorPlan:
    from .outliers import consumer_column_max, detect_outliers, smooth_scales

    rep = detect_outliers(st, cfg.outlier_threshold)
    if not rep["channels"]:
        return e
    outl[name] = rep
    bits = e.bits
    if cfg.outlier_action is OutlierAction.PER_CHANNEL:
        a = np.maximum(np.asarray(observe_amax(st, e.observer, bits, True, cfg.percentile)), 1e-8)
        e.scale = a / qmax(bits)
        e.granularity = "per_channel"
        e.note = f"outliers {rep['channels']}: per-channel"
    elif cfg.outlier_action is OutlierAction.SMOOTH:
        a = np.maximum(np.asarray(observe_amax(st, e.observer, bits, True, cfg.percentile)), 1e-8)
        wmax = consumer_column_max(graph, name, st.n)
        e.scale = smooth_scales(a, wmax, cfg.smooth_alpha, bits)
        e.granularity = "per_channel"
        e.note = f"outliers {rep['channels']}: smoothquant alpha={cfg.smooth_alpha}"
    elif cfg.outlier_action is OutlierAction.SPLIT:
        e = _split(e, st, stats, cfg, name)
    return e


def _split(e: TensorPlan, st: TensorStats, stats, cfg: QuantConfig, name: str) -> TensorPlan:
    from .outliers import detect_outliers

    rep = detect_outliers(st, cfg.outlier_threshold)
    ch = rep["channels"]
    if not ch:
        return e
    bits = e.bits
    normal = np.setdiff1d(np.arange(st.n), ch)
    a_norm = float(np.max(st.ch_absmax[normal])) if normal.size else 1.0
    if e.observer == "percentile" and st.rows.size and normal.size:
        a_norm = float(min(np.percentile(np.abs(st.rows[:, normal]), cfg.percentile), a_norm))
    scale = np.full(st.n, max(a_norm, 1e-8) / qmax(bits))
    a_hi = float(np.max(st.ch_absmax[ch]))
    scale[ch] = max(a_hi, 1e-8) / qmax(cfg.split_bits)
    e.scale = scale
    e.split = tuple(int(c) for c in ch)
    e.split_bits = cfg.split_bits
    e.granularity = "split"
    e.note = f"outlier channels {list(e.split)} in int{cfg.split_bits}"
    return e
