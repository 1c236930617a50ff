"""The QDQ model's fast path as a pattern rewrite: a quantized step program whose float form is
ONNX's ``LSTM`` (:func:`.fused.fused_kernel`) runs on onnxruntime's ``com.microsoft``
``DynamicQuantizeLSTM`` kernel, one node for the whole sequence instead of a ``Scan``.

The kernel takes the program's own int8 weights (per output channel, exactly as the integer
program holds them: the input's integers arrive as floats with their scale in W) and float states; at every step it quantizes the hidden state to
uint8 with a scale of its own choosing and runs the recurrent product in integer arithmetic. The
cell state and the gates stay float. The plan's points at the kernel's boundaries are kept: the
input arrives dequantized from its point, the outputs and the final states are quantized to theirs.
Inside, the numerics are onnxruntime's, not the plan's, so it agrees with the integer-exact
interpreter within the QDQ model's stated tolerance (``qdq.TOLERANCE``), not bit for bit. Programs
with weights wider than 8 bits, or with more than one output, render generically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np
from onnx import TensorProto

from ...ir.step import StepProgram
from ...ir.step.passes import StripQuant
from ._emit import f32
from .fused import FusedKernel, fused_kernel
from .qweights import int_weights

if TYPE_CHECKING:  # pragma: no cover
    from .qdq import QdqLowering

MS_DOMAIN = "com.microsoft"
OP_TYPE = "DynamicQuantizeLSTM"


def quantized_lstm(num, prog: StepProgram) -> Optional[FusedKernel]:
    """The ONNX LSTM (with the fake-quant weights of ``num``, a ``qdq._Points``) that the quantized
    program ``prog`` computes, when onnxruntime's quantized LSTM kernel can run it; else None."""
    if len(prog.outputs) != 1 or prog.outputs[0] not in num.points:
        return None
    plain = StripQuant()(prog)
    k = fused_kernel(plain.replace(params={n: num.value_of(n) for n in plain.params}))
    if k is None or k.op_type != "LSTM":
        return None
    if any(np.ndim(prog.params[n]) == 2 and num.wbits(n) > 8 for n in k.params):
        return None
    return k


def _int8(lw: "QdqLowering", w: np.ndarray, hint: str) -> tuple[str, str, str]:
    """(int8 weight (1, in, out), per-channel scale (1, out), zero point (1, out)) of the float
    weight ``w`` (out, in), from its exact integer form."""
    wq, scale, exact = int_weights(w, 8)
    if not exact:
        lw.inexact_weights.append(f"{lw.node}:{hint}")
    m = lw.main
    q = m.const(np.ascontiguousarray(wq.T[None]).astype(np.int8), f"{lw.node}/{hint}", dtype=np.int8)
    s = m.const(f32(scale[None]), f"{lw.node}/{hint}.scale")
    z = m.const(np.zeros((1, scale.size), np.int8), f"{lw.node}/{hint}.zp", dtype=np.int8)
    return q, s, z


def render_quantized_lstm(lw: "QdqLowering", node, num, k: FusedKernel) -> None:
    """``node`` (its program matched as ``k``) as one ``DynamicQuantizeLSTM``."""
    m = lw.main
    v = lw.vals[node.inputs[0]]
    wx, bias = k.w[0], np.array(k.b, np.float64)
    if len(v.parts) == 1 and np.array_equal(v.single.idx, np.arange(v.n)):
        # the input's integers as floats, its (per-channel) scale absorbed into W and its offset into the
        # bias: the kernel's products are of exact integers, as the integer program's
        p = v.single
        x = m.op("Cast", m.tensor(p.q), to=TensorProto.FLOAT, hint="xi")
        if p.offset is not None:
            bias[0, : wx.shape[0]] += wx @ np.asarray(p.offset, np.float64)
        wx = wx * np.asarray(p.scale, np.float64)[None, :]
    else:
        x = lw.float_of(m, v)
    x = m.op("Transpose", x, perm=[1, 0, 2], hint="tm")
    ax0 = m.ints([0], "ax0")
    states = ["", ""]  # a whole sequence starts from zeros, the kernel's default
    if lw.streaming:  # h, c: the program's integer states in float (not DequantizeLinear: onnxruntime's QDQ
        # propagation would move such a pair across the Unsqueeze and break its types)
        states = [
            m.op(
                "Unsqueeze",
                m.op("Mul", m.op("Cast", lw.state_init(key), to=TensorProto.FLOAT), m.const(f32(lw.entry(key).scale))),
                ax0,
                hint="s3",
            )
            for key in num.keys
        ]
    w, ws, wz = _int8(lw, wx, "W")
    r, rs, rz = _int8(lw, k.r[0], "R")
    y, yh, yc = m.op(
        OP_TYPE,
        x,
        w,
        r,
        m.const(f32(bias), f"{node.name}/B"),
        "",
        *states,
        "",
        ws,
        wz,
        rs,
        rz,
        outputs=3,
        domain=MS_DOMAIN,
        hidden_size=k.hidden,
        hint="qlstm",
    )
    lw.products.append(
        {
            "node": node.name,
            "where": "fused",
            "act_bits": 8,
            "weight_bits": 8,
            "integer_kernel": True,
            "shape": [int(k.w.shape[2] + k.r.shape[2]), int(k.w.shape[1])],
        }
    )
    seq = m.op("Transpose", m.op("Squeeze", y, m.ints([1], "ax1")), perm=[1, 0, 2], hint="bm")
    lw.vals[node.outputs[0]] = lw.quantize_value(seq, num.points[num.prog.outputs[0]][0], True)
    for key, final in zip(num.keys, (yh, yc)):
        e = lw.entry(key)
        q = lw.quant(m, m.op("Squeeze", final, ax0), e.scale, e.bits, hint="state")
        m.op("Identity", q, outputs=[lw.state_out(key)])  # lw.quant gives the state's storage type
