"""IR ops: one frozen dataclass per op, registered by kind.

An op holds parameters and attributes only; where it sits in a graph (its name, inputs, outputs) is
the job of :class:`~edgeseq.ir.graph.Node`. Each op declares

- ``check()``: its own parameters are consistent (shapes, ranges);
- ``infer(inputs)``: the :class:`ValueType` of each output given the input types;
- ``state_shapes(inputs)``: the per-example shape of each state tensor it carries between steps.

What an op *computes* is defined once, by the float64 reference interpreter
(:mod:`edgeseq.ir.interpret`); every exporter, runner and quantizer is tested against it. The
docstrings below state the equations; the interpreter implements exactly these.

Field kinds are declared with :func:`array`, :func:`enum_field` and :func:`struct_field`; that
metadata drives freezing, serialisation and the ``edgeseq ops`` table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from ..errors import ConfigError, ShapeError
from .step.program import StepProgram
from .types import Act, Discretizer, ReadoutMode, Recurrence, ResetRule, ValueType, parse_enum

Array = np.ndarray

# ----------------------------------------------------------------------------------------------
# field declarations


def array(optional: bool = False, doc: str = ""):
    """A parameter tensor. Stored read-only; serialised to the array file."""
    meta = {"kind": "array", "doc": doc}
    return field(default=None, metadata=meta) if optional else field(metadata=meta)


def enum_field(cls, default=dataclasses.MISSING, doc: str = ""):
    return field(default=default, metadata={"kind": "enum", "enum": cls, "doc": doc})


def program_field(doc: str = ""):
    """A step program (:class:`edgeseq.ir.step.StepProgram`); its parameters serialise as arrays."""
    return field(metadata={"kind": "program", "doc": doc})


def struct_field(cls, optional: bool = False, doc: str = ""):
    meta = {"kind": "struct", "struct": cls, "doc": doc}
    return field(default=None, metadata=meta) if optional else field(metadata=meta)


class Struct:
    """Frozen dataclass base: arrays become read-only copies, enum strings are parsed."""

    def __post_init__(self) -> None:
        for f in fields(self):
            kind = f.metadata.get("kind")
            value = getattr(self, f.name)
            if kind == "array" and value is not None:
                a = np.array(value, copy=True)
                if a.dtype.kind not in "fiub":
                    raise ShapeError(f"parameter '{f.name}' must be numeric, got dtype {a.dtype}")
                if a.dtype.kind == "b":
                    a = a.astype(np.int8)
                a.setflags(write=False)
                object.__setattr__(self, f.name, a)
            elif kind == "enum":
                object.__setattr__(self, f.name, parse_enum(f.metadata["enum"], value, f.name))
            elif kind == "struct" and isinstance(value, dict):
                object.__setattr__(self, f.name, f.metadata["struct"](**value))
            elif kind is None and isinstance(value, (np.integer, np.floating, np.bool_)):
                object.__setattr__(self, f.name, value.item())

    def arrays(self, prefix: str = "") -> dict[str, Array]:
        """All parameter arrays, nested structs flattened as 'struct.field'."""
        out: dict[str, Array] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            kind = f.metadata.get("kind")
            if kind == "array" and value is not None:
                out[prefix + f.name] = value
            elif kind == "struct" and value is not None:
                out.update(value.arrays(prefix + f.name + "."))
            elif kind == "program":
                out.update({f"{prefix}{f.name}.{k}": v for k, v in value.params.items()})
        return out

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


def _vec_or_scalar(name: str, a: Optional[Array], n: int) -> None:
    if a is not None and a.shape not in ((), (1,), (n,)):
        raise ShapeError(f"'{name}' must be a scalar or have shape ({n},), got {a.shape}")


def _shape(name: str, a: Optional[Array], shape: tuple[int, ...]) -> None:
    if a is not None and a.shape != shape:
        raise ShapeError(f"'{name}' must have shape {shape}, got {a.shape}")


def _ndim(name: str, a: Array, ndim: int) -> None:
    if a.ndim != ndim:
        raise ShapeError(f"'{name}' must have {ndim} dimensions, got shape {a.shape}")


# ----------------------------------------------------------------------------------------------
# spiking neuron parameters (shared by LIF, CuBaLIF and the L2MU populations)


@dataclass(frozen=True, eq=False)
class NeuronParams(Struct):
    """Parameters of a population of (current-based) leaky integrate-and-fire neurons.

    With R_t = H(U_{t-1} - threshold) (H strict, x > 0) and beta, alpha clipped to [0, 1]:

        leaky:     U_t = beta U_{t-1} + I_t                      then the reset rule
        synaptic:  S^syn_t = alpha S^syn_{t-1} + I_t;  U_t = beta U_{t-1} + S^syn_t
        spike:     S_t = spike_scale * H(U_t - threshold)

    ``reset_delay=True`` applies the reset of a spike at step t at step t+1 (via R_{t+1});
    ``reset_delay=False`` additionally applies (S_t/spike_scale - R_t) at step t, exactly as snntorch.
    beta, alpha, threshold and spike_scale are scalars or one value per neuron.
    """

    beta: Array = array()
    threshold: Array = array()
    alpha: Optional[Array] = array(optional=True, doc="synaptic decay; None for plain LIF")
    reset: ResetRule = enum_field(ResetRule, ResetRule.SUBTRACT)
    reset_delay: bool = True
    spike_scale: Optional[Array] = array(optional=True, doc="graded spike amplitude; None means 1")

    @property
    def synaptic(self) -> bool:
        return self.alpha is not None

    def check_size(self, n: int) -> None:
        for name in ("beta", "threshold", "alpha", "spike_scale"):
            _vec_or_scalar(name, getattr(self, name), n)

    def state_names(self) -> tuple[str, ...]:
        return ("syn", "mem") if self.synaptic else ("mem",)


# ----------------------------------------------------------------------------------------------
# op base and registry

OP_REGISTRY: dict[str, type["Op"]] = {}


def register_op(cls):
    """Class decorator: make ``cls`` a frozen dataclass op and register it under ``cls.kind``."""
    cls = dataclass(frozen=True, eq=False)(cls)
    if cls.kind in OP_REGISTRY:
        raise ConfigError(f"op kind '{cls.kind}' registered twice")
    OP_REGISTRY[cls.kind] = cls
    return cls


def op_class(kind: str) -> type["Op"]:
    try:
        return OP_REGISTRY[kind]
    except KeyError:
        raise ConfigError(f"unknown op kind '{kind}'; registered kinds: {', '.join(sorted(OP_REGISTRY))}") from None


@dataclass(frozen=True, eq=False)
class Op(Struct):
    kind: ClassVar[str] = "Op"
    category: ClassVar[str] = "layer"  # layer | norm | activation | elementwise | readout | scan | spiking
    n_inputs: ClassVar[Optional[int]] = 1  # None: two or more

    def check(self) -> None:
        """Raise ShapeError/ConfigError if the parameters are inconsistent."""

    def infer(self, ins: Sequence[ValueType]) -> tuple[ValueType, ...]:
        raise NotImplementedError

    def state_shapes(self, ins: Sequence[ValueType]) -> dict[str, tuple[int, ...]]:
        return {}

    @property
    def is_scan(self) -> bool:
        return self.category in ("scan", "spiking")

    def num_params(self) -> int:
        return int(sum(a.size for a in self.arrays().values()))

    # helpers
    def _one_temporal(self, ins: Sequence[ValueType]) -> ValueType:
        if not ins[0].temporal:
            raise ShapeError(f"{self.kind} needs a temporal (B, T, F) input, got {ins[0].describe()}")
        return ins[0]

    def _features(self, ins: Sequence[ValueType], expected: int, what: str = "input") -> None:
        if ins[0].features != expected:
            raise ShapeError(f"{self.kind} expects {expected} {what} features, got {ins[0].features}")


# ----------------------------------------------------------------------------------------------
# feed-forward ops


@register_op
class Linear(Op):
    """y = x W^T + b, applied to every step (or to a pooled value)."""

    kind = "Linear"
    weight: Array = array(doc="(out, in)")
    bias: Optional[Array] = array(optional=True, doc="(out,)")

    def check(self):
        _ndim("weight", self.weight, 2)
        _shape("bias", self.bias, (self.weight.shape[0],))

    def infer(self, ins):
        self._features(ins, self.weight.shape[1])
        return (ValueType(self.weight.shape[0], ins[0].temporal),)


@register_op
class Conv1d(Op):
    """Causal 1-D convolution over time (left zero padding of (K-1)*dilation, stride 1):

    y_t[o] = b[o] + sum_{c, k} W[o, c, k] x_{t - (K-1-k)*dilation}[g(o)*C_g + c]
    The last (K-1)*dilation inputs are its streaming state.
    """

    kind = "Conv1d"
    weight: Array = array(doc="(out, in/groups, K)")
    bias: Optional[Array] = array(optional=True, doc="(out,)")
    dilation: int = 1
    groups: int = 1

    def check(self):
        _ndim("weight", self.weight, 3)
        out = self.weight.shape[0]
        _shape("bias", self.bias, (out,))
        if self.dilation < 1 or self.groups < 1 or out % self.groups:
            raise ShapeError(f"invalid dilation {self.dilation} / groups {self.groups} for {out} outputs")

    @property
    def in_features(self) -> int:
        return self.weight.shape[1] * self.groups

    @property
    def history(self) -> int:
        return (self.weight.shape[2] - 1) * self.dilation

    def infer(self, ins):
        self._one_temporal(ins)
        self._features(ins, self.in_features)
        return (ValueType(self.weight.shape[0]),)

    def state_shapes(self, ins):
        return {"buf": (self.history, self.in_features)} if self.history else {}


@register_op
class LayerNorm(Op):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias, over the feature axis."""

    kind = "LayerNorm"
    category = "norm"
    weight: Optional[Array] = array(optional=True)
    bias: Optional[Array] = array(optional=True)
    eps: float = 1e-5

    def infer(self, ins):
        n = ins[0].features
        _shape("weight", self.weight, (n,))
        _shape("bias", self.bias, (n,))
        return (ValueType(n, ins[0].temporal),)


