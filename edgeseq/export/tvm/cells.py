"""Scan kernels: one parametrised generator per recurrent / spiking cell family.

Families: gated RNNs (RNN, GRU in both reset conventions, LSTM), minimal RNNs (MinGRU,
MinLSTM), LMU, LIF populations (LIF, CuBaLIF, with none / one-to-one / all-to-all recurrence)
and L2MU. Every family lowers to

1. a hoisted input projection (when the cell has input weights): one register-blocked matmul
   over the whole (B, T, I) sequence, before any recurrence (:func:`.ff.linear`);
2. a scan kernel: ``for b: load state; for t in T.serial(T): step; store state``. The state
   lives in local buffers for the whole sequence and crosses the kernel boundary only as the
   explicit (B, n) state tensors of ``graph.state_spec()`` (in and out), so running a sequence
   in chunks equals running it whole, bit for bit.

Inside a step, recurrent products are register-blocked matrix-vector products against
pre-transposed weights and everything elementwise is vectorised over the hidden dimension (with
a tail loop for sizes that are not a multiple of the vector width). Nonlinearities and products
come from a :class:`~.numerics.Numerics` object, which is where fixed-point variants of each
family will plug in.

Parameters are prepared here (transposed, biases folded where the equations allow it, spiking
parameters clipped exactly as the reference interpreter does) in float64 and cast once.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ...ir import ops as O
from ...ir.types import Act, Recurrence, ResetRule
from . import ff
from .emit import Kernel, Schedule, f32 as lit
from .numerics import Numerics
from .plan import Call, f32


def _projection(name: str, w: np.ndarray, b: np.ndarray | None, sched: Schedule, num: Numerics,
                src: str = "in0", dst: str = "tmp:P") -> Call:
    """Hoisted input projection P = x W^T + b over the whole sequence."""
    n_out, n_in = w.shape
    k = ff.linear(f"{name}_proj_i{n_in}_o{n_out}", n_in, n_out, ff.TEMPORAL, sched, num, bias=True)
    bias = np.zeros(n_out) if b is None else b
    return Call(k, consts={"Wt": f32(np.asarray(w).T), "bias": f32(bias)}, ins={"X": src}, outs={"Y": dst})


def _arr(p, name, n=None):
    a = getattr(p, name)
    if a is None:
        return np.zeros(n) if n is not None else None
    return np.asarray(a, dtype=np.float64)


class _Scan:
    """Helper for the common shape of a scan kernel: state in -> local, time loop, local -> state out."""

    def __init__(self, k: Kernel):
        self.k = k
        self.states: list[tuple[str, str, str, int, int]] = []  # (param in, param out, local, size, offset)

    def state(self, name: str, local: str, n: int, offset: int = 0) -> None:
        self.k.input(f"S_{name}", ("B", n))
        self.states.append((f"S_{name}", f"SO_{name}", local, n, offset))

    def declare_outputs(self, outputs: Sequence[tuple[str, int]]) -> None:
        for name, n in outputs:
            self.k.output(name, ("B", "T", n))
        for sin, sout, _, n, _ in self.states:
            self.k.output(sout, ("B", n))

    def run(self, step: Callable[[], None]) -> None:
        k = self.k
        with k.loop("b", "B"):
            for sin, _, loc, n, off in self.states:
                k.vec(n, lambda j, sin=sin, loc=loc, off=off: [f"{loc}[{off} + {j}] = {sin}[b, {j}]"])
            with k.loop("t", "TT"):
                step()
            for _, sout, loc, n, off in self.states:
                k.vec(n, lambda j, sout=sout, loc=loc, off=off: [f"{sout}[b, {j}] = {loc}[{off} + {j}]"])

    def state_binding(self) -> tuple[dict, dict]:
        ins = {sin: f"state:{sin[2:]}" for sin, _, _, _, _ in self.states}
        outs = {sout: f"state:{sout[3:]}" for _, sout, _, _, _ in self.states}
        return ins, outs


# ----------------------------------------------------------------------------------------------
# gated RNNs: RNN, GRU, LSTM


def plan_gated(name: str, op, sched: Schedule, num: Numerics) -> list[Call]:
    """RNN / GRU / LSTM. The projection carries b_ih plus every part of b_hh that adds to a gate
    pre-activation directly (all of it, except GRU's b_hn, which sits inside r * (W_hn h + b_hn)
    with reset_after)."""
    h = op.hidden_size
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op.kind]
    w_ih, w_hh = _arr(op, "w_ih"), _arr(op, "w_hh")
    b_ih, b_hh = _arr(op, "b_ih", gates * h), _arr(op, "b_hh", gates * h)
    pbias = b_ih + b_hh
    if op.kind == "GRU":
        pbias = b_ih.copy()
        pbias[: 2 * h] += b_hh[: 2 * h]
    proj = _projection(name, w_ih, pbias, sched, num)

    if op.kind == "RNN":
        tag = f"rnn_{op.act.value}"
    elif op.kind == "GRU":
        tag = "gru_ra" if op.reset_after else "gru_rb"
    else:
        tag = "lstm"
    k = Kernel(f"{tag}_scan_h{h}", sched, num)
    k.input("P", ("B", "T", gates * h))
    k.input("Wt", (h, gates * h))
    consts = {"Wt": f32(w_hh.T)}
    if op.kind == "GRU":
        k.input("BHN", (h,))
        consts["BHN"] = f32(b_hh[2 * h:])
    hl = k.scratch("hl", h)
    g = k.scratch("g", gates * h)
    scan = _Scan(k)
    scan.state("h", hl, h)
    if op.kind == "LSTM":
        cl = k.scratch("cl", h)
        scan.state("c", cl, h)
    scan.declare_outputs([("Y", h)])
    sig = lambda x: num.act(Act.SIGMOID, x)  # noqa: E731
    tanh = lambda x: num.act(Act.TANH, x)  # noqa: E731

    def mv(cols: int, col0: int, vec: str, init):
        k.matvec(n_in=h, n_out=cols, weight=lambda kk, j: f"Wt[{kk}, {col0} + {j}]",
                 vec=lambda kk: f"{vec}[{kk}]", init=init,
                 store=lambda j, v: [f"{g}[{col0} + {j}] = {v}"])

    def step():
        if op.kind == "RNN":
            mv(h, 0, hl, lambda j: f"P[b, t, {j}]")
            k.vec(h, lambda j: [f"{hl}[{j}] = {num.act(op.act, f'{g}[{j}]')}", f"Y[b, t, {j}] = {hl}[{j}]"])
        elif op.kind == "LSTM":
            mv(4 * h, 0, hl, lambda j: f"P[b, t, {j}]")
            k.vec(h, lambda j: [
                f"{g}[{j}] = {sig(f'{g}[{j}]')}",
                f"{g}[{h} + {j}] = {sig(f'{g}[{h} + {j}]')}",
                f"{g}[{2 * h} + {j}] = {tanh(f'{g}[{2 * h} + {j}]')}",
                f"{g}[{3 * h} + {j}] = {sig(f'{g}[{3 * h} + {j}]')}",
                f"{cl}[{j}] = {g}[{h} + {j}] * {cl}[{j}] + {g}[{j}] * {g}[{2 * h} + {j}]",
                f"{hl}[{j}] = {g}[{3 * h} + {j}] * {tanh(f'{cl}[{j}]')}",
                f"Y[b, t, {j}] = {hl}[{j}]",
            ])
        elif op.reset_after:
            mv(2 * h, 0, hl, lambda j: f"P[b, t, {j}]")
            mv(h, 2 * h, hl, lambda j: f"BHN[{j}]")
            k.vec(h, lambda j: [
                f"{g}[{j}] = {sig(f'{g}[{j}]')}",
                f"{g}[{h} + {j}] = {sig(f'{g}[{h} + {j}]')}",
                f"{g}[{2 * h} + {j}] = P[b, t, {2 * h} + {j}] + {g}[{j}] * {g}[{2 * h} + {j}]",
                f"{g}[{2 * h} + {j}] = {tanh(f'{g}[{2 * h} + {j}]')}",
                f"{hl}[{j}] = ({lit(1.0)} - {g}[{h} + {j}]) * {g}[{2 * h} + {j}] + {g}[{h} + {j}] * {hl}[{j}]",
                f"Y[b, t, {j}] = {hl}[{j}]",
            ])
        else:  # reset_before (Cho et al.): n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
            rh = k.scratch("rh", h)
            mv(2 * h, 0, hl, lambda j: f"P[b, t, {j}]")
            k.vec(h, lambda j: [
                f"{g}[{j}] = {sig(f'{g}[{j}]')}",
                f"{g}[{h} + {j}] = {sig(f'{g}[{h} + {j}]')}",
                f"{rh}[{j}] = {g}[{j}] * {hl}[{j}]",
            ])
            mv(h, 2 * h, rh, lambda j: f"P[b, t, {2 * h} + {j}] + BHN[{j}]")
            k.vec(h, lambda j: [
                f"{g}[{2 * h} + {j}] = {tanh(f'{g}[{2 * h} + {j}]')}",
                f"{hl}[{j}] = ({lit(1.0)} - {g}[{h} + {j}]) * {g}[{2 * h} + {j}] + {g}[{h} + {j}] * {hl}[{j}]",
                f"Y[b, t, {j}] = {hl}[{j}]",
            ])

    scan.run(step)
    sins, souts = scan.state_binding()
    consts_ins = {"P": "tmp:P", **sins}
    return [proj, Call(k, consts=consts, ins=consts_ins, outs={"Y": "out0", **souts})]


# ----------------------------------------------------------------------------------------------
# minimal RNNs: MinGRU, MinLSTM (no recurrent weights: the projection does all the matmuls)


def plan_minrnn(name: str, op, sched: Schedule, num: Numerics) -> list[Call]:
    h = op.hidden_size
    if op.kind == "MinGRU":
        w = np.concatenate([_arr(op, "w_z"), _arr(op, "w_h")])
        b = np.concatenate([_arr(op, "b_z", h), _arr(op, "b_h", h)])
        parts = 2
    else:
        w = np.concatenate([_arr(op, "w_f"), _arr(op, "w_i"), _arr(op, "w_h")])
        b = np.concatenate([_arr(op, "b_f", h), _arr(op, "b_i", h), _arr(op, "b_h", h)])
        parts = 3
    proj = _projection(name, w, b, sched, num)
    k = Kernel(f"{op.kind.lower()}_{op.candidate.value}_scan_h{h}", sched, num)
    k.input("P", ("B", "T", parts * h))
    hl = k.scratch("hl", h)
    g = k.scratch("g", parts * h)
    scan = _Scan(k)
    scan.state("h", hl, h)
    scan.declare_outputs([("Y", h)])
    sig = lambda x: num.act(Act.SIGMOID, x)  # noqa: E731
    cand = lambda x: num.act(op.candidate, x)  # noqa: E731

    def step():
        if op.kind == "MinGRU":
            k.vec(h, lambda j: [
                f"{g}[{j}] = {sig(f'P[b, t, {j}]')}",
                f"{g}[{h} + {j}] = {cand(f'P[b, t, {h} + {j}]')}",
                f"{hl}[{j}] = ({lit(1.0)} - {g}[{j}]) * {hl}[{j}] + {g}[{j}] * {g}[{h} + {j}]",
                f"Y[b, t, {j}] = {hl}[{j}]",
            ])
        else:
            k.vec(h, lambda j: [
                f"{g}[{j}] = {sig(f'P[b, t, {j}]')}",
                f"{g}[{h} + {j}] = {sig(f'P[b, t, {h} + {j}]')}",
                f"{g}[{2 * h} + {j}] = {cand(f'P[b, t, {2 * h} + {j}]')}",
                # s = f + i; h = (f / s) h + (i / s) c
                f"{hl}[{j}] = {g}[{j}] / ({g}[{j}] + {g}[{h} + {j}]) * {hl}[{j}]"
                f" + {g}[{h} + {j}] / ({g}[{j}] + {g}[{h} + {j}]) * {g}[{2 * h} + {j}]",
                f"Y[b, t, {j}] = {hl}[{j}]",
            ])

    scan.run(step)
    sins, souts = scan.state_binding()
    return [proj, Call(k, ins={"P": "tmp:P", **sins}, outs={"Y": "out0", **souts})]


# ----------------------------------------------------------------------------------------------
# LMU


def plan_lmu(name: str, op: O.LMU, sched: Schedule, num: Numerics) -> list[Call]:
    """LMU step on a local state vector s = [m | h]:

        u = P_u + [e_m | e_h] s_prev            (only the parts that exist)
        m = Abar m[d] + Bbar u[d]  per memory dimension, written back into s[:M]
        h = act(P_h + [W_m | W_h] [m_new | h_prev])   (contiguous in s), written into s[M:]
    """
    d, order, m = op.memory_d, op.order, op.memory_size
    hidden = op.has_hidden
    hsz = op.hidden_size if hidden else 0
    h_state = hidden and (op.w_h is not None or op.e_h is not None)
    abar, bbar = op.matrices()

    # hoisted projection: [e_x ; w_x] with bias [b_u ; b_h]
    rows_w = [_arr(op, "e_x")]
    rows_b = [_arr(op, "b_u", d)]
    has_px = hidden and (op.w_x is not None or op.b_h is not None)
    if has_px:
        rows_w.append(_arr(op, "w_x") if op.w_x is not None else np.zeros((hsz, op.input_size)))
        rows_b.append(_arr(op, "b_h", hsz))
    proj = _projection(name, np.concatenate(rows_w), np.concatenate(rows_b), sched, num)
    pw = d + (hsz if has_px else 0)

    # memory-input weights over s_prev
    em = _arr(op, "e_m")
    eh = _arr(op, "e_h")
    if not hidden and eh is not None:  # without a hidden cell, h_prev is m (reference semantics)
        em = eh if em is None else em + eh
        eh = None
    u_lo, u_rows = 0, []
    if em is not None:
        u_rows.append(em.T)
    else:
        u_lo = m
    if eh is not None:
        if em is None:
            u_lo = m
        u_rows.append(eh.T)
    u_w = np.concatenate(u_rows) if u_rows else None

    tag = f"lmu_d{d}_o{order}_h{hsz}" + ("_em" if em is not None else "") + ("_eh" if eh is not None else "") \
        + ("_wh" if op.w_h is not None else "") + ("_px" if has_px else "") + (f"_{op.act.value}" if hidden else "")
    k = Kernel(tag + "_scan", sched, num)
    k.input("P", ("B", "T", pw))
    consts = {}
    if u_w is not None:
        k.input("EUt", u_w.shape)
        consts["EUt"] = f32(u_w)
    k.input("At", (order, order))
    k.input("Bb", (order,))
    consts["At"] = f32(abar.T)
    consts["Bb"] = f32(bbar[:, 0])
    n_hin = 0
    if hidden:
        hw = [_arr(op, "w_m").T] + ([_arr(op, "w_h").T] if op.w_h is not None else [])
        hw = np.concatenate(hw)
        n_hin = hw.shape[0]
        k.input("HWt", hw.shape)
        consts["HWt"] = f32(hw)
    s = k.scratch("s", m + hsz)
    u = k.scratch("u", d)
    mn = k.scratch("mn", m)
    pre = k.scratch("pre", max(hsz, 1))
    scan = _Scan(k)
    scan.state("m", s, m)
    if h_state:
        scan.state("h", s, hsz, offset=m)
    scan.declare_outputs([("Y", hsz if hidden else m)])

    def step():
        if u_w is not None:
            k.matvec(n_in=u_w.shape[0], n_out=d, weight=lambda kk, j: f"EUt[{kk}, {j}]",
                     vec=lambda kk: f"{s}[{u_lo} + {kk}]", init=lambda j: f"P[b, t, {j}]",
                     store=lambda j, v: [f"{u}[{j}] = {v}"])
        else:
            k.vec(d, lambda j: [f"{u}[{j}] = P[b, t, {j}]"])
        with k.loop("dd", d):
            k.matvec(n_in=order, n_out=order, weight=lambda kk, j: f"At[{kk}, {j}]",
                     vec=lambda kk: f"{s}[dd * {order} + {kk}]", init=lambda j: f"Bb[{j}] * {u}[dd]",
                     store=lambda j, v: [f"{mn}[dd * {order} + {j}] = {v}"])
        if hidden:
            k.vec(m, lambda j: [f"{s}[{j}] = {mn}[{j}]"])
            init = (lambda j: f"P[b, t, {d} + {j}]") if has_px else None
            k.matvec(n_in=n_hin, n_out=hsz, weight=lambda kk, j: f"HWt[{kk}, {j}]",
                     vec=lambda kk: f"{s}[{kk}]", init=init,
                     store=lambda j, v: [f"{pre}[{j}] = {v}"])
            k.vec(hsz, lambda j: [f"{s}[{m} + {j}] = {num.act(op.act, f'{pre}[{j}]')}",
                                  f"Y[b, t, {j}] = {s}[{m} + {j}]"])
        else:
            k.vec(m, lambda j: [f"{s}[{j}] = {mn}[{j}]", f"Y[b, t, {j}] = {mn}[{j}]"])

    scan.run(step)
    sins, souts = scan.state_binding()
    return [proj, Call(k, consts=consts, ins={"P": "tmp:P", **sins}, outs={"Y": "out0", **souts})]


# ----------------------------------------------------------------------------------------------
# spiking neurons


def neuron_table(n: O.NeuronParams, size: int) -> np.ndarray:
    """(4, size): clip(beta), threshold, clip(alpha) (0 without synapse), spike_scale (1 if None)."""
    def vec(a, default):
        return _per_neuron(np.full(size, default) if a is None else a, size)

    return f32(np.stack([np.clip(vec(n.beta, 0.0), 0.0, 1.0), vec(n.threshold, 0.0),
                         np.clip(vec(n.alpha, 0.0), 0.0, 1.0), vec(n.spike_scale, 1.0)]))


def _per_neuron(a, size: int) -> np.ndarray:
    """A scalar or per-neuron parameter as a (size,) float64 vector."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    return np.broadcast_to(a, (size,)).copy() if a.size == 1 else a


