"""Every named cell in each of its structural variants, with random weights: shared by the tests of
the step-program lowerings and of the backends that render them."""

from __future__ import annotations

import numpy as np

from edgeseq.ir import GraphBuilder
from edgeseq.ir import ops as O

I = 5  # noqa: E741 - input features of every case


def _w(rng, o, i, s=0.6):
    return rng.standard_normal((o, i)) * s / np.sqrt(i)


def _b(rng, n, s=0.2):
    return rng.standard_normal(n) * s


def _neuron(rng, n, synaptic=False, reset="subtract", delay=True, scale=False, vec=True):
    beta = rng.uniform(0.6, 0.95, n) if vec else 0.9
    return O.NeuronParams(
        beta=beta,
        threshold=rng.uniform(0.4, 1.0, n) if vec else 0.7,
        alpha=(rng.uniform(0.5, 0.9, n) if vec else 0.8) if synaptic else None,
        reset=reset,
        reset_delay=delay,
        spike_scale=rng.uniform(0.5, 1.5, n) if scale else None,
    )


def _gated(rng, cls, gates, h=7, bias=True, **kw):
    return cls(
        w_ih=_w(rng, gates * h, I),
        w_hh=_w(rng, gates * h, h),
        b_ih=_b(rng, gates * h) if bias else None,
        b_hh=_b(rng, gates * h) if bias else None,
        **kw,
    )


def _lmu(rng, h=6, d=2, order=4, **opt):
    m = d * order
    kw = dict(e_x=_w(rng, d, I), order=order, theta=7.0, w_m=_w(rng, h, m), b_h=_b(rng, h))
    if opt.get("full"):
        kw.update(
            e_h=_w(rng, d, h),
            e_m=_w(rng, d, m),
            b_u=_b(rng, d),
            w_x=_w(rng, h, I),
            w_h=_w(rng, h, h),
            discretizer="euler",
        )
    if opt.get("no_hidden"):
        kw = dict(e_x=_w(rng, d, I), order=order, theta=7.0, e_m=_w(rng, d, m))
    if opt.get("act"):
        kw["act"] = opt["act"]
    return O.LMU(**kw)


def _l2mu(rng, h=6, d=2, order=4, synaptic=False):
    from edgeseq.ir.legendre import lmu_matrices

    a, b = lmu_matrices(order, 6.0, "zoh")
    m = d * order
    return O.L2MU(
        a=a,
        b=np.ravel(b),
        e_x=_w(rng, d, I, 2.0),
        w_m=_w(rng, h, m, 2.0),
        e_h=_w(rng, d, h),
        w_h=_w(rng, h, h),
        b_h=_b(rng, h),
        b_u=_b(rng, d),
        u_neuron=_neuron(rng, d, synaptic),
        m_neuron=_neuron(rng, m, synaptic, reset="zero"),
        h_neuron=_neuron(rng, h, synaptic, reset="zero_total", scale=True),
    )


def _s4d(rng, cplx: bool, n=4):
    kw = dict(
        log_dt=rng.uniform(np.log(0.01), np.log(0.5), I),
        a_re=-rng.uniform(0.2, 1.0, (I, n)),
        b_re=rng.normal(size=(I, n)),
        c_re=rng.normal(size=(I, n)) * 0.5,
    )
    if cplx:
        kw.update(
            a_im=np.pi * np.arange(n) * np.ones((I, 1)),
            b_im=rng.normal(size=(I, n)) * 0.3,
            c_im=rng.normal(size=(I, n)) * 0.5,
            d=rng.normal(size=I),
        )
    return O.S4D(**kw)


