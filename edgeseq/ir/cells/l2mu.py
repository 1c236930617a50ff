"""L2MU: the LMU with populations of LIF neurons as memory input, memory and hidden state."""

from __future__ import annotations

from .. import ops as O
from ..step import SPIKES, StepBuilder, StepProgram, WeightKind
from . import lowering
from .spiking import amplitude, declare_neuron, neuron


@lowering(O.L2MU)
def l2mu(op: O.L2MU, n_in: int) -> StepProgram:
    d, order, H, M = op.memory_d, op.order, op.hidden_size, op.memory_size
    pops = (("u_", op.u_neuron, d), ("m_", op.m_neuron, M), ("h_", op.h_neuron, H))
    b = StepBuilder(
        "L2MU." + ".".join(f"{p}{n.reset.value}{'' if n.reset_delay else '.now'}" for p, n, _ in pops), {"x": n_in}
    )
    for pop, n, size in pops:
        declare_neuron(b, n, size, f"{pop}syn", f"{pop}mem")
    b.state("s_m", M, SPIKES, amplitude(b, op.m_neuron, "m_neuron."))
    b.state("s_h", H, SPIKES, amplitude(b, op.h_neuron, "h_neuron."))

    def w(name, kind=None):
        a = getattr(op, name)
        return None if a is None else b.param(name, a, name)

    def bias(name):
        a = getattr(op, name)
        return None if a is None else b.param(name, a)

    terms = [(w("e_x"), "x")]
    if op.e_h is not None:
        terms.append((w("e_h"), "s_h"))
    if op.e_m is not None:
        terms.append((w("e_m"), "s_m"))
    nxt: dict = {}
    s_u, _, st = neuron(b, op.u_neuron, "u_neuron.", b.affine(terms, bias("b_u")), "u_syn", "u_mem", "u_")
    nxt.update(st)
    a = b.param("a", op.a, "a", WeightKind.MEMORY)
    bb = b.param("b", op.b.reshape(order, 1), "b", WeightKind.MEMORY)
    s_m, _, st = neuron(b, op.m_neuron, "m_neuron.", b.affine([(a, "s_m", d), (bb, s_u, d)]), "m_syn", "m_mem", "m_")
    nxt.update(st)
    terms = [(w("w_m"), s_m)]
    if op.w_x is not None:
        terms.append((w("w_x"), "x"))
    if op.w_h is not None:
        terms.append((w("w_h"), "s_h"))
    s_h, _, st = neuron(b, op.h_neuron, "h_neuron.", b.affine(terms, bias("b_h")), "h_syn", "h_mem", "h_")
    nxt.update(st)
    nxt["s_m"], nxt["s_h"] = s_m, s_h
    return b.build([b.quant_output(0, s_h, SPIKES)], nxt)
