"""Continuous-time leaky integrators (NIR's neuron nodes) <-> per-step LeakyNeuron coefficients.

A NIR neuron is a differential equation; a LeakyNeuron is one step of it. The step ``dt`` and the
method turn one into the other, and this module is the one place that does it, both ways:

    membrane  tau dv/dt = (v_leak - v) + r I        (I, IF: dv/dt = r I)
    synapse   tau_syn dI/dt = -I + w_in x

    EULER (forward Euler):          a = dt/tau         decay = 1 - a        gain = a r    bias = a v_leak
    EXACT (input held over a step): decay = exp(-dt/tau), a = 1 - decay    gain = a r    bias = a v_leak
    integrators (no tau):           decay = 1                              gain = dt r

and the same for the synapse (syn_decay, syn_gain = a_syn w_in). EXACT is the exact solution of the
membrane equation for an input that is constant over each step (zero-order hold); for a synaptic
neuron each stage is solved that way in turn (the synaptic current is held over the step).
"""

from __future__ import annotations

import enum
from typing import Optional

import numpy as np

from ..errors import ConfigError


class Discretization(str, enum.Enum):
    EULER = "euler"
    EXACT = "exact"


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def leak_coefficients(tau, dt: float, method: Discretization) -> tuple[np.ndarray, np.ndarray]:
    """(decay, a) for time constant ``tau``: the state is multiplied by ``decay`` and the drive of the
    equation's right-hand side by ``a`` each step."""
    tau = _arr(tau)
    if np.any(~np.isfinite(tau)) or np.any(tau <= 0):
        raise ConfigError(f"time constants must be positive and finite, got min {float(np.min(tau)):.3g}")
    if method is Discretization.EULER:
        a = dt / tau
        if np.any(a > 1):
            raise ConfigError(
                f"forward Euler with dt={dt:g} is unstable for tau={float(np.min(tau)):.3g} < dt",
                hint="use a smaller dt or the exact discretisation",
            )
        return 1.0 - a, a
    decay = np.exp(-dt / tau)
    return decay, 1.0 - decay


def tau_from_decay(decay, dt: float, method: Discretization) -> np.ndarray:
    """The time constant whose step coefficient is ``decay`` (the inverse of :func:`leak_coefficients`)."""
    decay = _arr(decay)
    if np.any(decay <= 0) or np.any(decay >= 1):
        raise ConfigError(
            f"a decay in (0, 1) is needed for a time constant, got [{float(np.min(decay)):.3g}, "
            f"{float(np.max(decay)):.3g}]"
        )
    return dt / (1.0 - decay) if method is Discretization.EULER else -dt / np.log(decay)


def integrator_gain(r, dt: float) -> np.ndarray:
    return dt * _arr(r)


def neuron_coefficients(node: dict, dt: float, method: Discretization) -> dict:
    """Per-step coefficients (decay, gain, bias, syn_decay, syn_gain) of a NIR neuron given as a dict of
    its parameters (tau or tau_mem, r, v_leak, tau_syn, w_in)."""
    out: dict[str, Optional[np.ndarray]] = {}
    tau = node.get("tau", node.get("tau_mem"))
    r = _arr(node["r"])
    if tau is None:  # I / IF
        out["decay"], out["gain"], out["bias"] = np.ones_like(r), integrator_gain(r, dt), None
    else:
        decay, a = leak_coefficients(tau, dt, method)
        out["decay"], out["gain"] = decay, a * r
        v_leak = _arr(node.get("v_leak", 0.0))
        out["bias"] = None if not np.any(v_leak) else a * v_leak
    if "tau_syn" in node:
        sd, sa = leak_coefficients(node["tau_syn"], dt, method)
        out["syn_decay"], out["syn_gain"] = sd, sa * _arr(node.get("w_in", 1.0))
    return out


def continuous_parameters(decay, gain, bias, dt: float, method: Discretization) -> dict:
    """The NIR membrane parameters (tau or none, r, v_leak) of per-step coefficients, exactly inverting
    :func:`neuron_coefficients` for the same ``dt`` and method. ``decay == 1`` is an integrator."""
    decay, gain = _arr(decay), _arr(gain)
    bias = np.zeros_like(decay) if bias is None else _arr(bias)
    decay, gain, bias = np.broadcast_arrays(decay, gain, bias)
    if np.all(decay == 1.0):
        if np.any(bias):
            raise ConfigError("an integrator (decay 1) with a bias has no NIR equivalent")
        return {"r": gain / dt}
    tau = tau_from_decay(decay, dt, method)
    a = 1.0 - decay if method is Discretization.EXACT else dt / tau
    return {"tau": tau, "r": gain / a, "v_leak": bias / a}


def synapse_parameters(syn_decay, syn_gain, dt: float, method: Discretization) -> dict:
    syn_decay = _arr(syn_decay)
    syn_gain = np.broadcast_to(_arr(1.0 if syn_gain is None else syn_gain), syn_decay.shape)
    tau = tau_from_decay(syn_decay, dt, method)
    a = 1.0 - syn_decay if method is Discretization.EXACT else dt / tau
    return {"tau_syn": tau, "w_in": syn_gain / a}