def neuron_step(k: Kernel, nrn: O.NeuronParams, size: int, table: str, cur: Callable[[str], str],
                mem: str, syn: str | None, spk: str, tag: str) -> None:
    """Vectorised update of a LIF / CuBa-LIF population (NeuronParams semantics): reads the
    current ``cur(j)``, updates ``mem`` (and ``syn``) in place, writes spikes to ``spk``."""
    rst, fire = k.scratch(f"rst_{tag}", size), k.scratch(f"fire_{tag}", size)
    zero, one = lit(0.0), lit(1.0)

    def body(j):
        beta, thr, alpha, scale = (f"{table}[{r}, {j}]" for r in range(4))
        out = [f"{rst}[{j}] = T.Select({mem}[{j}] - {thr} > {zero}, {one}, {zero})"]
        if nrn.synaptic:
            out.append(f"{syn}[{j}] = {alpha} * {syn}[{j}] + {cur(j)}")
            drive = f"{syn}[{j}]"
        else:
            drive = cur(j)
        rule = nrn.reset
        if rule is ResetRule.SUBTRACT:
            out.append(f"{mem}[{j}] = {beta} * {mem}[{j}] + {drive} - {rst}[{j}] * {thr}")
        elif rule is ResetRule.ZERO:
            out.append(f"{mem}[{j}] = {beta} * (({one} - {rst}[{j}]) * {mem}[{j}]) + {drive}")
        elif rule is ResetRule.ZERO_TOTAL:
            out.append(f"{mem}[{j}] = {beta} * {mem}[{j}] + {drive}")
            out.append(f"{mem}[{j}] = {mem}[{j}] - {rst}[{j}] * {mem}[{j}]")
        else:
            out.append(f"{mem}[{j}] = {beta} * {mem}[{j}] + {drive}")
        out.append(f"{fire}[{j}] = T.Select({mem}[{j}] - {thr} > {zero}, {one}, {zero})")
        out.append(f"{spk}[{j}] = {fire}[{j}] * {scale}" if nrn.spike_scale is not None else f"{spk}[{j}] = {fire}[{j}]")
        if not nrn.reset_delay and rule is not ResetRule.NONE:
            if rule is ResetRule.SUBTRACT:
                out.append(f"{mem}[{j}] = {mem}[{j}] - ({fire}[{j}] - {rst}[{j}]) * {thr}")
            else:
                out.append(f"{mem}[{j}] = {mem}[{j}] - ({fire}[{j}] - {rst}[{j}]) * {mem}[{j}]")
        return out

    k.vec(size, body)


