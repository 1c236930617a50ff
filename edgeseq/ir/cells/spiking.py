"""LIF / CuBa-LIF populations (snntorch Leaky / RLeaky / Synaptic / RSynaptic) as step programs."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .. import ops as O
from ..step import SPIKES, STATE, StepBuilder, StepProgram, share
from ..types import Recurrence, ResetRule
from . import lowering

CUR_BITS = 24  # width of currents / partial membrane terms at the membrane scale


def declare_neuron(b: StepBuilder, n: O.NeuronParams, size: int, syn: str, mem: str) -> None:
    """The states of a population, in NeuronParams.state_names() order."""
    for s in n.state_names():
        b.state(syn if s == "syn" else mem, size)


def amplitude(b: StepBuilder, n: O.NeuronParams, prefix: str) -> Optional[str]:
    return None if n.spike_scale is None else b.param(prefix + "spike_scale", n.spike_scale)


def neuron(
    b: StepBuilder, n: O.NeuronParams, prefix: str, current: str, syn: str, mem: str, pop: str = ""
) -> tuple[str, str, dict]:
    """One population step (see NeuronParams): (spikes, new membrane, next-state map).

    R = H(mem - threshold) of the previous membrane; currents and partial membrane terms are
    quantized at the membrane's (or the synaptic current's) scale, CUR_BITS wide."""
    beta = b.param(prefix + "beta", np.clip(np.asarray(n.beta, np.float64), 0.0, 1.0))
    thr = b.param(prefix + "threshold", n.threshold)
    reset = b.gt(mem, thr)
    nxt = {}
    if n.synaptic:
        alpha = b.param(prefix + "alpha", np.clip(np.asarray(n.alpha, np.float64), 0.0, 1.0))
        cur = b.quant(pop + "cur", current, share(syn, bits=CUR_BITS))
        a_s = b.quant(pop + "as", b.mul(alpha, syn), share(syn, bits=CUR_BITS))
        nxt[syn] = b.quant_state(syn, b.add(a_s, cur), STATE)
        drive = b.quant(pop + "drive", nxt[syn], share(mem, bits=CUR_BITS))
    else:
        drive = b.quant(pop + "cur", current, share(mem, bits=CUR_BITS))
    src = b.select(reset, b.const(0.0), mem) if n.reset is ResetRule.ZERO else mem
    bm = b.quant(pop + "bm", b.mul(beta, src), share(mem, bits=CUR_BITS))
    u = b.add(bm, drive)
    if n.reset is ResetRule.SUBTRACT:
        u = b.sub(u, b.mul(reset, thr))
    elif n.reset is ResetRule.ZERO_TOTAL:
        u = b.select(reset, b.const(0.0), u)
    u = b.quant_state(mem, u, STATE)
    fired = b.gt(u, thr)
    if not n.reset_delay and n.reset is not ResetRule.NONE:
        corr = b.mul(b.sub(fired, reset), thr if n.reset is ResetRule.SUBTRACT else u)
        u = b.quant_state(mem, b.sub(u, corr), STATE)
    nxt[mem] = u
    amp = amplitude(b, n, prefix)
    spk = fired if amp is None else b.mul(fired, amp)
    return spk, u, nxt


def _variant(n: O.NeuronParams) -> str:
    return f"{n.reset.value}{'' if n.reset_delay else '.now'}"


@lowering(O.LIF, O.CuBaLIF)
def lif(op, n_in: int) -> StepProgram:
    n = op.neuron
    b = StepBuilder(f"{op.kind}.{_variant(n)}.{op.recurrence.value}.{op.emit}", {"x": n_in})
    declare_neuron(b, n, n_in, "syn", "mem")
    current = "x"
    if op.recurrence is not Recurrence.NONE:
        b.state("spk", n_in, SPIKES, amplitude(b, n, "neuron."))
        if op.recurrence is Recurrence.ONE_TO_ONE:
            current = b.add("x", b.mul(b.param("v_rec", op.v_rec), "spk"))
        else:
            bias = None if op.b_rec is None else b.param("b_rec", op.b_rec)
            current = b.add("x", b.affine([(b.param("w_rec", op.w_rec, "w_rec"), "spk")], bias))
    spk, mem, nxt = neuron(b, n, "neuron.", current, "syn", "mem")
    if op.recurrence is not Recurrence.NONE:
        nxt["spk"] = spk
    outs = {
        "spikes": lambda: [b.quant_output(0, spk, SPIKES)],
        "membrane": lambda: [mem],
        "both": lambda: [b.quant_output(0, spk, SPIKES), mem],
        "all": lambda: [b.quant_output(0, spk, SPIKES), nxt["syn"], mem],
    }[op.emit]()
    return b.build(outs, nxt)