@register_op
class BatchNorm(Op):
    """Inference-mode batch norm: y = (x - mean) / sqrt(var + eps) * weight + bias (foldable)."""

    kind = "BatchNorm"
    category = "norm"
    mean: Array = array()
    var: Array = array()
    weight: Optional[Array] = array(optional=True)
    bias: Optional[Array] = array(optional=True)
    eps: float = 1e-5

    def check(self):
        _ndim("mean", self.mean, 1)
        n = self.mean.shape[0]
        for name in ("var", "weight", "bias"):
            _shape(name, getattr(self, name), (n,))
        if np.any(np.asarray(self.var) + self.eps <= 0):
            raise ShapeError("'var' + eps must be positive")

    def infer(self, ins):
        self._features(ins, self.mean.shape[0])
        return (ValueType(self.mean.shape[0], ins[0].temporal),)


@register_op
class Activation(Op):
    """Pointwise activation ``fn`` (slope for leaky_relu, lo/hi for hardtanh)."""

    kind = "Activation"
    category = "activation"
    fn: Act = enum_field(Act)
    slope: float = 0.01
    lo: float = -1.0
    hi: float = 1.0

    def infer(self, ins):
        spikes = ins[0].spikes and self.fn in (Act.IDENTITY, Act.RELU)
        return (ValueType(ins[0].features, ins[0].temporal, spikes),)