def _neuron_tag(n: O.NeuronParams) -> str:
    return ("cuba" if n.synaptic else "lif") + f"_{n.reset.value}" + ("_d" if n.reset_delay else "_i") \
        + ("_s" if n.spike_scale is not None else "")


def _neuron_states(scan: _Scan, k: Kernel, nrn: O.NeuronParams, size: int, prefix: str):
    mem = k.scratch(f"{prefix}mem", size)
    syn = k.scratch(f"{prefix}syn", size) if nrn.synaptic else None
    for name in nrn.state_names():
        scan.state(prefix + name, syn if name == "syn" else mem, size)
    return mem, syn


def plan_lif(name: str, op, sched: Schedule, num: Numerics, n: int) -> list[Call]:
    """LIF / CuBaLIF layer: the input value is the synaptic current; optional recurrence on the
    previous step's spikes (one-to-one: V * S, all-to-all: W S + b, a matvec over the spikes)."""
    rec = op.recurrence
    k = Kernel(f"{_neuron_tag(op.neuron)}_{rec.value}_{op.emit}_n{n}_scan", sched, num)
    k.input("X", ("B", "T", n))
    k.input("NP", (4, n))
    consts = {"NP": neuron_table(op.neuron, n)}
    if rec is Recurrence.ONE_TO_ONE:
        k.input("VREC", (n,))
        consts["VREC"] = f32(_per_neuron(op.v_rec, n))
    elif rec is Recurrence.ALL_TO_ALL:
        k.input("WRt", (n, n))
        k.input("BREC", (n,))
        consts["WRt"] = f32(np.asarray(op.w_rec).T)
        consts["BREC"] = f32(_arr(op, "b_rec", n))
    scan = _Scan(k)
    mem, syn = _neuron_states(scan, k, op.neuron, n, "")
    spk = k.scratch("spk", n)
    cur = k.scratch("cur", n)
    if rec is not Recurrence.NONE:
        scan.state("spk", spk, n)
    outs = {"spikes": [("YS", n)], "membrane": [("YM", n)], "both": [("YS", n), ("YM", n)]}[op.emit]
    scan.declare_outputs(outs)

    def step():
        if rec is Recurrence.ALL_TO_ALL:
            k.matvec(n_in=n, n_out=n, weight=lambda kk, j: f"WRt[{kk}, {j}]", vec=lambda kk: f"{spk}[{kk}]",
                     init=lambda j: f"X[b, t, {j}] + BREC[{j}]", store=lambda j, v: [f"{cur}[{j}] = {v}"])
            current = lambda j: f"{cur}[{j}]"  # noqa: E731
        elif rec is Recurrence.ONE_TO_ONE:
            current = lambda j: f"(X[b, t, {j}] + VREC[{j}] * {spk}[{j}])"  # noqa: E731
        else:
            current = lambda j: f"X[b, t, {j}]"  # noqa: E731
        neuron_step(k, op.neuron, n, "NP", current, mem, syn, spk, "n")
        stores = []
        for oname, _ in outs:
            stores.append((oname, spk if oname == "YS" else mem))
        k.vec(n, lambda j: [f"{o}[b, t, {j}] = {src}[{j}]" for o, src in stores])

    scan.run(step)
    sins, souts = scan.state_binding()
    out_map = {oname: f"out{i}" for i, (oname, _) in enumerate(outs)}
    return [Call(k, consts=consts, ins={"X": "in0", **sins}, outs={**out_map, **souts})]


