"""LeakyNeuron populations (NIR's LI / CubaLI / I / IF / LIF / CubaLIF, discretised) as step programs.

:func:`population` writes one population into any :class:`StepBuilder` (a LeakyNeuron's own
program, or a recurrent cycle of NIR nodes that holds several populations, see
:mod:`edgeseq.frontends.nir`). Currents and partial membrane terms are quantized at the membrane's
(or the synaptic current's) scale, CUR_BITS wide, as in :mod:`.spiking`.
"""

from __future__ import annotations

from typing import Optional

from .. import ops as O
from ..step import SPIKES, STATE, StepBuilder, StepProgram, share
from ..types import ResetRule
from . import lowering
from .spiking import CUR_BITS


def _scaled(b: StepBuilder, op: O.LeakyNeuron, field: str, prefix: str, x: str) -> str:
    value = getattr(op, field)
    return x if value is None else b.mul(b.param(prefix + field, value), x)


def population(
    b: StepBuilder, op: O.LeakyNeuron, current: str, syn: str, mem: str, prefix: str = "", pop: str = ""
) -> tuple[Optional[str], str, dict]:
    """One step of the population: (spikes or None, new membrane, next-state map). ``syn`` / ``mem``
    name its states in ``b``; ``prefix`` its parameters, ``pop`` its quantization points."""
    nxt: dict[str, str] = {}
    drive = current
    if op.synaptic:
        cur = b.quant(pop + "cur", _scaled(b, op, "syn_gain", prefix, current), share(syn, bits=CUR_BITS))
        a_s = b.quant(pop + "as", b.mul(b.param(prefix + "syn_decay", op.syn_decay), syn), share(syn, bits=CUR_BITS))
        drive = nxt[syn] = b.quant_state(syn, b.add(a_s, cur), STATE)
    g = b.quant(pop + "drive", _scaled(b, op, "gain", prefix, drive), share(mem, bits=CUR_BITS))
    dm = b.quant(pop + "dm", b.mul(b.param(prefix + "decay", op.decay), mem), share(mem, bits=CUR_BITS))
    u = b.add(dm, g)
    if op.bias is not None:
        u = b.add(u, b.param(prefix + "bias", op.bias))
    u = b.quant_state(mem, u, STATE)
    if not op.spiking:
        nxt[mem] = u
        return None, u, nxt
    thr = b.param(prefix + "threshold", op.threshold)
    fired = b.gt(u, thr)
    if op.reset is ResetRule.ZERO:
        reset_to = b.const(0.0) if op.v_reset is None else b.param(prefix + "v_reset", op.v_reset)
        u = b.quant_state(mem, b.select(fired, reset_to, u), STATE)
    elif op.reset is ResetRule.SUBTRACT:
        u = b.quant_state(mem, b.sub(u, b.mul(fired, thr)), STATE)
    nxt[mem] = u
    return fired, u, nxt


@lowering(O.LeakyNeuron)
def leaky(op: O.LeakyNeuron, n_in: int) -> StepProgram:
    b = StepBuilder(
        f"LeakyNeuron.{'syn.' if op.synaptic else ''}{op.reset.value if op.spiking else 'li'}.{op.emit}", {"x": n_in}
    )
    if op.synaptic:
        b.state("syn", n_in)
    b.state("mem", n_in)
    spk, mem, nxt = population(b, op, "x", "syn", "mem")
    assert spk is not None or op.emit == "membrane"  # an integrator (no threshold) emits its membrane only
    outs = {
        "spikes": lambda: [b.quant_output(0, str(spk), SPIKES)],
        "membrane": lambda: [mem],
        "both": lambda: [b.quant_output(0, str(spk), SPIKES), mem],
    }[op.emit]()
    return b.build(outs, nxt)
