"""snntorch frontend.

snntorch networks are step functions: the documented ``nn.Sequential`` form uses neurons with
``init_hidden=True`` and is called once per time step. :func:`capture_step_net` turns such a
network into a sequence graph; :func:`run_step_net` runs it over a batch-first sequence the way
snntorch users do (reset the hidden states, then call once per step).

snntorch's reset variants are normalised into explicit IR reset rules: Leaky 'zero' zeroes the
previous membrane before integrating (ResetRule.ZERO); RLeaky, Synaptic and RSynaptic zero the
integrated total (ResetRule.ZERO_TOTAL).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UnsupportedModuleError
from ..ir import ops as O
from ..ir.types import Recurrence, ResetRule
from .modules import CONVERTERS, Ctx, np_
from .values import Val

NEURONS = ("Leaky", "RLeaky", "Synaptic", "RSynaptic")


def is_snntorch(m: nn.Module) -> bool:
    return type(m).__module__.startswith("snntorch")


def contains_snntorch(m: nn.Module) -> bool:
    return any(is_snntorch(x) for x in m.modules())


def neuron_op(m: nn.Module, path: str) -> O.Op:
    """IR op for one snntorch neuron layer (semantics per snntorch 1.0)."""
    kind = type(m).__name__
    if kind not in NEURONS:
        raise UnsupportedModuleError(
            f"snntorch.{kind} is not supported", where=path, hint=f"supported snntorch neurons: {', '.join(NEURONS)}"
        )
    if getattr(m, "inhibition", False):
        raise UnsupportedModuleError("lateral inhibition is not supported", where=path)
    if getattr(m, "state_quant", False):
        raise UnsupportedModuleError("state_quant is not supported; quantize with edgeseq.quantize instead", where=path)
    mech = m.reset_mechanism
    if mech == "zero":
        reset = ResetRule.ZERO if kind == "Leaky" else ResetRule.ZERO_TOTAL
    else:
        reset = ResetRule(mech)
    delay = bool(getattr(m, "reset_delay", True))
    if kind == "RSynaptic" and not delay:
        raise UnsupportedModuleError(
            "snntorch 1.0's RSynaptic cannot run with reset_delay=False (it reads the unset spike argument)",
            where=path,
            hint="use reset_delay=True",
        )
    gsf = np_(getattr(m, "graded_spikes_factor", None))
    scale = None if gsf is None or (gsf.size == 1 and float(gsf.reshape(-1)[0]) == 1.0) else gsf
    neuron = O.NeuronParams(
        beta=np_(m.beta),
        threshold=np_(m.threshold),
        alpha=np_(m.alpha) if kind in ("Synaptic", "RSynaptic") else None,
        reset=reset,
        reset_delay=delay,
        spike_scale=scale,
    )
    rec: dict = {}
    if kind in ("RLeaky", "RSynaptic"):
        if m.all_to_all:
            if not isinstance(getattr(m, "recurrent", None), nn.Linear):
                raise UnsupportedModuleError("convolutional recurrence is not supported", where=path)
            rec = dict(recurrence=Recurrence.ALL_TO_ALL, w_rec=np_(m.recurrent.weight), b_rec=np_(m.recurrent.bias))
        else:
            rec = dict(recurrence=Recurrence.ONE_TO_ONE, v_rec=np_(m.V))
    emit = "spikes"
    if getattr(m, "output", False):
        emit = "all" if kind in ("Synaptic", "RSynaptic") else "both"
    cls = O.CuBaLIF if neuron.synaptic else O.LIF
    return cls(neuron=neuron, emit=emit, **rec)


def capture_step_net(net: nn.Sequential, ctx: Ctx, x: Val) -> list[Val]:
    """Add the nodes of an snntorch step network; returns the symbolic outputs."""
    cur = x
    items = list(net.named_children())
    for idx, (name, m) in enumerate(items):
        path = name
        if is_snntorch(m):
            if not getattr(m, "init_hidden", False):
                raise UnsupportedModuleError("snntorch neurons in nn.Sequential need init_hidden=True", where=path)
            op = neuron_op(m, path)
            outs = ctx.add(op, cur, path)
            if op.emit in ("both", "all"):
                if idx != len(items) - 1:
                    raise UnsupportedModuleError("a neuron with output=True must be the last layer", where=path)
                return [Val(o, "BTF") for o in outs]
            cur = Val(outs, "BTF")
            continue
        if isinstance(m, nn.Flatten):
            continue  # a step network sees one (B, F) step at a time: flattening it changes nothing
        conv = CONVERTERS.get(type(m))
        if conv is None or type(m) in (nn.RNN, nn.GRU, nn.LSTM, nn.Conv1d, nn.BatchNorm1d):
            raise UnsupportedModuleError(
                f"{type(m).__module__}.{type(m).__name__} is not supported inside an snntorch step network",
                where=path,
                hint="step networks may hold Linear, LayerNorm, activations, Dropout and "
                "snntorch Leaky/RLeaky/Synaptic/RSynaptic",
            )
        cur = conv(ctx, m, path, cur)
    return [cur]


def reset_step_net(net: nn.Module) -> None:
    for m in net.modules():
        if is_snntorch(m) and hasattr(m, "reset_mem"):
            m.reset_mem()


@torch.no_grad()
def run_step_net(net: nn.Module, x: torch.Tensor):
    """Run an snntorch step network over (B, T, F): reset hidden state, then one call per step.
    Returns the stacked output (B, T, ...) or a tuple of them when the network returns several."""
    reset_step_net(net)
    outs = []
    for t in range(x.shape[1]):
        outs.append(net(x[:, t]))
    if isinstance(outs[0], tuple):
        return tuple(torch.stack([o[k] for o in outs], dim=1) for k in range(len(outs[0])))
    return torch.stack(outs, dim=1)