def plan_l2mu(name: str, op: O.L2MU, sched: Schedule, num: Numerics) -> list[Call]:
    """L2MU step on the spike vector s = [s_m | s_h] (see the op's equations):

        I_u = P_u + [e_m | e_h] s_prev;            s_u = LIF_u(I_u)
        I_m = a s_m_prev[d] + b s_u[d];            s_m = LIF_m(I_m), written into s[:M]
        I_h = P_h + [W_m | W_h] [s_m_new | s_h_prev]; s_h = LIF_h(I_h), written into s[M:]
    """
    d, order, m, h = op.memory_d, op.order, op.memory_size, op.hidden_size
    proj = _projection(name, np.concatenate([_arr(op, "e_x"), _arr(op, "w_x") if op.w_x is not None
                                             else np.zeros((h, op.input_size))]),
                       np.concatenate([_arr(op, "b_u", d), _arr(op, "b_h", h)]), sched, num)
    em, eh = _arr(op, "e_m"), _arr(op, "e_h")
    u_rows, u_lo = [], 0
    if em is not None:
        u_rows.append(em.T)
    else:
        u_lo = m
    if eh is not None:
        u_rows.append(eh.T)
    u_w = np.concatenate(u_rows) if u_rows else None
    hw = np.concatenate([_arr(op, "w_m").T] + ([_arr(op, "w_h").T] if op.w_h is not None else []))
    tag = "_".join(_neuron_tag(x) for x in (op.u_neuron, op.m_neuron, op.h_neuron))
    k = Kernel(f"l2mu_d{d}_o{order}_h{h}_{int(em is not None)}{int(eh is not None)}{int(op.w_h is not None)}"
               f"_{tag}_scan", sched, num)
    k.input("P", ("B", "T", d + h))
    consts = {}
    if u_w is not None:
        k.input("EUt", u_w.shape)
        consts["EUt"] = f32(u_w)
    k.input("At", (order, order))
    k.input("Bv", (order,))
    k.input("HWt", hw.shape)
    for pop, nrn, size in (("U", op.u_neuron, d), ("M", op.m_neuron, m), ("H", op.h_neuron, h)):
        k.input(f"NP{pop}", (4, size))
        consts[f"NP{pop}"] = neuron_table(nrn, size)
    consts.update(At=f32(np.asarray(op.a).T), Bv=f32(op.b), HWt=f32(hw))
    s = k.scratch("s", m + h)
    cu, cm, ch = k.scratch("cu", d), k.scratch("cm", m), k.scratch("ch", h)
    su, smn, shn = k.scratch("su", d), k.scratch("smn", m), k.scratch("shn", h)
    scan = _Scan(k)
    pops = {}
    for pop, nrn, size in (("u", op.u_neuron, d), ("m", op.m_neuron, m), ("h", op.h_neuron, h)):
        pops[pop] = _neuron_states(scan, k, nrn, size, f"{pop}_")
    scan.state("s_m", s, m)
    scan.state("s_h", s, h, offset=m)
    scan.declare_outputs([("Y", h)])

    def step():
        if u_w is not None:
            k.matvec(n_in=u_w.shape[0], n_out=d, weight=lambda kk, j: f"EUt[{kk}, {j}]",
                     vec=lambda kk: f"{s}[{u_lo} + {kk}]", init=lambda j: f"P[b, t, {j}]",
                     store=lambda j, v: [f"{cu}[{j}] = {v}"])
        else:
            k.vec(d, lambda j: [f"{cu}[{j}] = P[b, t, {j}]"])
        neuron_step(k, op.u_neuron, d, "NPU", lambda j: f"{cu}[{j}]", *pops["u"], su, "u")
        with k.loop("dd", d):
            k.matvec(n_in=order, n_out=order, weight=lambda kk, j: f"At[{kk}, {j}]",
                     vec=lambda kk: f"{s}[dd * {order} + {kk}]", init=lambda j: f"Bv[{j}] * {su}[dd]",
                     store=lambda j, v: [f"{cm}[dd * {order} + {j}] = {v}"])
        neuron_step(k, op.m_neuron, m, "NPM", lambda j: f"{cm}[{j}]", *pops["m"], smn, "m")
        k.vec(m, lambda j: [f"{s}[{j}] = {smn}[{j}]"])
        k.matvec(n_in=hw.shape[0], n_out=h, weight=lambda kk, j: f"HWt[{kk}, {j}]",
                 vec=lambda kk: f"{s}[{kk}]", init=lambda j: f"P[b, t, {d} + {j}]",
                 store=lambda j, v: [f"{ch}[{j}] = {v}"])
        neuron_step(k, op.h_neuron, h, "NPH", lambda j: f"{ch}[{j}]", *pops["h"], shn, "h")
        k.vec(h, lambda j: [f"{s}[{m} + {j}] = {shn}[{j}]", f"Y[b, t, {j}] = {shn}[{j}]"])

    scan.run(step)
    sins, souts = scan.state_binding()
    return [proj, Call(k, consts=consts, ins={"P": "tmp:P", **sins}, outs={"Y": "out0", **souts})]
