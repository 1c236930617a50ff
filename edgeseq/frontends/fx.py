"""torch.fx-based capture of sequence models.

Known modules are fx leaves and go through their converter; the functions and tensor methods that
glue them (residual adds, activations, concatenation, time readouts such as ``x[:, -1]`` or
``x.mean(1)``, and the transposes around Conv1d) are interpreted with their layout tracked.
Anything else raises :class:`UnsupportedModuleError` naming the node, so nothing is dropped silently.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedModuleError
from ..ir import ops as O
from ..ir.types import Act, ReadoutMode
from .attention import CALL_CONVERTERS, AttentionWeights
from .modules import CONVERTERS, Ctx, act_op, supported_module_kinds
from .snn import is_snntorch
from .values import StateVal, TupleVal, Val


class Dim:
    """A size read from the input (the batch or the number of steps)."""


class Zeros:
    """A tensor of zeros created in forward (an initial state)."""


class Const:
    """A parameter or buffer used directly in forward (e.g. a learned initial state)."""

    def __init__(self, value):
        self.value = value


class TimeSoftmax:
    """softmax over the time axis of a (B, T, 1) score: attention weights, pending their use."""

    def __init__(self, score: Val):
        self.score = score


class Weighted:
    """attention weights times a sequence, pending the sum over time that pools it."""

    def __init__(self, score: Val, values: Val):
        self.score, self.values = score, values


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m) in CONVERTERS or is_snntorch(m) or super().is_leaf_module(m, qualname)


_FN_ACTS = {
    torch.relu: Act.RELU,
    F.relu: Act.RELU,
    torch.tanh: Act.TANH,
    F.tanh: Act.TANH,
    torch.sigmoid: Act.SIGMOID,
    F.sigmoid: Act.SIGMOID,
    F.silu: Act.SILU,
    F.hardsigmoid: Act.HARDSIGMOID,
    F.softplus: Act.SOFTPLUS,
}
_METHOD_ACTS = {"relu": Act.RELU, "tanh": Act.TANH, "sigmoid": Act.SIGMOID}


def _describe(node: torch.fx.Node) -> str:
    t = node.target
    name = getattr(t, "__name__", str(t))
    return f"{node.op} '{name}' (fx node {node.name})"


class FxCapture:
    def __init__(self, module: nn.Module, ctx: Ctx, input_layout: str):
        self.module = module
        self.ctx = ctx
        self.input_layout = input_layout
        self.modules = dict(module.named_modules())

    def unsupported(self, node: torch.fx.Node, why: str, hint: str | None = None):
        return UnsupportedModuleError(f"{_describe(node)}: {why}", where=self.path_of(node), hint=hint)

    @staticmethod
    def path_of(node: torch.fx.Node) -> str:
        return str(node.target) if node.op == "call_module" else node.name

    def run(self) -> list[Val]:
        try:
            g = _Tracer().trace(self.module)
        except Exception as e:  # fx raises many types for untraceable code
            raise UnsupportedModuleError(
                f"cannot trace {type(self.module).__name__}.forward with torch.fx ({type(e).__name__}: {e})",
                where=type(self.module).__name__,
                hint="data-dependent Python control flow is not capturable; build the model from supported "
                "modules, or pass an snntorch step network (nn.Sequential with init_hidden=True)",
            ) from None
        env: dict[str, Any] = {}
        placeholders = [n for n in g.nodes if n.op == "placeholder"]
        for i, node in enumerate(placeholders):
            if i == 0:
                env[node.name] = Val(self.ctx.b.inputs[0].name, self.input_layout)
            else:
                env[node.name] = None  # optional extra argument (e.g. an initial state left at None)
        for node in g.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                return self._outputs(node, env)
            args = torch.fx.node.map_arg(node.args, lambda n: env[n.name])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n.name])
            env[node.name] = self._node(node, args, kwargs)
        raise UnsupportedModuleError("traced graph has no output", where=type(self.module).__name__)

    def _outputs(self, node, env) -> list[Val]:
        out = torch.fx.node.map_arg(node.args[0], lambda n: env[n.name])
        items = out if isinstance(out, (tuple, list)) else [out]
        if isinstance(out, TupleVal):
            items = [out.items[0]]  # a bare recurrent module: its sequence output
        vals = []
        for v in items:
            if isinstance(v, TupleVal):
                v = v.items[0]
            if not isinstance(v, Val):
                raise UnsupportedModuleError(
                    "the model returns a recurrent state; return sequence or pooled tensors only",
                    where=type(self.module).__name__,
                )
            if v.layout == "BFT":
                raise UnsupportedModuleError(
                    "the model returns a (B, C, T) tensor; transpose it to (B, T, C)", where=type(self.module).__name__
                )
            vals.append(v)
        return vals

    # ------------------------------------------------------------------------------------------
    def _node(self, node: torch.fx.Node, args, kwargs):
        for a in (*args, *kwargs.values()):
            if isinstance(a, AttentionWeights):
                raise self.unsupported(
                    node,
                    f"uses the attention weights of '{a.module}' (only its output [0] is captured)",
                    hint="take attn(x, x, x)[0]; pass need_weights=False",
                )
        if node.op == "call_module":
            m = self.modules[node.target]
            if is_snntorch(m):
                raise self.unsupported(
                    node,
                    "snntorch neurons are step functions and cannot be applied to a whole sequence",
                    hint="capture the per-step nn.Sequential (init_hidden=True) itself, or use edgeseq.nn.LIF",
                )
            conv = CONVERTERS.get(type(m))
            if conv is None:
                raise self.unsupported(
                    node,
                    f"module {type(m).__module__}.{type(m).__name__} is not supported",
                    hint="supported: " + ", ".join(supported_module_kinds()),
                )
            if type(m) in CALL_CONVERTERS:
                return conv(self.ctx, m, str(node.target), args, kwargs)
            init = args[1] if len(args) == 2 else kwargs.get("hx")
            if (
                len(args) > 2
                or set(kwargs) - {"hx"}
                or (init is not None and not isinstance(m, (nn.RNN, nn.GRU, nn.LSTM)))
            ):
                raise self.unsupported(
                    node, "modules are captured with a single input (initial states only for nn.RNN / nn.GRU / nn.LSTM)"
                )
            v = args[0]
            if not isinstance(v, Val):
                raise self.unsupported(node, "input is not a tensor value")
            if init is not None:
                return conv(self.ctx, m, str(node.target), v, init=self._initial_state(node, init))
            return conv(self.ctx, m, str(node.target), v)
        if node.op == "call_function":
            return self._function(node, node.target, args, kwargs)
        if node.op == "call_method":
            return self._method(node, node.target, args, kwargs)
        if node.op == "get_attr":
            t = self.module
            for part in str(node.target).split("."):
                t = getattr(t, part)
            return Const(t.detach().double().cpu().numpy())
        raise self.unsupported(node, "unsupported fx node")

    def _initial_state(self, node, init):
        """A recurrent module's initial state: zeros, or a constant (a learned h0), per layer."""
        parts = init if isinstance(init, (tuple, list)) else (init,)
        out = []
        for p in parts:
            if isinstance(p, Zeros):
                out.append(None)
            elif isinstance(p, Const):
                out.append(p.value)
            else:
                raise self.unsupported(
                    node,
                    "an initial state computed from the input is not supported",
                    hint="start from zeros or a learned constant",
                )
        return tuple(out)

    def _act(self, node, v: Val, fn: Act, **kw) -> Val:
        return Val(self.ctx.add(act_op(fn, **kw), v, node.name), v.layout)

    def _readout(self, node, v: Val, mode: ReadoutMode) -> Val:
        if v.layout == "BFT":
            raise self.unsupported(node, "time readout on a (B, C, T) tensor; transpose to (B, T, C) first")
        return Val(self.ctx.add(O.Readout(mode=mode), v, node.name), "BF")

    def _softmax(self, node, v, dim):
        if not isinstance(v, Val) or v.time_axis is None or dim is None or dim % 3 != v.time_axis:
            raise self.unsupported(node, "softmax is only supported over the time axis (attention pooling)")
        if self.ctx.features(v) != 1:
            raise self.unsupported(node, "attention weights need one score per step ((B, T, 1))")
        return TimeSoftmax(v)

    def _weigh(self, node, a, b):
        w, v = (a, b) if isinstance(a, TimeSoftmax) else (b, a)
        if not isinstance(v, Val) or v.layout != w.score.layout:
            raise self.unsupported(node, "attention weights must multiply a sequence of the same layout")
        return Weighted(w.score, v)

    def _pool(self, node, w: "Weighted", dim):
        if dim is None or dim % 3 != w.values.time_axis:
            raise self.unsupported(node, "weighted values must be summed over the time axis")
        cat = self.ctx.add(O.Concat(), [w.score, w.values], f"{node.name}.in")
        cat = Val(cat, "BTF")
        pooled = Val(self.ctx.add(O.AttentionPool(values=self.ctx.features(w.values)), cat, f"{node.name}.attn"), "BTF")
        return Val(self.ctx.add(O.Readout(mode=ReadoutMode.LAST), pooled, node.name), "BF")

    def _function(self, node, fn, args, kwargs):
        if fn is F.scaled_dot_product_attention:
            raise self.unsupported(
                node,
                "F.scaled_dot_product_attention on hand-split heads is not captured",
                hint="use nn.MultiheadAttention(embed_dim, num_heads, batch_first=True) as attn(x, x, x)[0]",
            )
        if fn in (torch.softmax, F.softmax):
            return self._softmax(node, args[0], args[1] if len(args) > 1 else kwargs.get("dim"))
        if fn in (operator.mul, torch.mul) and any(isinstance(a, TimeSoftmax) for a in args[:2]):
            return self._weigh(node, args[0], args[1])
        if fn is torch.sum and isinstance(args[0], Weighted):
            return self._pool(node, args[0], args[1] if len(args) > 1 else kwargs.get("dim"))
        if fn in (torch.zeros, torch.zeros_like) or (fn is getattr and len(args) == 2 and args[1] == "device"):
            return Zeros() if fn is not getattr else None
        if fn is getattr and len(args) == 2 and args[1] == "shape" and isinstance(args[0], Val):
            return Dim()
        if fn is operator.getitem and isinstance(args[0], Dim):
            return Dim()
        if fn is operator.getitem:
            return self._getitem(node, args[0], args[1])
        if fn in (operator.add, torch.add):
            a, b = args[0], args[1]
            if not (isinstance(a, Val) and isinstance(b, Val)) or kwargs.get("alpha", 1) != 1:
                raise self.unsupported(node, "only tensor + tensor additions are supported")
            if a.layout != b.layout:
                raise self.unsupported(node, f"adds tensors of different layouts ({a.layout} vs {b.layout})")
            return Val(self.ctx.add(O.Add(), [a, b], node.name), a.layout)
        if fn in _FN_ACTS:
            return self._act(node, args[0], _FN_ACTS[fn])
        if fn is F.gelu:
            approx = kwargs.get("approximate", "none")
            return self._act(node, args[0], Act.GELU_TANH if approx == "tanh" else Act.GELU)
        if fn is F.leaky_relu:
            slope = args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)
            return self._act(node, args[0], Act.LEAKY_RELU, slope=float(slope))
        if fn is F.dropout:
            return args[0]
        if fn in (torch.mean, torch.sum):
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            return self._reduce(node, args[0], dim, "mean" if fn is torch.mean else "sum", kwargs)
        if fn is torch.cat:
            vals = list(args[0])
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            return self._cat(node, vals, dim)
        if fn is F.pad:
            return self._pad(node, args[0], args[1] if len(args) > 1 else kwargs["pad"], kwargs)
        if fn is torch.transpose:
            return self._transpose(node, args[0], args[1], args[2])
        raise self.unsupported(node, "function is not supported")

    def _method(self, node, name, args, kwargs):
        v = args[0]
        if name == "softmax":
            return self._softmax(node, v, args[1] if len(args) > 1 else kwargs.get("dim"))
        if name == "sum" and isinstance(v, Weighted):
            return self._pool(node, v, args[1] if len(args) > 1 else kwargs.get("dim"))
        if name == "mul" and isinstance(v, TimeSoftmax):
            return self._weigh(node, v, args[1])
        if name == "size" and isinstance(v, Val):
            return Dim()
        if isinstance(v, (Const, Zeros)) and name in ("expand", "contiguous", "repeat", "to", "clone", "detach"):
            return v  # a per-example constant, whatever the batch size
        if isinstance(v, (Const, Zeros)) and name in ("unsqueeze", "squeeze", "view", "reshape"):
            return v
        if (
            isinstance(v, StateVal)
            and name == "squeeze"
            and v.layers == 1
            and (v.selected or v.parts[0]) == "h"
            and (len(args) == 1 or args[1] == 0)
        ):
            return self._readout(node, v.last_output, ReadoutMode.LAST)  # h_n.squeeze(0): the last step
        if name in _METHOD_ACTS:
            return self._act(node, v, _METHOD_ACTS[name])
        if name in ("mean", "sum"):
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            return self._reduce(node, v, dim, name, kwargs)
        if name == "transpose":
            return self._transpose(node, v, args[1], args[2])
        if name == "permute":
            dims = tuple(args[1]) if len(args) == 2 and isinstance(args[1], (tuple, list)) else tuple(args[1:])
            if len(dims) == 3 and dims[0] == 0 and sorted(dims) == [0, 1, 2] and dims != (0, 1, 2):
                return self._transpose(node, v, 1, 2)
            raise self.unsupported(node, f"permute{dims} is not supported (only swapping time and features)")
        if name in ("contiguous", "float"):
            return v
        if name in ("long", "int") and isinstance(v, Val):
            return Val(v.name, v.layout, ids=())  # integer ids, e.g. for an nn.Embedding
        if name == "clamp" and isinstance(v, Val) and v.ids is not None:
            lo = args[1] if len(args) > 1 else kwargs.get("min")
            hi = args[2] if len(args) > 2 else kwargs.get("max")
            return Val(v.name, v.layout, ids=(lo, hi))
        if name == "add":
            return self._function(node, operator.add, args, kwargs)
        raise self.unsupported(node, f"tensor method '.{name}()' is not supported")

    @staticmethod
    def _feature_index(v: Val, idx: tuple):
        """The feature index of ``v[idx]`` when it only selects features of a (B, T, F) value."""
        if v.layout != "BTF":
            return None
        full = slice(None)
        lead = idx[:-1]
        last = idx[-1]
        if not (isinstance(last, int) or (isinstance(last, slice) and last != full)):
            return None
        if lead == (Ellipsis,) or (len(lead) == 2 and lead[0] == full and lead[1] == full):
            return last
        return None

    def _transpose(self, node, v: Val, d0: int, d1: int) -> Val:
        dims = {d0 % 3, d1 % 3}
        if v.layout == "BTF" and dims == {1, 2}:
            return Val(v.name, "BFT", v.pad, v.trim)
        if v.layout == "BFT" and dims == {1, 2}:
            return Val(v.name, "BTF", v.pad, v.trim)
        if v.layout == "TBF" and dims == {0, 1}:
            return Val(v.name, "BTF")
        if v.layout == "BTF" and dims == {0, 1}:
            return Val(v.name, "TBF")
        raise self.unsupported(node, f"transpose({d0}, {d1}) of a {v.layout} tensor is not supported")

    def _reduce(self, node, v: Val, dim, kind: str, kwargs) -> Val:
        if kwargs.get("keepdim"):
            raise self.unsupported(node, "keepdim=True reductions are not supported")
        if isinstance(dim, (tuple, list)) and len(dim) == 1:
            dim = dim[0]
        if dim is None or v.time_axis is None or dim % 3 != v.time_axis:
            raise self.unsupported(node, f"{kind}() is only supported over the time axis")
        return self._readout(node, v, ReadoutMode.MEAN if kind == "mean" else ReadoutMode.SUM)

    def _cat(self, node, vals: list, dim: int) -> Val:
        if not all(isinstance(v, Val) for v in vals) or len({v.layout for v in vals}) != 1:
            raise self.unsupported(node, "torch.cat of tensors with different layouts")
        v0 = vals[0]
        if dim % (2 if v0.layout == "BF" else 3) != v0.feature_axis:
            raise self.unsupported(node, "torch.cat is only supported along the feature axis")
        return Val(self.ctx.add(O.Concat(), list(vals), node.name), v0.layout)

    def _pad(self, node, v: Val, pad, kwargs) -> Val:
        if kwargs.get("mode", "constant") != "constant" or kwargs.get("value", 0) not in (0, 0.0, None):
            raise self.unsupported(node, "only zero padding is supported")
        pad = tuple(pad)
        if v.layout == "BFT" and len(pad) == 2 and pad[1] == 0:
            return Val(v.name, "BFT", pad=v.pad + pad[0])
        raise self.unsupported(
            node, f"F.pad{pad} is only supported as causal (left) padding of the time axis of a (B, C, T) tensor"
        )

    def _getitem(self, node, v, idx):
        if isinstance(v, TupleVal):
            if not isinstance(idx, int) or not -len(v.items) <= idx < len(v.items):
                raise self.unsupported(node, "bad tuple index")
            return v.items[idx]
        if isinstance(v, StateVal):
            if len(v.parts) > 1 and v.selected is None and isinstance(idx, int) and idx in (0, 1, -1, -2):
                return StateVal(v.last_output, v.module, v.parts, v.parts[idx], v.layers, v.forward_last)
            sel = v.selected or v.parts[0]
            if idx == -1 and sel == "h":
                return self._readout(node, v.last_output, ReadoutMode.LAST)
            if idx == -2 and sel == "h" and v.forward_last is not None:  # bidirectional: the forward direction
                return self._readout(node, v.forward_last, ReadoutMode.LAST)
            raise self.unsupported(
                node,
                f"uses the recurrent state of '{v.module}' (only h_n[-1] is supported: it "
                "equals the last step of the output)",
            )
        if not isinstance(v, Val):
            raise self.unsupported(node, "indexing of a non-tensor value")
        idx = idx if isinstance(idx, tuple) else (idx,)
        full = slice(None)
        feat = self._feature_index(v, idx)
        if feat is not None:  # x[..., k] or x[:, :, a:b]: a selection of input features
            n = self.ctx.features(v)
            rows = np.arange(n)[feat]
            w = np.zeros((np.size(rows), n))
            w[np.arange(np.size(rows)), np.atleast_1d(rows)] = 1.0
            return Val(self.ctx.add(O.Linear(weight=w), v, node.name), v.layout)
        if (
            v.layout == "BTF"
            and len(idx) in (2, 3)
            and idx[0] == full
            and idx[1] == -1
            and all(i == full for i in idx[2:])
        ):
            return self._readout(node, v, ReadoutMode.LAST)
        if v.layout == "TBF" and idx[0] == -1 and all(i == full for i in idx[1:]):
            return self._readout(node, v, ReadoutMode.LAST)
        if v.layout == "BFT" and not v.trim and len(idx) == 3 and idx[0] == full and idx[1] == full and idx[2] == -1:
            return Val(self.ctx.add(O.Readout(mode=ReadoutMode.LAST), v, node.name), "BF")
        if v.layout == "BFT" and v.trim and len(idx) >= 1:
            last = idx[-1]
            lead = idx[:-1]
            if (
                isinstance(last, slice)
                and last.start in (None, 0)
                and last.step in (None, 1)
                and last.stop == -v.trim
                and all(i in (full, Ellipsis) for i in lead)
                and (Ellipsis in lead or len(idx) == 3)
            ):
                return Val(v.name, "BFT")
        raise self.unsupported(
            node,
            f"indexing {idx} of a {v.layout} tensor is not supported "
            "(supported: x[:, -1] for the last step, causal-conv trimming)",
        )
