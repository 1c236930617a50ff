"""aten operations -> step-program primitives, one converter per operation.

Loop capture (:mod:`.loops`) replays the aten graph of one loop iteration through these
converters. Operands are per-step program values (:class:`V`, one (B, n) vector each), constants
(:class:`C`, per-example numpy arrays: parameters, tensors created in forward) or Python scalars.
An operation whose operands are all constants is folded at capture time by running it. Anything
without a converter raises :class:`UnsupportedModuleError` naming the operation and the model's
source line.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..errors import UnsupportedModuleError
from ..ir.step import StepBuilder
from ..ir.types import Act

aten = torch.ops.aten


@dataclass
class V:
    """A per-step program value with ``n`` features per example."""

    name: str
    n: int


@dataclass
class C:
    """A per-example constant."""

    value: np.ndarray


Operand = Any  # V | C | float | int | bool | None | list
CONVERTERS: dict[Any, Callable] = {}


def converts(*ops):
    def deco(fn):
        for op in ops:
            CONVERTERS[op] = fn
        return fn

    return deco


_LIBRARIES = ("/torch/", "/snntorch/", "/edgeseq/frontends/")


def source_line(node) -> str:
    """The user's source line an fx node came from, as ``file.py:LINE (code)``: the last recorded frame
    outside torch, snntorch and the capture itself ('' if none was recorded)."""
    trace = node.meta.get("stack_trace") or ""
    lines = [ln.strip() for ln in trace.splitlines()]
    frames = [(ln, lines[i + 1] if i + 1 < len(lines) else "") for i, ln in enumerate(lines) if ln.startswith("File ")]
    user = [f for f in frames if not any(lib in f[0] for lib in _LIBRARIES)]
    if not user:
        return ""
    head, code = user[-1]
    m = re.match(r'File "?([^",]+)"?, line (\d+)', head)
    if m is None:
        return head.replace("File ", "").replace('"', "")
    where = f"{os.path.basename(m.group(1))}:{m.group(2)}"
    code = code if len(code) <= 70 else code[:67] + "..."
    return f"{where} ({code})" if code and not code.startswith("File ") else where


#: what to write instead of an operation that has no step-program form, by aten packet name
HINTS = {
    "native_layer_norm": "normalise outside the time loop (nn.LayerNorm on the input or on the stacked outputs), "
    "or use a cell without layer normalisation",
    "layer_norm": "normalise outside the time loop (nn.LayerNorm on the input or on the stacked outputs)",
    "_softmax": "apply softmax after the loop (on the pooled output), or use sigmoid gates inside it",
    "_log_softmax": "apply log_softmax after the loop (on the pooled output)",
    "permute": "write the step as x_t @ W (the step value on the left, a parameter on the right) without transposing it",
    "transpose": "write the step as x_t @ W (the step value on the left, a parameter on the right) without transposing it",
    "t": "write the step as x_t @ W (the step value on the left, a parameter on the right) without transposing it",
    "linalg_vector_norm": "normalise outside the time loop, or scale by a learned parameter instead",
}
SUPPORTED = (
    "inside a time loop write the step with Linear / x_t @ W (a parameter matrix), + - * /, sigmoid, tanh, relu, "
    "exp, softplus, silu, gelu, leaky_relu, hardtanh / clamp, comparisons, torch.where, cat / split / chunk / "
    "slicing of features and snntorch neurons; do other work before or after the loop"
)


class StepConverter:
    """Converts aten nodes into primitives of one step program (``b``)."""

    def __init__(self, b: StepBuilder):
        self.b = b

    def unsupported(self, node, why: str, hint: Optional[str] = None):
        where = source_line(node) or node.name
        return UnsupportedModuleError(why, where=where, hint=hint)

    # -- operands -------------------------------------------------------------------------------
    def value(self, x: Operand, node=None) -> str:
        """A program operand name for ``x`` (constants become parameters)."""
        if isinstance(x, V):
            return x.name
        if isinstance(x, C):
            return self.b.const(np.asarray(x.value, np.float64).ravel())
        if isinstance(x, (int, float, bool)):
            return self.b.const(float(x))
        raise self.unsupported(node, f"operand of type {type(x).__name__} is not a tensor or number")

    @staticmethod
    def n(*xs: Operand) -> int:
        return max([x.n for x in xs if isinstance(x, V)] + [1])

    # -- conversion ---------------------------------------------------------------------------
    def convert(self, node, args, kwargs) -> Operand:
        target = node.target
        if not _has_values(args, kwargs):
            return fold(node, args, kwargs)
        fn = CONVERTERS.get(target) or CONVERTERS.get(getattr(target, "overloadpacket", None))
        if fn is None:
            packet = getattr(getattr(target, "overloadpacket", None), "__name__", str(target))
            raise self.unsupported(
                node, f"'{packet}' inside the time loop has no step-program form", hint=HINTS.get(packet, SUPPORTED)
            )
        return fn(self, node, *args, **kwargs)


def _has_values(args, kwargs) -> bool:
    def walk(a):
        if isinstance(a, V):
            return True
        if isinstance(a, (list, tuple)):
            return any(walk(x) for x in a)
        return False

    return walk(list(args)) or walk(list(kwargs.values()))


def _concrete(a):
    if isinstance(a, C):
        return torch.as_tensor(np.asarray(a.value), dtype=torch.float64)
    if isinstance(a, (list, tuple)):
        return type(a)(_concrete(x) for x in a)
    return a


def fold(node, args, kwargs) -> Operand:
    """Run an operation on constants (capture-time constant folding)."""
    kw = {k: v for k, v in kwargs.items() if k not in ("device", "pin_memory", "layout")}
    if "dtype" in kw and kw["dtype"] is not None and kw["dtype"].is_floating_point:
        kw["dtype"] = torch.float64
    out = node.target(*_concrete(list(args)), **{k: _concrete(v) for k, v in kw.items()})
    if isinstance(out, torch.Tensor):
        return C(out.detach().double().numpy() if out.dtype != torch.bool else out.numpy().astype(np.float64))
    if isinstance(out, (list, tuple)):
        return [C(o.detach().double().numpy()) if isinstance(o, torch.Tensor) else o for o in out]
    return out


def _matrix(cx: StepConverter, node, w: Operand, transpose: bool) -> str:
    if not isinstance(w, C) or np.asarray(w.value).ndim != 2:
        raise cx.unsupported(
            node,
            "a matrix product of two step values inside the time loop",
            hint="multiply a step value by a parameter matrix (x_t @ self.W, nn.Linear); for an elementwise "
            "product of two step values write a * b",
        )
    m = np.asarray(w.value, np.float64)
    return cx.b.param(f"w{len(cx.b.params)}", m.T if transpose else m, source=node.name)


@converts(aten.addmm.default)
def _addmm(cx, node, bias, a, w, beta=1, alpha=1):
    if beta != 1 or alpha != 1 or not isinstance(a, V):
        raise cx.unsupported(
            node, "torch.addmm with beta / alpha, or with the step value on the right", hint="write b + x_t @ W"
        )
    y = cx.b.affine([(_matrix(cx, node, w, True), a.name)])
    n = cx.b.size(y)
    return V(cx.b.add(y, cx.value(bias, node)), n)


@converts(aten.mm.default, aten.matmul.default)
def _mm(cx, node, a, w):
    if not isinstance(a, V):
        raise cx.unsupported(
            node,
            "a matrix product with the step value on the right (W @ x_t)",
            hint="write x_t @ W.T (the step value on the left)",
        )
    y = cx.b.affine([(_matrix(cx, node, w, True), a.name)])
    return V(y, cx.b.size(y))


@converts(aten.linear.default)
def _linear(cx, node, a, w, bias=None):
    y = cx.b.affine([(_matrix(cx, node, w, False), a.name)])
    n = cx.b.size(y)
    return V(y if bias is None else cx.b.add(y, cx.value(bias, node)), n)


def _binary(fn):
    def conv(cx, node, a, b, alpha=1):
        if alpha != 1:
            b = b * alpha if not isinstance(b, V) else V(cx.b.mul(b.name, cx.value(float(alpha))), b.n)
        n = cx.n(a, b)
        return V(getattr(cx.b, fn)(cx.value(a, node), cx.value(b, node)), n)

    return conv


CONVERTERS[aten.add.Tensor] = CONVERTERS[aten.add.Scalar] = _binary("add")
CONVERTERS[aten.sub.Tensor] = CONVERTERS[aten.sub.Scalar] = _binary("sub")
CONVERTERS[aten.mul.Tensor] = CONVERTERS[aten.mul.Scalar] = _binary("mul")
CONVERTERS[aten.div.Tensor] = CONVERTERS[aten.div.Scalar] = _binary("div")


@converts(aten.rsub.Scalar, aten.rsub.Tensor)
def _rsub(cx, node, a, b, alpha=1):
    return _binary("sub")(cx, node, b, a, alpha)


@converts(aten.neg.default)
def _neg(cx, node, a):
    return V(cx.b.sub(cx.b.const(0.0), a.name), a.n)


@converts(aten.pow.Tensor_Scalar)
def _pow(cx, node, a, e):
    if e == 2:
        return V(cx.b.mul(a.name, a.name), a.n)
    if e == 1:
        return a
    raise cx.unsupported(node, f"x ** {e} inside the time loop", hint="write x * x, or torch.exp / torch.sigmoid")


_ACTS = {
    aten.sigmoid.default: Act.SIGMOID,
    aten.tanh.default: Act.TANH,
    aten.relu.default: Act.RELU,
    aten.exp.default: Act.EXP,
    aten.silu.default: Act.SILU,
    aten.hardsigmoid.default: Act.HARDSIGMOID,
    aten.softplus.default: Act.SOFTPLUS,
}


def _act(fn: Act):
    def conv(cx, node, a, *rest, **kw):
        return V(cx.b.act(fn, a.name), a.n)

    return conv


for _op, _fn in _ACTS.items():
    CONVERTERS[_op] = _act(_fn)


@converts(aten.gelu.default)
def _gelu(cx, node, a, approximate="none"):
    return V(cx.b.act(Act.GELU_TANH if approximate == "tanh" else Act.GELU, a.name), a.n)


@converts(aten.leaky_relu.default)
def _leaky(cx, node, a, slope=0.01):
    return V(cx.b.act(Act.LEAKY_RELU, a.name, slope=float(slope)), a.n)


@converts(aten.hardtanh.default, aten.clamp.default)
def _clamp(cx, node, a, lo=None, hi=None):
    if lo is not None and hi is None and float(lo) == 0.0:
        return V(cx.b.act(Act.RELU, a.name), a.n)
    if lo is None or hi is None:
        raise cx.unsupported(
            node,
            "a one-sided clamp other than clamp(min=0)",
            hint="give both bounds (torch.clamp(x, lo, hi)) or use relu",
        )
    return V(cx.b.act(Act.HARDTANH, a.name, lo=float(lo), hi=float(hi)), a.n)


def _compare(strict_gt: bool, swap: bool):
    def conv(cx, node, a, b):
        if swap:
            a, b = b, a
        n = cx.n(a, b)
        g = cx.b.gt(cx.value(a, node), cx.value(b, node))
        if strict_gt:
            return V(g, n)
        return V(cx.b.sub(cx.b.const(1.0), cx.b.gt(cx.value(b, node), cx.value(a, node))), n)  # a >= b

    return conv


CONVERTERS[aten.gt.Scalar] = CONVERTERS[aten.gt.Tensor] = _compare(True, False)
CONVERTERS[aten.lt.Scalar] = CONVERTERS[aten.lt.Tensor] = _compare(True, True)
CONVERTERS[aten.ge.Scalar] = CONVERTERS[aten.ge.Tensor] = _compare(False, False)
CONVERTERS[aten.le.Scalar] = CONVERTERS[aten.le.Tensor] = _compare(False, True)


@converts(aten.heaviside.default)
def _heaviside(cx, node, a, v):
    at_zero = float(np.ravel(v.value)[0]) if isinstance(v, C) else float(v)
    g = cx.b.gt(a.name, cx.b.const(0.0))
    if at_zero == 0.0:
        return V(g, a.n)
    if at_zero == 1.0:
        return V(cx.b.sub(cx.b.const(1.0), cx.b.gt(cx.b.const(0.0), a.name)), a.n)
    raise cx.unsupported(
        node, "torch.heaviside with a value at 0 other than 0 or 1", hint="write (x > 0).float() or (x >= 0).float()"
    )


@converts(aten.where.self)
def _where(cx, node, c, a, b):
    n = cx.n(c, a, b)
    return V(cx.b.select(cx.value(c, node), cx.value(a, node), cx.value(b, node)), n)


@converts(aten.cat.default)
def _cat(cx, node, xs, dim=0):
    if dim not in (1, -1):
        raise cx.unsupported(
            node,
            f"concatenation along dim {dim} inside the time loop",
            hint="concatenate along the feature axis (dim=-1) inside the loop; stack steps with torch.stack(outs, 1)",
        )
    return V(
        cx.b.concat([cx.value(x, node) for x in xs]), sum(x.n if isinstance(x, V) else np.size(x.value) for x in xs)
    )


def _split_sizes(n: int, sizes) -> list[int]:
    if isinstance(sizes, int):
        return [min(sizes, n - s) for s in range(0, n, sizes)]
    return list(sizes)


@converts(
    aten.split.Tensor, aten.unsafe_split.Tensor, aten.split_with_sizes.default, aten.unsafe_split_with_sizes.default
)
def _split(cx, node, a, sizes, dim=0):
    if dim not in (1, -1):
        raise cx.unsupported(
            node, f"split along dim {dim} inside the time loop", hint="split along the feature axis (dim=-1)"
        )
    out, start = [], 0
    for s in _split_sizes(a.n, sizes):
        out.append(V(cx.b.slice(a.name, start, start + s), s))
        start += s
    return out


@converts(aten.chunk.default)
def _chunk(cx, node, a, chunks, dim=0):
    return _split(cx, node, a, math.ceil(a.n / chunks), dim)


@converts(aten.slice.Tensor)
def _slice(cx, node, a, dim=0, start=None, end=None, step=1):
    if dim not in (1, -1) or step != 1:
        raise cx.unsupported(
            node,
            f"slicing along dim {dim} with step {step} inside the time loop",
            hint="slice contiguous features (x_t[:, a:b]) inside the loop",
        )
    lo = 0 if start is None else (start + a.n if start < 0 else start)
    hi = a.n if end is None else min(end + a.n if end < 0 else end, a.n)
    if lo == 0 and hi == a.n:
        return a
    return V(cx.b.slice(a.name, lo, hi), hi - lo)


def _identity(cx, node, a, *rest, **kw):
    return a


for _op in (
    aten.clone.default,
    aten.detach.default,
    aten.alias.default,
    aten._to_copy.default,
    aten.contiguous.default,
    aten.lift_fresh_copy.default,
    aten.dropout.default,
    aten.view.default,
    aten.reshape.default,
    aten._unsafe_view.default,
    aten.unsqueeze.default,
    aten.squeeze.dim,
    aten.squeeze.default,
    aten.expand.default,
    aten.squeeze.dims,
    aten.flatten.using_ints,
):
    CONVERTERS[_op] = _identity


@converts(aten.zeros_like.default, aten.ones_like.default, aten.full_like.default, aten.empty_like.default)
def _like(cx, node, a, *rest, **kw):
    fill = {aten.zeros_like.default: 0.0, aten.ones_like.default: 1.0, aten.empty_like.default: 0.0}.get(
        node.target, float(rest[0]) if rest else 0.0
    )
    return C(np.full(a.n, fill))


@converts(aten.convolution.default)
def _convolution(cx, node, a, w, bias, stride, padding, dilation, transposed, output_padding, groups):
    """A convolution over the features of one step (a frame): one matrix product with the
    convolution's dense matrix (computed by convolving the unit basis)."""
    if not isinstance(w, C) or (bias is not None and not isinstance(bias, C)) or transposed:
        raise cx.unsupported(
            node,
            "a transposed convolution, or one with computed weights, inside the time loop",
            hint="use nn.Conv1d / nn.Conv2d with its own parameters",
        )
    shape = tuple(node.args[0].meta["val"].shape)[1:]  # (C, L) or (C, H, W), batch excluded
    n_in = int(np.prod(shape))
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *shape)
    wt = torch.as_tensor(np.asarray(w.value), dtype=torch.float64)
    y = torch.ops.aten.convolution(eye, wt, None, stride, padding, dilation, False, output_padding, groups)
    m = y.reshape(n_in, -1).T.numpy()  # (outputs, inputs)
    out = cx.b.affine([(cx.b.param(f"conv{len(cx.b.params)}", m, source=node.name), a.name)])
    if bias is None:
        return V(out, m.shape[0])
    per_channel = np.asarray(bias.value, np.float64)
    full = np.repeat(per_channel, m.shape[0] // per_channel.size)
    return V(cx.b.add(out, cx.b.param(f"conv_b{len(cx.b.params)}", full)), m.shape[0])
