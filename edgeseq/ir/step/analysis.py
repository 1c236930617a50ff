"""Structural questions about step programs that graph passes and the quantization planner ask
instead of knowing each cell: how a scan reads its input, what its spikes weigh, which states
are compared with thresholds, and exact folds of a per-channel affine map into its input or
output."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np

from .program import Affine, Gt, Mul, Quant, StepProgram


def input_matrices(prog: StepProgram, index: int = 0) -> Optional[list[str]]:
    """The weight parameters that multiply input ``index`` if the program reads that input only
    through (unblocked) Affine terms, else None."""
    name = prog.inputs[index].name
    out: list[str] = []
    for op in prog.body:
        if name not in op.reads():
            continue
        if not isinstance(op, Affine):
            return None
        for t in op.terms:
            if t.x == name:
                if t.blocks != 1:
                    return None
                out.append(t.w)
    if name in prog.outputs or name in prog.next_state.values():
        return None
    return out


def output_amplitude(prog: StepProgram, index: int) -> Optional[np.ndarray]:
    """The spike amplitude of output ``index`` when it is mask * parameter (None: 1 or not spikes)."""
    prod = prog.producers()
    v = prod.get(prog.outputs[index])
    while isinstance(v, Quant):
        v = prod.get(v.x)
    if isinstance(v, Mul):
        for a, b in ((v.a, v.b), (v.b, v.a)):
            if prog.is_param(b) and isinstance(prod.get(a), Gt):
                return np.asarray(prog.params[b], np.float64)
    return None


def state_thresholds(prog: StepProgram) -> dict[str, float]:
    """max |threshold| of every state compared with a parameter by a Gt (spiking membranes)."""
    out: dict[str, float] = {}
    states = set(prog.state_names)
    for op in prog.body:
        if isinstance(op, Gt) and op.a in states and prog.is_param(op.b):
            out[op.a] = max(out.get(op.a, 0.0), float(np.max(np.abs(prog.params[op.b]))))
    return out


def fold_input(prog: StepProgram, a: np.ndarray, c: np.ndarray) -> Optional[StepProgram]:
    """The program of ``x -> prog(a * x + c)`` with the map folded into the weights (exact in
    float64): columns of every matrix reading the input scale by ``a``, W c joins its Affine's
    bias. None if the input is not read through Affine terms only."""
    mats = input_matrices(prog)
    if mats is None:
        return None
    x = prog.inputs[0].name
    params = dict(prog.params)
    body = []
    for op in prog.body:
        if isinstance(op, Affine) and any(t.x == x for t in op.terms):
            shift = sum(np.asarray(prog.params[t.w]) @ c for t in op.terms if t.x == x)
            bias = op.bias
            if bias is None:
                bias = f"{op.out}.folded_bias"
                params[bias] = shift
            else:
                shared = any(isinstance(o, Affine) and o.bias == bias and o is not op for o in prog.body)
                new = f"{bias}.folded" if shared else bias
                params[new] = np.asarray(prog.params[bias]) + shift
                bias = new
            op = replace(op, bias=bias)
        body.append(op)
    for w in set(mats):
        params[w] = np.asarray(prog.params[w]) * a[None, :]
    return prog.replace(params=params, body=tuple(body))


def fold_output(prog: StepProgram, a: np.ndarray, c: np.ndarray) -> Optional[StepProgram]:
    """The program of ``a * prog(x) + c`` with the map folded into the producing Affine, when the
    single output is (a quantization point of) an Affine used nowhere else; else None."""
    if len(prog.outputs) != 1:
        return None
    prod = prog.producers()
    out = prog.outputs[0]
    chain = [out]
    v = prod.get(out)
    while isinstance(v, Quant):
        chain.append(v.x)
        v = prod.get(v.x)
    if not isinstance(v, Affine):
        return None
    readers = [op for op in prog.body if any(r in chain for r in op.reads()) and not isinstance(op, Quant)]
    if readers or any(s in chain for s in prog.next_state.values()):
        return None
    params = dict(prog.params)
    info = dict(prog.param_info)
    terms = []
    for t in v.terms:
        w2 = (
            f"{t.w}.scaled"
            if sum(u.w == t.w for op in prog.body if isinstance(op, Affine) for u in op.terms) > 1
            else t.w
        )
        params[w2] = a[:, None] * np.asarray(prog.params[t.w])
        if w2 != t.w and t.w in info:
            info[w2] = info[t.w]
        terms.append(replace(t, w=w2))
    b = np.zeros(v.n) if v.bias is None else np.asarray(prog.params[v.bias])
    bias = f"{v.out}.folded_bias"
    params[bias] = a * b + c
    new = replace(v, terms=tuple(terms), bias=bias)
    return prog.replace(params=params, body=tuple(new if op is v else op for op in prog.body), param_info=info)
