"""Triton reference kernels for the scan families (same signatures as :mod:`.torch_kernels`).

- linear recurrences: :func:`diag_scan` is one ``tl.associative_scan`` per (sequence, feature block)
  over blocks of time steps with a carried state; :func:`ti_scan` (constant transition matrix, the
  LMU memory) runs ``ceil(log2 T)`` doubling rounds, each one kernel launch that adds
  ``M^(2^k) y_{t-2^k}`` to every step in parallel;
- nonlinear cells (RNN, GRU, LSTM, LIF / CuBa-LIF): one fused kernel per layer that walks the time
  axis with the state in registers; the input projection is hoisted by the caller (one matmul over
  the whole sequence). Each program owns a block of sequences and the whole hidden vector.

float32 matrix products use ``tl.dot(..., input_precision="ieee")`` (no TF32: this is a reference);
float64 uses broadcast-and-sum products, which every backend (and the interpreter) supports.

Importing this module imports triton. On a machine without CUDA the kernels run only in Triton's
interpreter: set ``TRITON_INTERPRET=1`` before triton is first imported (before Python starts is
safest); :func:`check_device` says so when it is missing.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ...errors import ConfigError
from ...ir.types import Act, ResetRule
from . import torch_kernels as TK

NAME = "triton"


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1 at import)."""
    try:
        from triton import knobs

        return bool(knobs.runtime.interpret)
    except (ImportError, AttributeError):  # pragma: no cover - older triton
        import os

        return os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


def check_device(device: torch.device) -> None:
    if device.type == "cuda" or interpreting():
        return
    raise ConfigError(
        "Triton kernels need a CUDA device, or Triton's interpreter to run on the CPU",
        where="edgeseq.validate.gpu",
        hint="set TRITON_INTERPRET=1 in the environment before triton is imported, or use kernels='torch'",
    )


def _device_fn(fn):
    """Decorator of the small device helpers: ``triton.jit`` when compiling; under the interpreter a
    plain function (the interpreter re-patches triton's builtins on every jit call, which costs more
    than the helper itself; the tl operations inside run the same way)."""
    return fn if interpreting() else triton.jit(fn)


def _p2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


# ----------------------------------------------------------------------------------------------
# device helpers


@_device_fn
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@_device_fn
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@_device_fn
def _act(x, ACT: tl.constexpr):
    if ACT == 1:
        x = _tanh(x)
    elif ACT == 2:
        x = tl.maximum(x, 0.0)
    elif ACT == 3:
        x = _sigmoid(x)
    return x


@_device_fn
def _mv(h, w, USE_DOT: tl.constexpr):
    """h (BB, K) @ w (K, N)."""
    if USE_DOT:
        out = tl.dot(h, w, input_precision="ieee")
    else:
        out = tl.sum(h[:, :, None] * w[None, :, :], axis=1)
    return out


