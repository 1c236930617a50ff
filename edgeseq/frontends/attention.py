"""Capture of ``nn.MultiheadAttention`` used as self-attention over the window.

``attn(x, x, x)`` (``need_weights`` ignored, the output ``[0]`` taken) becomes the packed input
projection (a ``Linear`` to [q, k, v]), the window op :class:`edgeseq.ir.ops.SelfAttention` and the
output projection (a ``Linear``): a window graph, since every step attends to the whole window. Any
other use (cross-attention, masks, causal attention, bias_k / add_zero_attn, separate k/v dims) is a
one-line error naming the module and what to write instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import UnsupportedModuleError
from ..ir import ops as O
from .modules import CONVERTERS, _need_layout, np_
from .values import TupleVal, Val

_WRITE = "write attn(x, x, x) with no mask (need_weights may be anything; take [0])"
_IGNORED = {"need_weights", "average_attn_weights"}


@dataclass
class AttentionWeights:
    """The attention weights an nn.MultiheadAttention returns: not captured (using them is an error)."""

    module: str


def _refuse(path: str, what: str, hint: str = _WRITE):
    return UnsupportedModuleError(what, where=path, hint=hint)


def multihead_attention(ctx, m: nn.MultiheadAttention, path: str, args: tuple, kwargs: dict) -> TupleVal:
    names = ("query", "key", "value")
    given = dict(zip(names, args[:3])) | {k: kwargs[k] for k in names if k in kwargs}
    extra = dict(zip(("key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal"), args[3:]))
    extra |= {k: v for k, v in kwargs.items() if k not in names}
    q = given.get("query")
    if not isinstance(q, Val) or any(not isinstance(given.get(k), Val) or given[k].name != q.name for k in names):
        raise _refuse(
            path, "nn.MultiheadAttention is captured as self-attention only (query, key and value the same tensor)"
        )
    for k, val in extra.items():
        if k not in _IGNORED and val not in (None, False):
            raise _refuse(
                path, f"nn.MultiheadAttention with {k} is not supported (attention over the whole window only)"
            )
    if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
        raise _refuse(
            path,
            "nn.MultiheadAttention with kdim/vdim, add_bias_kv or add_zero_attn is not supported",
            hint="use nn.MultiheadAttention(embed_dim, num_heads, batch_first=...) with the defaults",
        )
    _need_layout(
        q, ("BTF",) if m.batch_first else ("TBF",), path, f"nn.MultiheadAttention(batch_first={m.batch_first})"
    )
    ctx.window.append(f"'{path}' is self-attention, where every step reads every step of the window")
    qkv = Val(ctx.add(O.Linear(weight=np_(m.in_proj_weight), bias=np_(m.in_proj_bias)), q, f"{path}.in_proj"), q.layout)
    att = Val(ctx.add(O.SelfAttention(num_heads=m.num_heads), qkv, f"{path}.attention"), q.layout)
    o = m.out_proj
    out = Val(ctx.add(O.Linear(weight=np_(o.weight), bias=np_(o.bias)), att, f"{path}.out_proj"), q.layout)
    return TupleVal((out, AttentionWeights(path)))


CONVERTERS[nn.MultiheadAttention] = multihead_attention  # type: ignore[assignment]
#: module types whose converter takes the whole call (ctx, module, path, args, kwargs)
CALL_CONVERTERS = {nn.MultiheadAttention}