def cases():
    """name -> op factory (rng -> op)."""
    c = {
        "rnn_tanh": lambda r: _gated(r, O.RNN, 1),
        "rnn_relu_nobias": lambda r: _gated(r, O.RNN, 1, bias=False, act="relu"),
        "gru": lambda r: _gated(r, O.GRU, 3),
        "gru_reset_before": lambda r: _gated(r, O.GRU, 3, reset_after=False),
        "gru_nobias": lambda r: _gated(r, O.GRU, 3, bias=False),
        "lstm": lambda r: _gated(r, O.LSTM, 4),
        "mingru": lambda r: O.MinGRU(w_z=_w(r, 6, I), w_h=_w(r, 6, I), b_z=_b(r, 6), b_h=_b(r, 6)),
        "mingru_identity": lambda r: O.MinGRU(w_z=_w(r, 6, I), w_h=_w(r, 6, I), candidate="identity"),
        "minlstm": lambda r: O.MinLSTM(
            w_f=_w(r, 6, I), w_i=_w(r, 6, I), w_h=_w(r, 6, I), b_f=_b(r, 6), b_i=_b(r, 6), b_h=_b(r, 6)
        ),
        "lmu": lambda r: _lmu(r),
        "lmu_full": lambda r: _lmu(r, full=True),
        "lmu_no_hidden": lambda r: _lmu(r, no_hidden=True),
        "lmu_relu": lambda r: _lmu(r, act="relu"),
        "s4d": lambda r: _s4d(r, True),
        "s4d_real_noskip": lambda r: _s4d(r, False),
        "attention_pool": lambda r: O.AttentionPool(values=I - 1),
        "embedding": lambda r: O.Embedding(table=r.normal(size=(7, 4))),
        "l2mu": lambda r: _l2mu(r),
        "l2mu_syn": lambda r: _l2mu(r, synaptic=True),
    }
    for reset in ("subtract", "zero", "zero_total", "none"):
        for delay in (True, False):
            c[f"lif_{reset}{'' if delay else '_now'}"] = lambda r, reset=reset, delay=delay: O.LIF(
                neuron=_neuron(r, I, reset=reset, delay=delay)
            )
    c["lif_scalar_both"] = lambda r: O.LIF(neuron=_neuron(r, I, vec=False), emit="both")
    c["lif_membrane_scaled"] = lambda r: O.LIF(neuron=_neuron(r, I, scale=True), emit="membrane")
    c["lif_one_to_one"] = lambda r: O.LIF(
        neuron=_neuron(r, I, reset="zero"), recurrence="one_to_one", v_rec=r.normal(size=I)
    )
    c["lif_all_to_all"] = lambda r: O.LIF(
        neuron=_neuron(r, I), recurrence="all_to_all", w_rec=_w(r, I, I), b_rec=_b(r, I)
    )
    c["cubalif"] = lambda r: O.CuBaLIF(neuron=_neuron(r, I, synaptic=True))
    c["cubalif_all"] = lambda r: O.CuBaLIF(
        neuron=_neuron(r, I, synaptic=True), emit="all", recurrence="one_to_one", v_rec=r.normal(size=I)
    )
    c["cubalif_rec_now"] = lambda r: O.CuBaLIF(
        neuron=_neuron(r, I, synaptic=True, reset="zero_total", delay=False, scale=True),
        recurrence="one_to_one",
        v_rec=r.normal(size=I),
    )

    def leaky(r, synaptic=False, **kw):  # NIR neurons once discretised (edgeseq.frontends.nir)
        kw.setdefault("threshold", r.uniform(0.4, 1.0, I))
        return O.LeakyNeuron(
            decay=r.uniform(0.6, 0.99, I),
            gain=r.uniform(0.2, 1.5, I),
            bias=r.normal(size=I) * 0.1,
            syn_decay=r.uniform(0.5, 0.9, I) if synaptic else None,
            syn_gain=r.uniform(0.3, 1.2, I) if synaptic else None,
            **kw,
        )

    c["leaky_lif_reset_value"] = lambda r: leaky(r, v_reset=r.normal(size=I) * 0.2)
    c["leaky_lif_subtract_both"] = lambda r: leaky(r, reset="subtract", emit="both")
    c["leaky_cubalif"] = lambda r: leaky(r, synaptic=True)
    c["leaky_if_scalar"] = lambda r: O.LeakyNeuron(decay=1.0, threshold=0.8)
    c["leaky_li"] = lambda r: leaky(r, threshold=None, emit="membrane")
    c["leaky_cubali"] = lambda r: leaky(r, synaptic=True, threshold=None, emit="membrane", reset="none")
    return c


CASES = cases()


def graph_of(name: str, seed: int = 0):
    """A graph x -> [Linear (spiking cells get a driving current)] -> cell -> outputs."""
    rng = np.random.default_rng(seed)
    op = CASES[name](rng)
    b = GraphBuilder(in_features(name))
    outs = b.add(op, "x", "cell")
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    return b.build(outs)


def in_features(name: str) -> int:
    return 1 if name == "embedding" else I


def drive(name: str, rng, batch: int, steps: int):
    """Inputs that make spiking cells fire (ids, some outside the table, for an embedding)."""
    if name == "embedding":
        return rng.integers(-2, 10, size=(batch, steps, 1)).astype(np.float64)
    scale = 2.0 if name.startswith(("lif", "cubalif", "l2mu", "leaky")) else 1.0
    return rng.standard_normal((batch, steps, I)) * scale + (0.3 if scale > 1 else 0.0)