@register_op
class Add(Op):
    """Elementwise sum of two values of the same type (residual connections)."""

    kind = "Add"
    category = "elementwise"
    n_inputs = 2

    def infer(self, ins):
        a, b = ins
        if (a.features, a.temporal) != (b.features, b.temporal):
            raise ShapeError(f"Add inputs differ: {a.describe()} vs {b.describe()}")
        return (ValueType(a.features, a.temporal),)


@register_op
class Concat(Op):
    """Concatenation of two or more values along the feature axis."""

    kind = "Concat"
    category = "elementwise"
    n_inputs = None

    def infer(self, ins):
        if len({v.temporal for v in ins}) != 1:
            raise ShapeError("Concat inputs must all be temporal or all pooled")
        return (ValueType(sum(v.features for v in ins), ins[0].temporal, all(v.spikes for v in ins)),)


@register_op
class Readout(Op):
    """Temporal readout to a pooled (B, F) value: the last step, the mean or the sum (spike count).

    In streaming execution the output after a chunk is the readout over every step seen so far.
    """

    kind = "Readout"
    category = "readout"
    mode: ReadoutMode = enum_field(ReadoutMode)

    def infer(self, ins):
        v = self._one_temporal(ins)
        return (ValueType(v.features, temporal=False),)

    def state_shapes(self, ins):
        n = ins[0].features
        if self.mode is ReadoutMode.LAST:
            return {"last": (n,)}
        if self.mode is ReadoutMode.MEAN:
            return {"sum": (n,), "count": (1,)}
        return {"sum": (n,)}


# ----------------------------------------------------------------------------------------------
# window ops: they read future steps of the window, so a graph holding one runs on whole windows
# (layered: node by node over the window) and cannot stream (see Graph.window_nodes)


class _WindowOp(Op):
    category = "window"

    def infer(self, ins):
        v = self._one_temporal(ins)
        return (ValueType(v.features, True, v.spikes),)


@register_op
class Reverse(_WindowOp):
    """Time reversal over the window: y_t = x_{T-1-t} (the backward half of a bidirectional RNN)."""

    kind = "Reverse"


@register_op
class Lookahead(_WindowOp):
    """Look-ahead of ``steps`` steps inside the window: y_t = x_{t+steps}, zero once t+steps >= T (a
    'same' or symmetric-padded convolution is this followed by the causal convolution)."""

    kind = "Lookahead"
    steps: int = 1

    def check(self):
        if self.steps < 1:
            raise ShapeError(f"Lookahead needs steps >= 1, got {self.steps}")