@_device_fn
def _w_tile(w_ptr, row0, K, N, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """Transposed tile of a row-major (rows, K) matrix: out[k, o] = W[row0 + o, k], zero-padded."""
    ok = tl.arange(0, BLOCK_K)
    on = tl.arange(0, BLOCK_N)
    mask = (ok[:, None] < K) & (on[None, :] < N)
    return tl.load(w_ptr + (row0 + on[None, :]) * K + ok[:, None], mask=mask, other=0.0)


# ----------------------------------------------------------------------------------------------
# linear recurrences


@triton.jit
def _pair(a1, b1, a2, b2):
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _diag_scan_kernel(a_ptr, b_ptr, h0_ptr, y_ptr, T, H, C, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """Columns c = (sequence, feature) pairs, C = B * H of them; each program scans BLOCK_C columns."""
    oc = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mc = oc < C
    col = (oc // H) * T * H + oc % H  # offset of (b, t=0, h)
    carry = tl.load(h0_ptr + oc, mask=mc, other=0.0)
    last = (tl.arange(0, BLOCK_T) == BLOCK_T - 1)[:, None]
    for t0 in range(0, T, BLOCK_T):
        ot = t0 + tl.arange(0, BLOCK_T)
        m2 = (ot < T)[:, None] & mc[None, :]
        off = col[None, :] + ot[:, None] * H
        a = tl.load(a_ptr + off, mask=m2, other=1.0)  # padding (1, 0) keeps the last row = last valid step
        b = tl.load(b_ptr + off, mask=m2, other=0.0)
        ca, cb = tl.associative_scan((a, b), 0, _pair)
        h = ca * carry[None, :] + cb
        tl.store(y_ptr + off, h, mask=m2)
        carry = tl.sum(tl.where(last, h, 0.0), axis=0)


def diag_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    check_device(a.device)
    a, b, h0 = a.contiguous(), b.contiguous(), h0.contiguous()
    bsz, steps, n = a.shape
    cols = bsz * n
    y = torch.empty_like(b)
    if interpreting():  # few, large programs: the interpreter pays per program and per op
        block_c, block_t = min(_p2(cols), 1024), min(max(16, _p2(steps)), 1024)
    else:
        block_c, block_t = min(_p2(cols), 64), max(16, min(_p2(steps), 64))
    _diag_scan_kernel[(triton.cdiv(cols, block_c),)](a, b, h0, y, steps, n, cols, BLOCK_T=block_t, BLOCK_C=block_c)
    return y


@triton.jit
def _ti_round_kernel(
    y_ptr, p_ptr, out_ptr, RT, T, N, S, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, USE_DOT: tl.constexpr
):
    """One doubling round over the (R*T, N) matrix of all steps: out = y + [t >= S] y[row - S] P^T."""
    orow = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    on = tl.arange(0, BLOCK_N)
    m2 = (orow < RT)[:, None] & (on < N)[None, :]
    off = orow[:, None] * N + on[None, :]
    y = tl.load(y_ptr + off, mask=m2, other=0.0)
    prev = tl.load(y_ptr + off - S * N, mask=m2 & ((orow % T) >= S)[:, None], other=0.0)
    pt = _w_tile(p_ptr, 0, N, N, BLOCK_N, BLOCK_N)
    tl.store(out_ptr + off, y + _mv(prev, pt, USE_DOT), mask=m2)


def ti_scan(b: torch.Tensor, m: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    check_device(b.device)
    rows, steps, n = b.shape
    y = b.clone()
    y[:, 0] += h0 @ m.T
    y = y.contiguous()
    out = torch.empty_like(y)
    use_dot = y.dtype == torch.float32
    block_n = max(16, _p2(n)) if use_dot else _p2(n)
    budget = 1 << 17 if interpreting() else 1 << 13  # elements of the (BLOCK_R, BLOCK_N[, BLOCK_N]) tiles
    per_row = block_n if use_dot else block_n * block_n
    block_r = max(16 if use_dot else 1, min(_p2(rows * steps), budget // per_row, 1024))
    grid = (triton.cdiv(rows * steps, block_r),)
    p = m.contiguous()
    s = 1
    while s < steps:
        _ti_round_kernel[grid](y, p, out, rows * steps, steps, n, s, BLOCK_R=block_r, BLOCK_N=block_n, USE_DOT=use_dot)
        y, out = out, y
        s *= 2
        if s < steps:
            p = (p @ p).contiguous()
    return y


# ----------------------------------------------------------------------------------------------
# nonlinear cells


def _blocks(bsz: int, hidden: int, dtype: torch.dtype, tiles: int) -> tuple[int, int, bool, bool]:
    """(BLOCK_B, BLOCK_H, USE_DOT, HOIST_W): tl.dot needs blocks >= 16 and is used for float32 only;
    weight tiles stay in registers across steps (HOIST_W) when they are small."""
    if dtype == torch.float32:
        bb, bh, dot = 16, max(16, _p2(hidden)), True
    else:
        bh = _p2(hidden)
        bb, dot = max(1, min(_p2(bsz), 16, 16384 // (bh * bh * tiles) or 1)), False
    return bb, bh, dot, bh * bh * tiles <= 4096


@triton.jit
def _rnn_kernel(
    gx_ptr,
    w_ptr,
    h0_ptr,
    y_ptr,
    hT_ptr,
    B,
    T,
    H,
    ACT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    USE_DOT: tl.constexpr,
    HOIST_W: tl.constexpr,
):
    ob = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    oh = tl.arange(0, BLOCK_H)
    m2 = (ob < B)[:, None] & (oh < H)[None, :]
    h = tl.load(h0_ptr + ob[:, None] * H + oh[None, :], mask=m2, other=0.0)
    if HOIST_W:
        w = _w_tile(w_ptr, 0, H, H, BLOCK_H, BLOCK_H)
    seq = ob[:, None] * (T * H) + oh[None, :]  # pointers advance one step per iteration
    gx_p, y_p = gx_ptr + seq, y_ptr + seq
    for t in range(T):
        if not HOIST_W:
            w = _w_tile(w_ptr, 0, H, H, BLOCK_H, BLOCK_H)
        g = tl.load(gx_p, mask=m2, other=0.0)
        h = tl.where(m2, _act(g + _mv(h, w, USE_DOT), ACT), 0.0)
        tl.store(y_p, h, mask=m2)
        gx_p += H
        y_p += H
    tl.store(hT_ptr + ob[:, None] * H + oh[None, :], h, mask=m2)


def rnn_supports(act: Act) -> bool:
    return act in TK.ACT_CODES


def rnn_scan(gx: torch.Tensor, w_hh: torch.Tensor, h0: torch.Tensor, act: Act) -> torch.Tensor:
    if not rnn_supports(act):
        return TK.rnn_scan(gx, w_hh, h0, act)
    check_device(gx.device)
    bsz, steps, n = gx.shape
    bb, bh, use_dot, hoist = _blocks(bsz, n, gx.dtype, 1)
    y = torch.empty_like(gx)
    h_t = torch.empty_like(h0)
    _rnn_kernel[(triton.cdiv(bsz, bb),)](
        gx.contiguous(),
        w_hh.contiguous(),
        h0.contiguous(),
        y,
        h_t,
        bsz,
        steps,
        n,
        ACT=TK.ACT_CODES[act],
        BLOCK_B=bb,
        BLOCK_H=bh,
        USE_DOT=use_dot,
        HOIST_W=hoist,
    )
    return y


@triton.jit
def _gru_kernel(
    gx_ptr,
    w_ptr,
    bh_ptr,
    h0_ptr,
    y_ptr,
    B,
    T,
    H,
    RESET_AFTER: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    USE_DOT: tl.constexpr,
    HOIST_W: tl.constexpr,
):
    ob = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    oh = tl.arange(0, BLOCK_H)
    mh = oh < H
    m2 = (ob < B)[:, None] & mh[None, :]
    h = tl.load(h0_ptr + ob[:, None] * H + oh[None, :], mask=m2, other=0.0)
    b_r = tl.load(bh_ptr + oh, mask=mh, other=0.0)[None, :]
    b_z = tl.load(bh_ptr + H + oh, mask=mh, other=0.0)[None, :]
    b_n = tl.load(bh_ptr + 2 * H + oh, mask=mh, other=0.0)[None, :]
    if HOIST_W:
        w_r = _w_tile(w_ptr, 0, H, H, BLOCK_H, BLOCK_H)
        w_z = _w_tile(w_ptr, H, H, H, BLOCK_H, BLOCK_H)
        w_n = _w_tile(w_ptr, 2 * H, H, H, BLOCK_H, BLOCK_H)
    gx_p = gx_ptr + ob[:, None] * (T * 3 * H) + oh[None, :]  # pointers advance one step per iteration
    y_p = y_ptr + ob[:, None] * (T * H) + oh[None, :]
    h2 = 2 * H
    h3 = 3 * H
    for t in range(T):
        if not HOIST_W:
            w_r = _w_tile(w_ptr, 0, H, H, BLOCK_H, BLOCK_H)
            w_z = _w_tile(w_ptr, H, H, H, BLOCK_H, BLOCK_H)
            w_n = _w_tile(w_ptr, 2 * H, H, H, BLOCK_H, BLOCK_H)
        g_r = tl.load(gx_p, mask=m2, other=0.0)
        g_z = tl.load(gx_p + H, mask=m2, other=0.0)
        g_n = tl.load(gx_p + h2, mask=m2, other=0.0)
        r = _sigmoid(g_r + _mv(h, w_r, USE_DOT) + b_r)
        z = _sigmoid(g_z + _mv(h, w_z, USE_DOT) + b_z)
        if RESET_AFTER:
            n = _tanh(g_n + r * (_mv(h, w_n, USE_DOT) + b_n))
        else:
            n = _tanh(g_n + _mv(r * h, w_n, USE_DOT) + b_n)
        h = tl.where(m2, (1.0 - z) * n + z * h, 0.0)
        tl.store(y_p, h, mask=m2)
        gx_p += h3
        y_p += H


def gru_scan(gx, w_hh, b_hh, h0, reset_after: bool):
    check_device(gx.device)
    bsz, steps, n3 = gx.shape
    n = n3 // 3
    bb, bh, use_dot, hoist = _blocks(bsz, n, gx.dtype, 3)
    y = torch.empty((bsz, steps, n), dtype=gx.dtype, device=gx.device)
    _gru_kernel[(triton.cdiv(bsz, bb),)](
        gx.contiguous(),
        w_hh.contiguous(),
        b_hh.contiguous(),
        h0.contiguous(),
        y,
        bsz,
        steps,
        n,
        RESET_AFTER=bool(reset_after),
        BLOCK_B=bb,
        BLOCK_H=bh,
        USE_DOT=use_dot,
        HOIST_W=hoist,
    )
    return y


@triton.jit
def _lstm_kernel(
    gx_ptr,
    w_ptr,
    h0_ptr,
    c0_ptr,
    y_ptr,
    cT_ptr,
    B,
    T,
    H,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    USE_DOT: tl.constexpr,
    HOIST_W: tl.constexpr,
):
    ob = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    oh = tl.arange(0, BLOCK_H)
    m2 = (ob < B)[:, None] & (oh < H)[None, :]
    st = ob[:, None] * H + oh[None, :]
    h = tl.load(h0_ptr + st, mask=m2, other=0.0)
    c = tl.load(c0_ptr + st, mask=m2, other=0.0)
    if HOIST_W:
        w_i = _w_tile(w_ptr, 0, H, H, BLOCK_H, BLOCK_H)
        w_f = _w_tile(w_ptr, H, H, H, BLOCK_H, BLOCK_H)
        w_g = _w_tile(w_ptr, 2 * H, H, H, BLOCK_H, BLOCK_H)
        w_o = _w_tile(w_ptr, 3 * H, H, H, BLOCK_H, BLOCK_H)
    gx_p = gx_ptr + ob[:, None] * (T * 4 * H) + oh[None, :]  # pointers advance one step per iteration
    y_p = y_ptr + ob[:, None] * (T * H) + oh[None, :]
    h2 = 2 * H
    h3 = 3 * H
    h4 = 4 * H
    for t in range(T):
        if not HOIST_W:
            w_i = _w_tile(w_ptr, 0, H, H, BLOCK_H, BLOCK_H)
            w_f = _w_tile(w_ptr, H, H, H, BLOCK_H, BLOCK_H)
            w_g = _w_tile(w_ptr, 2 * H, H, H, BLOCK_H, BLOCK_H)
            w_o = _w_tile(w_ptr, 3 * H, H, H, BLOCK_H, BLOCK_H)
        gi = tl.load(gx_p, mask=m2, other=0.0) + _mv(h, w_i, USE_DOT)
        gf = tl.load(gx_p + H, mask=m2, other=0.0) + _mv(h, w_f, USE_DOT)
        gg = tl.load(gx_p + h2, mask=m2, other=0.0) + _mv(h, w_g, USE_DOT)
        go = tl.load(gx_p + h3, mask=m2, other=0.0) + _mv(h, w_o, USE_DOT)
        c = tl.where(m2, _sigmoid(gf) * c + _sigmoid(gi) * _tanh(gg), 0.0)
        h = tl.where(m2, _sigmoid(go) * _tanh(c), 0.0)
        tl.store(y_p, h, mask=m2)
        gx_p += h4
        y_p += H
    tl.store(cT_ptr + st, c, mask=m2)


def lstm_scan(gx, w_hh, h0, c0):
    check_device(gx.device)
    bsz, steps, n4 = gx.shape
    n = n4 // 4
    bb, bh, use_dot, hoist = _blocks(bsz, n, gx.dtype, 4)
    y = torch.empty((bsz, steps, n), dtype=gx.dtype, device=gx.device)
    c_t = torch.empty_like(c0)
    _lstm_kernel[(triton.cdiv(bsz, bb),)](
        gx.contiguous(),
        w_hh.contiguous(),
        h0.contiguous(),
        c0.contiguous(),
        y,
        c_t,
        bsz,
        steps,
        n,
        BLOCK_B=bb,
        BLOCK_H=bh,
        USE_DOT=use_dot,
        HOIST_W=hoist,
    )
    return y, c_t


@triton.jit
def _lif_kernel(
    cur_ptr,
    beta_ptr,
    thr_ptr,
    alpha_ptr,
    scale_ptr,
    v_ptr,
    w_ptr,
    brec_ptr,
    mem0_ptr,
    syn0_ptr,
    spk0_ptr,
    spk_ptr,
    mem_ptr,
    memT_ptr,
    synT_ptr,
    spkT_ptr,
    B,
    T,
    N,
    SYN: tl.constexpr,
    RESET: tl.constexpr,
    DELAY: tl.constexpr,
    SCALE: tl.constexpr,
    REC: tl.constexpr,
    BREC: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    USE_DOT: tl.constexpr,
    HOIST_W: tl.constexpr,
):
    ob = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    on = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mn = on < N
    m2 = (ob < B)[:, None] & mn[None, :]
    st = ob[:, None] * N + on[None, :]
    beta = tl.load(beta_ptr + on, mask=mn, other=0.0)[None, :]
    thr = tl.load(thr_ptr + on, mask=mn, other=1.0)[None, :]
    mem = tl.load(mem0_ptr + st, mask=m2, other=0.0)
    if SYN:
        alpha = tl.load(alpha_ptr + on, mask=mn, other=0.0)[None, :]
        syn = tl.load(syn0_ptr + st, mask=m2, other=0.0)
    if SCALE:
        scale = tl.load(scale_ptr + on, mask=mn, other=0.0)[None, :]
    if REC > 0:
        spk = tl.load(spk0_ptr + st, mask=m2, other=0.0)
    if REC == 1:
        v = tl.load(v_ptr + on, mask=mn, other=0.0)[None, :]
    if BREC:
        brec = tl.load(brec_ptr + on, mask=mn, other=0.0)[None, :]
    if REC == 2 and HOIST_W:
        w = _w_tile(w_ptr, 0, N, N, BLOCK_N, BLOCK_N)
    seq = ob[:, None] * (T * N) + on[None, :]  # pointers advance one step per iteration
    cur_p, spk_p, mem_p = cur_ptr + seq, spk_ptr + seq, mem_ptr + seq
    for t in range(T):
        cur = tl.load(cur_p, mask=m2, other=0.0)
        if REC == 1:
            cur = cur + v * spk
        if REC == 2:
            if not HOIST_W:
                w = _w_tile(w_ptr, 0, N, N, BLOCK_N, BLOCK_N)
            cur = cur + _mv(spk, w, USE_DOT)
            if BREC:
                cur = cur + brec
        r = tl.where(mem - thr > 0, 1.0, 0.0).to(mem.dtype)
        if SYN:
            syn = alpha * syn + cur
            drive = syn
        else:
            drive = cur
        if RESET == 1:
            u = beta * mem + drive - r * thr
        elif RESET == 2:
            u = beta * ((1.0 - r) * mem) + drive
        elif RESET == 3:
            base = beta * mem + drive
            u = base - r * base
        else:
            u = beta * mem + drive
        fired = tl.where(u - thr > 0, 1.0, 0.0).to(u.dtype)
        if SCALE:
            s_t = fired * scale
        else:
            s_t = fired
        if not DELAY:
            if RESET == 1:
                u = u - (fired - r) * thr
            elif RESET > 1:
                u = u - (fired - r) * u
        mem = tl.where(m2, u, 0.0)
        tl.store(spk_p, s_t, mask=m2)
        tl.store(mem_p, mem, mask=m2)
        if REC > 0:
            spk = tl.where(m2, s_t, 0.0)
        cur_p += N
        spk_p += N
        mem_p += N
    tl.store(memT_ptr + st, mem, mask=m2)
    if SYN:
        tl.store(synT_ptr + st, syn, mask=m2)
    if REC > 0:
        tl.store(spkT_ptr + st, spk, mask=m2)


def lif_scan(
    current,
    p: dict,
    reset: ResetRule,
    reset_delay: bool,
    mem0,
    syn0,
    rec: int = 0,
    v_rec=None,
    w_rec=None,
    b_rec=None,
    spk0=None,
):
    check_device(current.device)
    bsz, steps, n = current.shape
    cur = current.contiguous()

    def vec(v) -> Optional[torch.Tensor]:
        return None if v is None else torch.broadcast_to(v, (n,)).contiguous()

    beta, thr, alpha, scale, v = (
        vec(p["beta"]),
        vec(p["threshold"]),
        vec(p.get("alpha")),
        vec(p.get("spike_scale")),
        vec(v_rec),
    )
    dummy = cur
    if rec == 2:
        bb, bn, use_dot, hoist = _blocks(bsz, n, cur.dtype, 1)
        grid = (triton.cdiv(bsz, bb), 1)
    else:
        bb, bn, use_dot, hoist = min(_p2(bsz), 16), min(_p2(n), 128), False, False
        grid = (triton.cdiv(bsz, bb), triton.cdiv(n, bn))
    spk = torch.empty_like(cur)
    mem = torch.empty_like(cur)
    mem_t = torch.empty_like(mem0)
    syn_t = torch.empty_like(mem0) if syn0 is not None else None
    spk_t = torch.empty_like(mem0) if rec else None
    _lif_kernel[grid](
        cur,
        beta,
        thr,
        alpha if alpha is not None else dummy,
        scale if scale is not None else dummy,
        v if v is not None else dummy,
        w_rec.contiguous() if w_rec is not None else dummy,
        vec(b_rec) if b_rec is not None else dummy,
        mem0.contiguous(),
        syn0.contiguous() if syn0 is not None else dummy,
        spk0.contiguous() if spk0 is not None else dummy,
        spk,
        mem,
        mem_t,
        syn_t if syn_t is not None else dummy,
        spk_t if spk_t is not None else dummy,
        bsz,
        steps,
        n,
        SYN=syn0 is not None,
        RESET=TK.RESET_CODES[reset],
        DELAY=bool(reset_delay),
        SCALE=scale is not None,
        REC=int(rec),
        BREC=b_rec is not None,
        BLOCK_B=bb,
        BLOCK_N=bn,
        USE_DOT=use_dot,
        HOIST_W=hoist,
    )
    return spk, mem, mem_t, syn_t, spk_t