@register_op
class SelfAttention(_WindowOp):
    """Multi-head scaled-dot-product self-attention over the window, on packed projections: the input
    at step t is [q_t, k_t, v_t] (3E features; the q/k/v projections are a Linear before it, the
    output projection a Linear after it). For each head h of d = E / num_heads features,
    y_t^h = sum_u softmax_u(q_t^h . k_u^h / sqrt(d)) v_u^h over every step u of the window (no mask)."""

    kind = "SelfAttention"
    num_heads: int = 1

    def check(self):
        if self.num_heads < 1:
            raise ShapeError(f"SelfAttention needs num_heads >= 1, got {self.num_heads}")

    def infer(self, ins):
        v = self._one_temporal(ins)
        if v.features % (3 * self.num_heads):
            raise ShapeError(
                f"SelfAttention with {self.num_heads} heads needs packed [q, k, v] input features divisible by "
                f"{3 * self.num_heads}, got {v.features}"
            )
        return (ValueType(v.features // 3, True),)


# ----------------------------------------------------------------------------------------------
# recurrent scan ops


class _ScanOp(Op):
    category = "scan"

    @property
    def hidden_size(self) -> int:
        raise NotImplementedError

    @property
    def input_size(self) -> int:
        raise NotImplementedError

    def infer(self, ins):
        self._one_temporal(ins)
        self._features(ins, self.input_size)
        return (ValueType(self.hidden_size),)


def _gated_check(op, n_gates: int) -> None:
    _ndim("w_ih", op.w_ih, 2)
    _ndim("w_hh", op.w_hh, 2)
    h = op.w_hh.shape[1]
    if op.w_ih.shape[0] != n_gates * h or op.w_hh.shape[0] != n_gates * h:
        raise ShapeError(
            f"{op.kind} with hidden size {h} needs w_ih/w_hh with {n_gates * h} rows, "
            f"got {op.w_ih.shape} and {op.w_hh.shape}"
        )
    _shape("b_ih", op.b_ih, (n_gates * h,))
    _shape("b_hh", op.b_hh, (n_gates * h,))


@register_op
class RNN(_ScanOp):
    """Elman RNN (torch.nn.RNN): h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), act tanh or relu."""

    kind = "RNN"
    w_ih: Array = array(doc="(H, I)")
    w_hh: Array = array(doc="(H, H)")
    b_ih: Optional[Array] = array(optional=True)
    b_hh: Optional[Array] = array(optional=True)
    act: Act = enum_field(Act, Act.TANH)

    def check(self):
        _gated_check(self, 1)
        if self.act not in (Act.TANH, Act.RELU):
            raise ConfigError(f"RNN nonlinearity must be tanh or relu, got {self.act.value}")

    hidden_size = property(lambda self: self.w_hh.shape[1])
    input_size = property(lambda self: self.w_ih.shape[1])

    def state_shapes(self, ins):
        return {"h": (self.hidden_size,)}


@register_op
class GRU(_ScanOp):
    """GRU in torch's convention: gates stacked [r, z, n] in w_ih / w_hh (3H rows each).

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))        reset_after=True  (torch, ONNX lbr=1)
    n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)        reset_after=False (Cho et al.)
    h' = (1 - z) * n + z * h
    """

    kind = "GRU"
    w_ih: Array = array(doc="(3H, I), gates r, z, n")
    w_hh: Array = array(doc="(3H, H), gates r, z, n")
    b_ih: Optional[Array] = array(optional=True)
    b_hh: Optional[Array] = array(optional=True)
    reset_after: bool = True

    def check(self):
        _gated_check(self, 3)

    hidden_size = property(lambda self: self.w_hh.shape[1])
    input_size = property(lambda self: self.w_ih.shape[1])

    def state_shapes(self, ins):
        return {"h": (self.hidden_size,)}


@register_op
class LSTM(_ScanOp):
    """LSTM in torch's convention: gates stacked [i, f, g, o] (4H rows).

    c' = sigmoid(f) * c + sigmoid(i) * tanh(g);  h' = sigmoid(o) * tanh(c')
    """

    kind = "LSTM"
    w_ih: Array = array(doc="(4H, I), gates i, f, g, o")
    w_hh: Array = array(doc="(4H, H)")
    b_ih: Optional[Array] = array(optional=True)
    b_hh: Optional[Array] = array(optional=True)

    def check(self):
        _gated_check(self, 4)

    hidden_size = property(lambda self: self.w_hh.shape[1])
    input_size = property(lambda self: self.w_ih.shape[1])

    def state_shapes(self, ins):
        return {"h": (self.hidden_size,), "c": (self.hidden_size,)}


def _candidate_check(op) -> None:
    if op.candidate not in (Act.MINRNN_G, Act.IDENTITY):
        raise ConfigError(f"{op.kind} candidate must be minrnn_g or identity, got {op.candidate.value}")


@register_op
class MinGRU(_ScanOp):
    """minGRU (Feng et al. 2024): z = sigmoid(W_z x + b_z), c = cand(W_h x + b_h),
    h_t = (1 - z) h_{t-1} + z c. ``cand`` is minrnn_g (x+0.5 for x>=0, sigmoid(x) below; keeps h
    positive for the log-space parallel scan) or identity. No recurrent weights: a linear scan."""

    kind = "MinGRU"
    w_z: Array = array(doc="(H, I)")
    w_h: Array = array(doc="(H, I)")
    b_z: Optional[Array] = array(optional=True)
    b_h: Optional[Array] = array(optional=True)
    candidate: Act = enum_field(Act, Act.MINRNN_G)

    def check(self):
        _ndim("w_z", self.w_z, 2)
        _shape("w_h", self.w_h, self.w_z.shape)
        _shape("b_z", self.b_z, (self.w_z.shape[0],))
        _shape("b_h", self.b_h, (self.w_z.shape[0],))
        _candidate_check(self)

    hidden_size = property(lambda self: self.w_z.shape[0])
    input_size = property(lambda self: self.w_z.shape[1])

    def state_shapes(self, ins):
        return {"h": (self.hidden_size,)}


@register_op
class MinLSTM(_ScanOp):
    """minLSTM: f = sigmoid(W_f x + b_f), i = sigmoid(W_i x + b_i), f' = f/(f+i), i' = i/(f+i),
    h_t = f' h_{t-1} + i' cand(W_h x + b_h)."""

    kind = "MinLSTM"
    w_f: Array = array(doc="(H, I)")
    w_i: Array = array(doc="(H, I)")
    w_h: Array = array(doc="(H, I)")
    b_f: Optional[Array] = array(optional=True)
    b_i: Optional[Array] = array(optional=True)
    b_h: Optional[Array] = array(optional=True)
    candidate: Act = enum_field(Act, Act.MINRNN_G)

    def check(self):
        _ndim("w_f", self.w_f, 2)
        for n in ("w_i", "w_h"):
            _shape(n, getattr(self, n), self.w_f.shape)
        for n in ("b_f", "b_i", "b_h"):
            _shape(n, getattr(self, n), (self.w_f.shape[0],))
        _candidate_check(self)

    hidden_size = property(lambda self: self.w_f.shape[0])
    input_size = property(lambda self: self.w_f.shape[1])

    def state_shapes(self, ins):
        return {"h": (self.hidden_size,)}


@register_op
class LMU(_ScanOp):
    """Legendre Memory Unit as in keras-lmu (Voelker et al. 2019).

        u_t = e_x x_t + e_h h_{t-1} + e_m m_{t-1} + b_u                        (memory_d values)
        m_t[d] = Abar m_{t-1}[d] + Bbar u_t[d]  for each memory dimension d  (index d*order + k)
        h_t = act(w_m m_t + w_x x_t + w_h h_{t-1} + b_h)                      (hidden)

    (Abar, Bbar) = lmu_matrices(order, theta, discretizer). e_h / e_m / w_x / w_h / b_u / b_h are
    optional (hidden_to_memory, memory_to_memory, input_to_hidden, recurrent hidden). Without
    w_m there is no hidden cell and the output is m_t.
    """

    kind = "LMU"
    e_x: Array = array(doc="(memory_d, I)")
    order: int
    theta: float
    e_h: Optional[Array] = array(optional=True, doc="(memory_d, H)")
    e_m: Optional[Array] = array(optional=True, doc="(memory_d, memory_d*order)")
    b_u: Optional[Array] = array(optional=True, doc="(memory_d,)")
    w_m: Optional[Array] = array(optional=True, doc="(H, memory_d*order)")
    w_x: Optional[Array] = array(optional=True, doc="(H, I)")
    w_h: Optional[Array] = array(optional=True, doc="(H, H)")
    b_h: Optional[Array] = array(optional=True, doc="(H,)")
    discretizer: Discretizer = enum_field(Discretizer, Discretizer.ZOH)
    act: Act = enum_field(Act, Act.TANH)

    @property
    def memory_d(self) -> int:
        return self.e_x.shape[0]

    @property
    def memory_size(self) -> int:
        return self.memory_d * self.order

    @property
    def has_hidden(self) -> bool:
        return self.w_m is not None

    hidden_size = property(lambda self: self.w_m.shape[0] if self.w_m is not None else self.memory_size)
    input_size = property(lambda self: self.e_x.shape[1])

    def check(self):
        if self.order < 1 or not self.theta > 0:
            raise ConfigError(f"LMU needs order >= 1 and theta > 0, got order={self.order}, theta={self.theta}")
        _ndim("e_x", self.e_x, 2)
        d, m, i = self.memory_d, self.memory_size, self.input_size
        if self.w_m is None:
            for n in ("w_x", "w_h", "b_h"):
                if getattr(self, n) is not None:
                    raise ShapeError(f"'{n}' needs a hidden cell (w_m)")
        else:
            _ndim("w_m", self.w_m, 2)
            _shape("w_m", self.w_m, (self.hidden_size, m))
        h = self.hidden_size
        _shape("e_h", self.e_h, (d, h))
        _shape("e_m", self.e_m, (d, m))
        _shape("b_u", self.b_u, (d,))
        _shape("w_x", self.w_x, (h, i))
        _shape("w_h", self.w_h, (h, h))
        _shape("b_h", self.b_h, (h,))

    def state_shapes(self, ins):
        s = {"m": (self.memory_size,)}
        if self.has_hidden and (self.w_h is not None or self.e_h is not None):
            s["h"] = (self.hidden_size,)
        return s

    def matrices(self) -> tuple[Array, Array]:
        from .legendre import lmu_matrices

        return lmu_matrices(self.order, self.theta, self.discretizer)


@register_op
class S4D(_ScanOp):
    """Diagonal state-space layer (S4D / DSS): H independent channels with N diagonal modes each,
    discretised with the zero-order hold at step dt_h = exp(log_dt[h]):

        A = a_re + i a_im,  Abar = exp(dt A),  Bbar = (Abar - 1) / A * B     (per channel h, mode n)
        x_t = Abar * x_{t-1} + Bbar * u_t[h]                                  (complex state, (H, N))
        y_t[h] = k * Re(sum_n C[h, n] x_t[h, n]) + d[h] u_t[h]

    with B = b_re + i b_im and C = c_re + i c_im. Complex modes stand for conjugate pairs (k = 2);
    with ``a_im`` None every mode is real (k = 1, B and C real). The state is stored as real
    vectors: ``re`` = Re x and (complex modes) ``im`` = Im x, each H*N long, channel-major.
    Stability needs a_re < 0."""

    kind = "S4D"
    log_dt: Array = array(doc="(H,)")
    a_re: Array = array(doc="(H, N), < 0")
    b_re: Array = array(doc="(H, N)")
    c_re: Array = array(doc="(H, N)")
    a_im: Optional[Array] = array(optional=True, doc="(H, N); None: real modes")
    b_im: Optional[Array] = array(optional=True, doc="(H, N)")
    c_im: Optional[Array] = array(optional=True, doc="(H, N)")
    d: Optional[Array] = array(optional=True, doc="(H,) skip term")

    hidden_size = property(lambda self: self.a_re.shape[0])
    input_size = property(lambda self: self.a_re.shape[0])

    @property
    def modes(self) -> int:
        return self.a_re.shape[1]

    @property
    def complex_modes(self) -> bool:
        return self.a_im is not None

    def check(self):
        _ndim("a_re", self.a_re, 2)
        h, n = self.a_re.shape
        _shape("log_dt", self.log_dt, (h,))
        for name in ("b_re", "c_re"):
            _shape(name, getattr(self, name), (h, n))
        for name in ("a_im", "b_im", "c_im"):
            if (getattr(self, name) is None) != (self.a_im is None):
                raise ConfigError("complex modes need a_im, b_im and c_im together (real modes: none of them)")
            _shape(name, getattr(self, name), (h, n))
        _shape("d", self.d, (h,))
        if not np.all(np.asarray(self.a_re) < 0):
            raise ConfigError("S4D needs a_re < 0 in every mode (a stable system)")

    def discretized(self) -> tuple[np.ndarray, np.ndarray]:
        """(Abar, Bbar) as complex (H, N) arrays (zero-order hold)."""
        dt = np.exp(np.asarray(self.log_dt, np.float64))[:, None]
        a = np.asarray(self.a_re, np.float64) + 1j * (0.0 if self.a_im is None else np.asarray(self.a_im, np.float64))
        b = np.asarray(self.b_re, np.float64) + 1j * (0.0 if self.b_im is None else np.asarray(self.b_im, np.float64))
        abar = np.exp(dt * a)
        return abar, (abar - 1.0) / a * b

    def state_shapes(self, ins):
        m = self.a_re.size
        return {"re": (m,), "im": (m,)} if self.complex_modes else {"re": (m,)}


@register_op
class Embedding(Op):
    """Table lookup of integer ids given as a float feature: y_t = table[clamp(ceil(x_t - 1/2), 0, V - 1)]
    (the nearest id, halves rounding down; ids are expected to be whole numbers)."""

    kind = "Embedding"
    table: Array = array(doc="(V, D)")

    def check(self):
        _ndim("table", self.table, 2)

    def infer(self, ins):
        self._features(ins, 1, "id")
        return (ValueType(self.table.shape[1], ins[0].temporal),)


@register_op
class AttentionPool(_ScanOp):
    """Softmax attention pooling over time, streamed: the input holds a score and a value vector per
    step, x_t = [s_t | v_t], and the output at step t pools every step so far,

        y_t = sum_{k<=t} exp(s_k) v_k / sum_{k<=t} exp(s_k)

    (the last step is softmax(s) . v over the window). Computed with a running maximum, so the
    state (max, normaliser, weighted sum) never overflows."""

    kind = "AttentionPool"
    values: int = 1

    hidden_size = property(lambda self: self.values)
    input_size = property(lambda self: self.values + 1)

    def check(self):
        if self.values < 1:
            raise ShapeError(f"AttentionPool needs at least one value feature, got {self.values}")

    def state_shapes(self, ins):
        return {"max": (1,), "den": (1,), "num": (self.values,)}


@register_op
class Scan(_ScanOp):
    """A recurrence defined by its step program (user-written cells): at every step the program
    maps x_t and its states to its outputs and next states (see :mod:`edgeseq.ir.step`). The
    program's first input is the node's input; its states are the node's states."""

    kind = "Scan"
    program: StepProgram = program_field()

    hidden_size = property(lambda self: self.program.size(self.program.outputs[0]))
    input_size = property(lambda self: self.program.inputs[0].n)

    def check(self):
        if not isinstance(self.program, StepProgram):
            raise ConfigError(f"Scan needs a StepProgram, got {type(self.program).__name__}")
        if len(self.program.inputs) != 1 or not self.program.outputs:
            raise ShapeError("a Scan's step program needs exactly one input and at least one output")

    def infer(self, ins):
        self._one_temporal(ins)
        self._features(ins, self.input_size)
        spikes = {
            p.out for p in self.program.body if getattr(p, "point", None) is not None and p.point.role.value == "spikes"
        }  # outputs quantized as 0/1 spikes are spike values
        return tuple(ValueType(self.program.size(o), spikes=o in spikes) for o in self.program.outputs)

    def state_shapes(self, ins):
        return {s.name: (s.n,) for s in self.program.states}


# ----------------------------------------------------------------------------------------------
# spiking ops


class _SpikingOp(Op):
    category = "spiking"


def _recurrence_check(op, n: int) -> None:
    rec = op.recurrence
    if rec is Recurrence.NONE and any(a is not None for a in (op.v_rec, op.w_rec, op.b_rec)):
        raise ShapeError("recurrent weights given but recurrence is 'none'")
    if rec is Recurrence.ONE_TO_ONE:
        if op.v_rec is None:
            raise ShapeError("one_to_one recurrence needs 'v_rec'")
        _vec_or_scalar("v_rec", op.v_rec, n)
    if rec is Recurrence.ALL_TO_ALL:
        if op.w_rec is None:
            raise ShapeError("all_to_all recurrence needs 'w_rec'")
        _shape("w_rec", op.w_rec, (n, n))
        _shape("b_rec", op.b_rec, (n,))


class _LIFBase(_SpikingOp):
    """Shared semantics of LIF and CuBaLIF layers (see NeuronParams): elementwise over features,
    input = the synaptic current I_t, plus an optional recurrence on S_{t-1}.
    ``emit``: 'spikes' (S_t), 'membrane' (U_t after any immediate reset), 'both' (two outputs) or, for
    CuBaLIF, 'all' (S_t, the synaptic current, U_t: snntorch's Synaptic with output=True)."""

    def _size(self, ins) -> int:
        return self._one_temporal(ins).features

    def infer(self, ins):
        n = self._size(ins)
        self.neuron.check_size(n)
        _recurrence_check(self, n)
        spk, mem = ValueType(n, spikes=True), ValueType(n)
        return {"spikes": (spk,), "membrane": (mem,), "both": (spk, mem), "all": (spk, ValueType(n), mem)}[self.emit]

    def state_shapes(self, ins):
        n = ins[0].features
        s = {name: (n,) for name in self.neuron.state_names()}
        if self.recurrence is not Recurrence.NONE:
            s["spk"] = (n,)
        return s


_EMITS = ("spikes", "membrane", "both", "all")


@register_op
class LIF(_LIFBase):
    """Leaky integrate-and-fire layer (snntorch Leaky / RLeaky semantics)."""

    kind = "LIF"
    neuron: NeuronParams = struct_field(NeuronParams)
    recurrence: Recurrence = enum_field(Recurrence, Recurrence.NONE)
    v_rec: Optional[Array] = array(optional=True, doc="one_to_one weight V")
    w_rec: Optional[Array] = array(optional=True, doc="all_to_all (H, H)")
    b_rec: Optional[Array] = array(optional=True, doc="all_to_all bias (H,)")
    emit: str = "spikes"

    def check(self):
        if self.neuron.synaptic:
            raise ConfigError("LIF has no synaptic current; use CuBaLIF for alpha")
        if self.emit not in _EMITS[:3]:
            raise ConfigError(f"emit must be one of {_EMITS}, got '{self.emit}'")


@register_op
class CuBaLIF(_LIFBase):
    """Current-based LIF layer (snntorch Synaptic / RSynaptic semantics)."""

    kind = "CuBaLIF"
    neuron: NeuronParams = struct_field(NeuronParams)
    recurrence: Recurrence = enum_field(Recurrence, Recurrence.NONE)
    v_rec: Optional[Array] = array(optional=True)
    w_rec: Optional[Array] = array(optional=True)
    b_rec: Optional[Array] = array(optional=True)
    emit: str = "spikes"

    def check(self):
        if not self.neuron.synaptic:
            raise ConfigError("CuBaLIF needs the synaptic decay 'alpha'")
        if self.emit not in _EMITS:
            raise ConfigError(f"emit must be one of {_EMITS}, got '{self.emit}'")


@register_op
class L2MU(_SpikingOp):
    """LIF-based Legendre Memory Unit: the LMU's memory input, memory and hidden state are
    populations of (CuBa-)LIF neurons (Leto et al., NICE 2025). Input x_t is a spike train (e.g.
    from an encoder population upstream).

        s_u = LIF_u(e_x x_t + e_h s_h[t-1] + e_m s_m[t-1] + b_u)                    (memory_d)
        s_m[d] = LIF_m(a s_m[t-1][d] + b s_u[d])   for each memory dimension d      (memory_d*order)
        s_h = LIF_h(w_x x_t + w_h s_h[t-1] + w_m s_m + b_h)                          (H)

    a (order x order) and b (order,) start as the discretised Legendre system and may be trained.
    The output is s_h.
    """

    kind = "L2MU"
    a: Array = array(doc="(order, order)")
    b: Array = array(doc="(order,)")
    e_x: Array = array(doc="(memory_d, I)")
    w_m: Array = array(doc="(H, memory_d*order)")
    u_neuron: NeuronParams = struct_field(NeuronParams)
    m_neuron: NeuronParams = struct_field(NeuronParams)
    h_neuron: NeuronParams = struct_field(NeuronParams)
    e_h: Optional[Array] = array(optional=True)
    e_m: Optional[Array] = array(optional=True)
    b_u: Optional[Array] = array(optional=True)
    w_x: Optional[Array] = array(optional=True)
    w_h: Optional[Array] = array(optional=True)
    b_h: Optional[Array] = array(optional=True)

    order = property(lambda self: self.a.shape[0])
    memory_d = property(lambda self: self.e_x.shape[0])
    memory_size = property(lambda self: self.memory_d * self.order)
    hidden_size = property(lambda self: self.w_m.shape[0])
    input_size = property(lambda self: self.e_x.shape[1])

    def check(self):
        _ndim("a", self.a, 2)
        o = self.a.shape[0]
        _shape("a", self.a, (o, o))
        _shape("b", self.b, (o,))
        _ndim("e_x", self.e_x, 2)
        _ndim("w_m", self.w_m, 2)
        d, m, h, i = self.memory_d, self.memory_size, self.hidden_size, self.input_size
        _shape("w_m", self.w_m, (h, m))
        _shape("e_h", self.e_h, (d, h))
        _shape("e_m", self.e_m, (d, m))
        _shape("b_u", self.b_u, (d,))
        _shape("w_x", self.w_x, (h, i))
        _shape("w_h", self.w_h, (h, h))
        _shape("b_h", self.b_h, (h,))
        self.u_neuron.check_size(d)
        self.m_neuron.check_size(m)
        self.h_neuron.check_size(h)

    def infer(self, ins):
        self._one_temporal(ins)
        self._features(ins, self.input_size)
        return (ValueType(self.hidden_size, spikes=True),)

    def state_shapes(self, ins):
        s: dict[str, tuple[int, ...]] = {}
        for pop, neuron, n in (
            ("u", self.u_neuron, self.memory_d),
            ("m", self.m_neuron, self.memory_size),
            ("h", self.h_neuron, self.hidden_size),
        ):
            for name in neuron.state_names():
                s[f"{pop}_{name}"] = (n,)
        s["s_m"] = (self.memory_size,)
        s["s_h"] = (self.hidden_size,)
        return s


@register_op
class LeakyNeuron(_SpikingOp):
    """A population of discretised leaky integrators (the neuron models of NIR: LI, CubaLI, I, IF,
    LIF, CubaLIF, once a time step and a discretisation have turned their time constants into the
    per-step coefficients below). Elementwise over the n features:

        synaptic:  i_t = syn_decay * i_{t-1} + syn_gain * x_t;  d_t = i_t      (else d_t = x_t)
        membrane:  u_t = decay * v_{t-1} + gain * d_t + bias
        spikes:    z_t = H(u_t - threshold)                                     (H strict, x > 0)
        reset:     v_t = v_reset where z_t else u_t      (ZERO: to v_reset, 0 when absent)
                   v_t = u_t - z_t * threshold           (SUBTRACT)
                   v_t = u_t                             (NONE, and every non-spiking population)

    The reset acts at the step of the spike. gain / syn_gain absent mean 1, bias absent 0; every
    coefficient is a scalar or one value per neuron. Without a threshold the population does not
    spike and emits v_t ('membrane'); with one it emits z_t ('spikes'), v_t or both."""

    kind = "LeakyNeuron"
    decay: Array = array(doc="membrane decay per step (1: a perfect integrator)")
    gain: Optional[Array] = array(optional=True, doc="membrane input gain; None means 1")
    bias: Optional[Array] = array(optional=True, doc="constant drive per step (the leak potential's share)")
    syn_decay: Optional[Array] = array(optional=True, doc="synaptic current decay; None: no synapse")
    syn_gain: Optional[Array] = array(optional=True, doc="synaptic input gain; None means 1")
    threshold: Optional[Array] = array(optional=True, doc="firing threshold; None: a non-spiking integrator")
    v_reset: Optional[Array] = array(optional=True, doc="reset potential of the ZERO rule; None means 0")
    reset: ResetRule = enum_field(ResetRule, ResetRule.ZERO)
    emit: str = "spikes"

    @property
    def synaptic(self) -> bool:
        return self.syn_decay is not None

    @property
    def spiking(self) -> bool:
        return self.threshold is not None

    def check(self):
        if self.reset is ResetRule.ZERO_TOTAL:
            raise ConfigError("LeakyNeuron resets with 'zero' (to v_reset), 'subtract' or 'none'")
        if self.syn_gain is not None and not self.synaptic:
            raise ConfigError("'syn_gain' needs a synapse ('syn_decay')")
        if not self.spiking and (self.emit != "membrane" or self.v_reset is not None):
            raise ConfigError("a LeakyNeuron without a threshold emits its membrane and has no v_reset")
        if self.v_reset is not None and self.reset is not ResetRule.ZERO:
            raise ConfigError("'v_reset' belongs to the 'zero' reset rule")
        if self.emit not in _EMITS[:3]:
            raise ConfigError(f"emit must be one of {_EMITS[:3]}, got '{self.emit}'")

    def infer(self, ins):
        n = self._one_temporal(ins).features
        for name in ("decay", "gain", "bias", "syn_decay", "syn_gain", "threshold", "v_reset"):
            _vec_or_scalar(name, getattr(self, name), n)
        spk, mem = ValueType(n, spikes=True), ValueType(n)
        return {"spikes": (spk,), "membrane": (mem,), "both": (spk, mem)}[self.emit]

    def state_shapes(self, ins):
        n = ins[0].features
        return {"syn": (n,), "mem": (n,)} if self.synaptic else {"mem": (n,)}


def struct_equal(a: Any, b: Any) -> bool:
    """Exact equality of two ops / structs: same class, same attributes, bit-identical arrays."""
    if type(a) is not type(b):
        return False
    for f in fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        kind = f.metadata.get("kind")
        if kind == "array":
            if (va is None) != (vb is None):
                return False
            if va is not None and (va.dtype != vb.dtype or va.shape != vb.shape or va.tobytes() != vb.tobytes()):
                return False
        elif kind == "struct":
            if (va is None) != (vb is None) or (va is not None and not struct_equal(va, vb)):
                return False
        elif kind == "program":
            if va.to_json() != vb.to_json() or any(va.params[k].tobytes() != vb.params[k].tobytes() for k in va.params):
                return False
        elif va != vb:
            return False
    return True
