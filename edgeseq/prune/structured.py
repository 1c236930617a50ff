"""Structured pruning of zoo models: remove whole hidden units (and LMU memory dimensions).

A *unit group* is one layer's set of units together with every tensor slice that belongs to a
unit: the rows that produce it (in every gate block of the input and recurrent matrices, the
biases, per-neuron LIF parameters) and the columns that read it (the recurrent matrix, the next
layer's input matrix or the readout head). Removing unit ``j`` removes all of these slices at once,
so the pruned network computes exactly what the original computes with unit ``j``'s outgoing
weights set to zero; it is then rebuilt with :func:`edgeseq.nn.build_model` from a config whose
sizes are the kept counts, so checkpoints of pruned models reload like any other.

Supported (``model.config['arch']``):

============  ===================================================  ============================
arch          hidden units (``sparsity``)                          memory dims (``memory_sparsity``)
============  ===================================================  ============================
rnn/gru/lstm  every layer of the torch nn.RNN/GRU/LSTM, all gates   -
mingru,       every layer, all gates of ``proj``                     -
minlstm
lmu           hidden cell units of every layer                      every layer (``order`` cells each)
lif           every LIF layer (per-neuron beta/threshold,           -
              recurrent weights)
l2mu          hidden population and spike encoder                   memory populations
lmuformer     - (the model width is tied to the residual stream)    the token mixer's LMU
============  ===================================================  ============================

torch's multi-layer nn.GRU/LSTM share one hidden size, and the zoo configs have one ``hidden``
for all layers, so every layer keeps the same number of units (chosen per layer).

Which units go is decided by a :class:`~edgeseq.prune.config.Criterion`; with calibration data the
layers that read the removed units are then corrected (:class:`~edgeseq.prune.config.Compensation`):
by default their kept columns and bias are refit by least squares so that their input is
reconstructed from the kept units as well as possible. Both use per-unit activation statistics
(:func:`unit_activity`); LMU memory dimensions and the L2MU spike encoder are not observed and use
the weight criterion without compensation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import ConfigError, ShapeError
from .config import Compensation, Criterion, StructuredConfig


@dataclass(frozen=True)
class Slice:
    """The part of state-dict tensor ``param`` that belongs to the units of a group, along ``axis``.

    Along that axis the tensor holds ``gates`` consecutive blocks of ``size * block`` entries;
    unit ``j`` owns entries ``g * size * block + j * block + k`` for every gate ``g`` and
    ``k < block`` (``block`` = the LMU order for memory dimensions). ``score``: whether the
    slice counts in the weight-norm importance (biases and neuron constants do not).

    For outgoing slices (columns of a consumer's weight): ``bias`` names the consumer's bias, into
    which the mean contribution of removed units can be folded (bias compensation), and ``pooled``
    says the consumer reads the temporal readout of the unit (the classifier head) rather than
    its per-step value."""

    param: str
    axis: int
    gates: int = 1
    block: int = 1
    score: bool = True
    bias: Optional[str] = None
    pooled: bool = False

    def positions(self, units, size: int) -> np.ndarray:
        units = np.asarray(units, dtype=np.int64)
        per_gate = (units[:, None] * self.block + np.arange(self.block)[None, :]).reshape(-1)
        return (np.arange(self.gates)[:, None] * (size * self.block) + per_gate[None, :]).reshape(-1)

    def full(self, size: int) -> int:
        return self.gates * size * self.block


@dataclass
class UnitGroup:
    """One layer's prunable units: ``incoming`` slices produce a unit, ``outgoing`` slices read it.
    ``config_key``: the model-config entry holding the group's size. ``activity``: where the units'
    activations can be observed: ``("module", path)`` (the module's first output, (B, T, size)),
    ``("torch_rnn", layer)`` (one layer of a torch multi-layer RNN) or None."""

    name: str
    kind: str  # "hidden" | "memory"
    size: int
    config_key: str
    incoming: list[Slice] = field(default_factory=list)
    outgoing: list[Slice] = field(default_factory=list)
    activity: Optional[tuple] = None

    @property
    def slices(self) -> list[Slice]:
        return self.incoming + self.outgoing


# ---------------------------------------------------------------------------------------- groups


def _arch(model) -> str:
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, dict) or "arch" not in cfg:
        raise ConfigError(
            "structured pruning needs a zoo model built with edgeseq.nn.build_model (it carries "
            ".config), so that the pruned model can be rebuilt from its config",
            where=type(model).__name__,
            hint="load it with edgeseq.train.load_checkpoint, or use UnstructuredConfig",
        )
    return cfg["arch"]


def _torch_rnn_groups(model) -> list[UnitGroup]:
    rnn = model.rnn
    kind = type(rnn).__name__
    if rnn.bidirectional:
        raise ConfigError(f"bidirectional {kind} cannot be pruned (nor streamed)", where="rnn")
    if getattr(rnn, "proj_size", 0):
        raise ConfigError("LSTM with proj_size cannot be pruned structurally", where="rnn")
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[kind]
    n = rnn.num_layers
    groups = []
    for l in range(n):
        inc = [
            Slice(f"rnn.weight_ih_l{l}", 0, gates),
            Slice(f"rnn.weight_hh_l{l}", 0, gates),
            Slice(f"rnn.bias_ih_l{l}", 0, gates, score=False),
            Slice(f"rnn.bias_hh_l{l}", 0, gates, score=False),
        ]
        out = [
            Slice(f"rnn.weight_hh_l{l}", 1, bias=f"rnn.bias_hh_l{l}"),
            Slice(f"rnn.weight_ih_l{l + 1}", 1, bias=f"rnn.bias_ih_l{l + 1}") if l + 1 < n else _HEAD,
        ]
        groups.append(UnitGroup(f"rnn.l{l}", "hidden", rnn.hidden_size, "hidden", inc, out, ("torch_rnn", l)))
    return groups


_HEAD = Slice("head.weight", 1, bias="head.bias", pooled=True)
_LMU_BIAS = {"e_x": "b_u", "w_x": "b_h", "proj.weight": "proj.bias"}


def _next_inputs(model, i: int, block: int, names=("e_x", "w_x")) -> list[Slice]:
    if i + 1 < len(model.layers):
        return [
            Slice(f"layers.{i + 1}.{n}", 1, block=block, bias=f"layers.{i + 1}.{_LMU_BIAS[n]}" if block == 1 else None)
            for n in names
        ]
    return [Slice("head.weight", 1, block=block, bias="head.bias" if block == 1 else None, pooled=True)]


def _minrnn_groups(model) -> list[UnitGroup]:
    groups = []
    for i, layer in enumerate(model.layers):
        g = layer.n_gates
        inc = [Slice(f"layers.{i}.proj.weight", 0, g), Slice(f"layers.{i}.proj.bias", 0, g, score=False)]
        out = _next_inputs(model, i, 1, ("proj.weight",))
        groups.append(
            UnitGroup(f"layers.{i}", "hidden", layer.hidden_size, "hidden", inc, out, ("module", f"layers.{i}"))
        )
    return groups


def _lmu_memory_group(prefix: str, name: str, lmu, extra_out: list[Slice]) -> UnitGroup:
    p = prefix
    inc = [Slice(f"{p}e_x", 0), Slice(f"{p}e_h", 0), Slice(f"{p}e_m", 0), Slice(f"{p}b_u", 0, score=False)]
    out = [Slice(f"{p}e_m", 1, block=lmu.order), Slice(f"{p}w_m", 1, block=lmu.order)] + extra_out
    return UnitGroup(name, "memory", lmu.memory_d, "memory_d", inc, out, None)


def _lmu_groups(model) -> list[UnitGroup]:
    groups = []
    for i, lmu in enumerate(model.layers):
        p = f"layers.{i}."
        if lmu.hidden_cell != "none":
            inc = [Slice(p + "w_m", 0), Slice(p + "w_x", 0), Slice(p + "w_h", 0), Slice(p + "b_h", 0, score=False)]
            out = [Slice(p + "w_h", 1, bias=p + "b_h"), Slice(p + "e_h", 1, bias=p + "b_u")] + _next_inputs(model, i, 1)
            groups.append(
                UnitGroup(f"layers.{i}", "hidden", lmu.hidden_size, "hidden", inc, out, ("module", f"layers.{i}"))
            )
            groups.append(_lmu_memory_group(p, f"layers.{i}.memory", lmu, []))
        else:  # the memory itself is the layer output: its dims feed the next layer in blocks of `order`
            groups.append(_lmu_memory_group(p, f"layers.{i}.memory", lmu, _next_inputs(model, i, lmu.order)))
    return groups


def _lif_groups(model) -> list[UnitGroup]:
    groups = []
    n = len(model.fcs)
    for i in range(n):
        f, s = f"fcs.{i}.", f"lifs.{i}."
        inc = [Slice(f + "weight", 0), Slice(f + "bias", 0, score=False)]
        inc += [Slice(f"{s}pop.{k}", 0, score=False) for k in ("beta", "threshold", "alpha")]
        inc += [Slice(s + "v_rec", 0, score=False), Slice(s + "rec.weight", 0), Slice(s + "rec.bias", 0, score=False)]
        nxt = f"fcs.{i + 1}." if i + 1 < n else "out_fc."
        out = [Slice(s + "rec.weight", 1, bias=s + "rec.bias"), Slice(nxt + "weight", 1, bias=nxt + "bias")]
        groups.append(UnitGroup(f"lifs.{i}", "hidden", model.lifs[i].size, "hidden", inc, out, ("module", f"lifs.{i}")))
    return groups


def _l2mu_groups(model) -> list[UnitGroup]:
    m = model.l2mu
    p = "l2mu."
    groups = [
        UnitGroup(
            "l2mu.h",
            "hidden",
            m.hidden_size,
            "hidden",
            [Slice(p + "w_m", 0), Slice(p + "w_x", 0), Slice(p + "w_h", 0), Slice(p + "b_h", 0, score=False)],
            [
                Slice(p + "w_h", 1, bias=p + "b_h"),
                Slice(p + "e_h", 1, bias=p + "b_u"),
                Slice("out_fc.weight", 1, bias="out_fc.bias"),
            ],
            ("module", "l2mu"),
        )
    ]
    if m.enc is not None:
        groups.append(
            UnitGroup(
                "l2mu.enc",
                "hidden",
                m.enc.out_features,
                "encoder_size",
                [Slice(p + "enc.weight", 0), Slice(p + "enc.bias", 0, score=False)],
                [Slice(p + "e_x", 1), Slice(p + "w_x", 1)],
                None,
            )
        )
    groups.append(_lmu_memory_group(p, "l2mu.memory", m, []))
    return groups


def _lmuformer_groups(model) -> list[UnitGroup]:
    return [_lmu_memory_group("lmu.", "lmu.memory", model.lmu, [])]


def unit_groups(model) -> list[UnitGroup]:
    """The prunable unit groups of a zoo model, in layer order (slices of absent tensors dropped)."""
    arch = _arch(model)
    if arch in ("rnn", "gru", "lstm"):
        groups = _torch_rnn_groups(model)
    elif arch in ("mingru", "minlstm"):
        groups = _minrnn_groups(model)
    elif arch == "lmu":
        groups = _lmu_groups(model)
    elif arch == "lif":
        groups = _lif_groups(model)
    elif arch == "l2mu":
        groups = _l2mu_groups(model)
    elif arch == "lmuformer":
        groups = _lmuformer_groups(model)
    else:
        raise ConfigError(f"no structured pruning rule for architecture '{arch}'")
    sd = model.state_dict()
    for g in groups:
        g.incoming = [s for s in g.incoming if s.param in sd]
        g.outgoing = [s for s in g.outgoing if s.param in sd]
        for s in g.slices:
            t = sd[s.param]
            if t.dim() > s.axis and t.shape[s.axis] != s.full(g.size):
                raise ShapeError(
                    f"axis {s.axis} has {t.shape[s.axis]} entries, unit group '{g.name}' of {g.size} "
                    f"units expects {s.full(g.size)}",
                    where=s.param,
                )
    return groups


# ------------------------------------------------------------------------------------ importance


def _unit_sq_norms(sd, g: UnitGroup, slices) -> np.ndarray:
    """Per unit: the sum of squares of its entries in the scored ``slices`` (one value per unit)."""
    total = np.zeros(g.size)
    for s in slices:
        if s.score:
            total += _slice_sq_norms(sd, g, s)
    return total


def _slice_sq_norms(sd, g: UnitGroup, s: Slice) -> np.ndarray:
    t = sd[s.param].detach().double().cpu().numpy()
    if t.ndim <= s.axis:
        return np.zeros(g.size)
    a = np.moveaxis(t, s.axis, 0).reshape(t.shape[s.axis], -1)
    return (a * a).sum(axis=1).reshape(s.gates, g.size, s.block).sum(axis=(0, 2))


def _torch_rnn_layer_outputs(rnn, x):
    """Per-layer outputs of a (possibly multi-layer) torch RNN, by running each layer alone."""
    from torch import nn

    outs = []
    cls = type(rnn)
    for layer in range(rnn.num_layers):
        kw = dict(batch_first=rnn.batch_first, bias=rnn.bias)
        if cls is nn.RNN:
            kw["nonlinearity"] = rnn.nonlinearity
        one = cls(x.shape[-1], rnn.hidden_size, num_layers=1, **kw).to(x.dtype)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            src = getattr(rnn, f"{name}_l{layer}", None)
            if src is not None:
                getattr(one, f"{name}_l0").data.copy_(src.data)
        x, _ = one(x)
        outs.append(x)
    return outs


def unit_activity(model, groups: list[UnitGroup], calib_x, batch_size: int = 128) -> dict[str, dict[str, np.ndarray]]:
    """Activation statistics of the units of every group that exposes them, over all sequences and
    time steps of ``calib_x`` (N, T, F): {group: {"mean" (size,), "mean_abs" (size,), "mean_sq"
    (size,), "second" (size, size) = E[a a^T]}} of the per-step values, plus "pooled_mean" and
    "pooled_second" (over sequences, of the temporal readout) for the group the classifier head
    reads. Spiking units: the mean is the spike rate."""
    import torch

    calib_x = np.asarray(calib_x, dtype=np.float32)
    fin = model.config["in_features"]
    if calib_x.ndim != 3 or calib_x.shape[-1] != fin or len(calib_x) == 0:
        raise ShapeError(f"calibration data must be (N, T, {fin}) with N >= 1, got {calib_x.shape}", where="calib_x")
    observed = [g for g in groups if g.activity]
    modules = dict(model.named_modules())
    acc = {
        g.name: {
            "sum": torch.zeros(g.size, dtype=torch.float64),
            "abs": torch.zeros(g.size, dtype=torch.float64),
            "second": torch.zeros(g.size, g.size, dtype=torch.float64),
        }
        for g in observed
    }
    pooled_group = next((g for g in observed if any(s.pooled for s in g.outgoing)), None)
    pooled = None
    if pooled_group is not None:
        n = pooled_group.size
        pooled = {"sum": torch.zeros(n, dtype=torch.float64), "second": torch.zeros(n, n, dtype=torch.float64)}
    hooks: list = []
    rnn_input: list = []

    def add(name, y):
        y = y.detach().double().reshape(-1, y.shape[-1])
        acc[name]["sum"] += y.sum(dim=0)
        acc[name]["abs"] += y.abs().sum(dim=0)
        acc[name]["second"] += y.T @ y

    def module_hook(name):
        def hook(mod, inp, out):
            add(name, out[0] if isinstance(out, tuple) else out)

        return hook

    def readout_hook(mod, inp, out):
        y = out.detach().double()
        pooled["sum"] += y.sum(dim=0)
        pooled["second"] += y.T @ y

    for g in observed:
        if g.activity[0] == "module":
            hooks.append(modules[g.activity[1]].register_forward_hook(module_hook(g.name)))
    if any(g.activity[0] == "torch_rnn" for g in observed):
        hooks.append(model.rnn.register_forward_pre_hook(lambda m, a: rnn_input.append(a[0])))
    if pooled is not None:
        hooks.append(model.readout.register_forward_hook(readout_hook))
    steps = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(calib_x), batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(calib_x[s : s + batch_size]))
                rnn_input.clear()
                model(xb)
                steps += xb.shape[0] * xb.shape[1]
                if rnn_input:
                    layers = _torch_rnn_layer_outputs(model.rnn, rnn_input[0])
                    for g in observed:
                        if g.activity[0] == "torch_rnn":
                            add(g.name, layers[g.activity[1]])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    out = {}
    for name, a in acc.items():
        second = (a["second"] / steps).numpy()
        out[name] = {
            "mean": (a["sum"] / steps).numpy(),
            "mean_abs": (a["abs"] / steps).numpy(),
            "mean_sq": np.diag(second).copy(),
            "second": second,
        }
    if pooled is not None:
        out[pooled_group.name]["pooled_mean"] = (pooled["sum"] / len(calib_x)).numpy()
        out[pooled_group.name]["pooled_second"] = (pooled["second"] / len(calib_x)).numpy()
    return out


# ------------------------------------------------------------------------ consumers and importance


def _linear_consumer(sd, s: Slice) -> bool:
    """A consumer whose input the kept units can reconstruct: plain columns of a weight matrix."""
    t = sd.get(s.param)
    return s.score and s.axis == 1 and s.gates == 1 and s.block == 1 and t is not None and t.dim() == 2


def _moments(stats: dict, s: Slice, centered: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, second-moment matrix) of what consumer ``s`` reads: centered covariance when the mean
    is folded into a bias, else the raw second moment E[a a^T]."""
    if s.pooled and "pooled_mean" in stats:
        mean, second = stats["pooled_mean"], stats["pooled_second"]
    else:
        mean, second = stats["mean"], stats["second"]
    return mean, (second - np.outer(mean, mean)) if centered else second


def _has_bias(sd, s: Slice) -> bool:
    return s.bias is not None and s.bias in sd


def _perturbation(sd, g: UnitGroup, stats: dict, compensation: Compensation) -> np.ndarray:
    """Expected squared change of the consumers' inputs when a unit alone is removed: per outgoing
    slice, E[a^2] (or Var[a] when the mean is folded into the consumer's bias) times |column|^2."""
    total = np.zeros(g.size)
    for s in g.outgoing:
        if not s.score:
            continue
        centered = compensation is not Compensation.NONE and _has_bias(sd, s) and s.block == 1
        _, mom = _moments(stats, s, centered)
        total += np.maximum(np.diag(mom), 0.0) * _slice_sq_norms(sd, g, s)
    return total


def _ridge(c: np.ndarray) -> np.ndarray:
    lam = 1e-6 * max(float(np.mean(np.diag(c))), 1e-12)
    return c + lam * np.eye(len(c))


def _reconstruction_order(sd, g: UnitGroup, stats: dict, compensation: Compensation) -> np.ndarray:
    """Scores from greedy backward elimination: the unit removed first scores 0, the last 1.

    With S the kept units, P = (C_SS + ridge)^-1 and B = W C_{:,S} P (the least-squares refit of a
    consumer W from the kept units), removing unit j from S raises the reconstruction error of that
    consumer by |B[:, j]|^2 / P_jj; the unit with the smallest sum over consumers goes first, and P is
    downdated by its Schur complement."""
    cons = []
    for s in g.outgoing:
        if _linear_consumer(sd, s):
            centered = compensation is not Compensation.NONE and _has_bias(sd, s)
            _, c = _moments(stats, s, centered)
            w = sd[s.param].detach().double().cpu().numpy()
            cons.append((w, c, np.linalg.inv(_ridge(c))))
    if not cons:
        return np.sqrt(_unit_sq_norms(sd, g, g.slices))
    alive = list(range(g.size))
    score = np.zeros(g.size)
    ps = [p for _, _, p in cons]
    for step in range(g.size - 1):
        delta = np.zeros(len(alive))
        for (w, c, _), p in zip(cons, ps):
            b = w @ c[:, alive] @ p
            delta += (b * b).sum(axis=0) / np.maximum(np.diag(p), 1e-300)
        k = int(np.argmin(delta))
        score[alive[k]] = step / max(1, g.size - 1)
        for i, p in enumerate(ps):
            keep = [j for j in range(len(alive)) if j != k]
            ps[i] = p[np.ix_(keep, keep)] - np.outer(p[keep, k], p[k, keep]) / p[k, k]
        del alive[k]
    score[alive[0]] = 1.0
    return score


def unit_importance(
    model,
    groups: list[UnitGroup],
    criterion: Criterion | str = Criterion.WEIGHT,
    calib_x=None,
    seed: int = 0,
    compensate: Compensation | str | bool = Compensation.LSTSQ,
    activity=None,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(scores, criterion used) per group name; a higher score means a more important unit.

    ``activity``: precomputed :func:`unit_activity` (else computed from ``calib_x`` when needed)."""
    from ..ir.types import parse_enum

    criterion = parse_enum(Criterion, criterion, "pruning criterion")
    if isinstance(compensate, bool):
        compensate = Compensation.LSTSQ if compensate else Compensation.NONE
    compensate = parse_enum(Compensation, compensate, "compensation")
    sd = model.state_dict()
    scores, used = {}, {}
    data_driven = criterion in (Criterion.ACTIVATION, Criterion.RECONSTRUCTION)
    if data_driven and activity is None:
        if calib_x is None:
            raise ConfigError(
                f"the {criterion.value} criterion needs calibration data (calib_x)",
                hint="pass calibration sequences, or use criterion='weight'",
            )
        activity = unit_activity(model, groups, calib_x)
    for i, g in enumerate(groups):
        if criterion is Criterion.RANDOM:
            scores[g.name] = np.random.default_rng(seed + 7919 * i).random(g.size)
            used[g.name] = "random"
        elif data_driven and g.name in activity:
            if criterion is Criterion.ACTIVATION:
                scores[g.name] = np.sqrt(_perturbation(sd, g, activity[g.name], compensate))
            else:
                scores[g.name] = _reconstruction_order(sd, g, activity[g.name], compensate)
            used[g.name] = criterion.value
        else:
            scores[g.name] = np.sqrt(_unit_sq_norms(sd, g, g.slices))
            used[g.name] = "weight"
    return scores, used


# ------------------------------------------------------------------------------------- rebuild


def kept_count(size: int, sparsity: float, min_units: int = 1) -> int:
    return int(min(size, max(min_units, round(size * (1.0 - sparsity)))))


def select_units(scores: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the ``keep`` highest-scoring units, in ascending order (ties: lower index wins)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return np.sort(order[:keep])


def _compensate(
    sd, groups: list[UnitGroup], keep: dict[str, np.ndarray], activity: dict, how: Compensation
) -> dict[str, str]:
    """Adjust the consumers of removed units in ``sd`` (before slicing). ``mean``: b += W[:, R] mean_R.
    ``lstsq``: W[:, S] = W C_{:,S} C_SS^-1 and b += W mean - W[:, S] mean_S for linear consumers
    (mean folding for the rest). Returns {consumer tensor: what was done}."""
    import torch

    done: dict[str, str] = {}
    if how is Compensation.NONE:
        return done
    updates: dict[str, torch.Tensor] = {}
    for g in groups:
        stats = activity.get(g.name)
        kept = keep[g.name]
        removed = np.setdiff1d(np.arange(g.size), kept)
        if stats is None or not len(removed):
            continue
        for s in g.outgoing:
            if not s.score or s.block != 1 or s.gates != 1 or s.axis != 1 or s.param not in sd:
                continue
            bias = _has_bias(sd, s)
            w = sd[s.param].detach().double().cpu().numpy()
            if how is Compensation.LSTSQ and _linear_consumer(sd, s):
                mean, c = _moments(stats, s, centered=bias)
                w_new = w @ c[:, kept] @ np.linalg.inv(_ridge(c[np.ix_(kept, kept)]))
                full = w.copy()
                full[:, kept] = w_new
                full[:, removed] = 0.0
                updates[s.param] = torch.as_tensor(full)
                delta = w @ mean - w_new @ mean[kept]
                done[s.param] = "lstsq"
            elif bias:
                mean, _ = _moments(stats, s, centered=False)
                delta = w[:, removed] @ mean[removed]
                done[s.param] = "mean"
            else:
                continue
            if bias:
                prev = updates.get(s.bias, sd[s.bias].detach().double())
                updates[s.bias] = prev + torch.as_tensor(delta)
    for name, t in updates.items():
        sd[name] = t.to(sd[name].dtype)
    return done


def rebuild(
    model,
    groups: list[UnitGroup],
    keep: dict[str, np.ndarray],
    activity: Optional[dict] = None,
    compensate: Compensation | str = Compensation.LSTSQ,
):
    """A new model of the same architecture holding only the ``keep`` units of every group.

    With ``activity`` (:func:`unit_activity`), the consumers of removed units are compensated as
    ``compensate`` says (:class:`Compensation`)."""
    import torch

    from ..ir.types import parse_enum
    from ..nn import build_model

    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sizes: dict[str, int] = {}
    keep = {g.name: np.asarray(keep.get(g.name, np.arange(g.size)), dtype=np.int64) for g in groups}
    for g in groups:
        idx = keep[g.name]
        if idx.ndim != 1 or len(idx) == 0 or len(np.unique(idx)) != len(idx) or idx.min() < 0 or idx.max() >= g.size:
            raise ConfigError(f"kept units must be distinct indices in 0..{g.size - 1}, at least one", where=g.name)
        keep[g.name] = np.sort(idx)
        prev = sizes.setdefault(g.config_key, len(idx))
        if prev != len(idx):
            raise ConfigError(
                f"every layer must keep the same number of units (config '{g.config_key}' is shared "
                f"by all layers): {prev} vs {len(idx)}",
                where=g.name,
            )
    if activity:
        _compensate(sd, groups, keep, activity, parse_enum(Compensation, compensate, "compensation"))
    for g in groups:
        idx = keep[g.name]
        for s in g.slices:
            t = sd[s.param]
            if t.dim() <= s.axis:  # a scalar neuron constant shared by the whole population
                continue
            sd[s.param] = t.index_select(s.axis, torch.as_tensor(s.positions(idx, g.size)))
    cfg = dict(model.config)
    cfg.update(sizes)
    arch, fin, ncls = cfg.pop("arch"), cfg.pop("in_features"), cfg.pop("n_classes")
    new = build_model(arch, fin, ncls, **cfg)
    try:
        new.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ShapeError(f"pruned tensors do not fit the rebuilt model ({e})", where=arch) from None
    new.train(model.training)
    return new


def count_parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def prune_structured(model, config: StructuredConfig, calib_x=None):
    """(pruned model, report): ``config.sparsity`` of the hidden units of every layer and
    ``config.memory_sparsity`` of the memory dimensions removed by ``config.criterion``; with
    calibration data, the layers that read removed units are compensated (``config.compensate``)."""
    groups = unit_groups(model)
    wanted = {"hidden": config.sparsity, "memory": config.memory_sparsity}
    active = [g for g in groups if wanted[g.kind] > 0]
    kinds = sorted({g.kind for g in groups})
    if config.sparsity > 0 and not any(g.kind == "hidden" for g in groups):
        raise ConfigError(
            f"architecture '{model.config['arch']}' has no prunable hidden units (only: {', '.join(kinds)})",
            hint="use memory_sparsity, or unstructured pruning",
        )
    if config.memory_sparsity > 0 and not any(g.kind == "memory" for g in groups):
        raise ConfigError(f"architecture '{model.config['arch']}' has no memory dimensions to prune")
    comp = config.compensate if calib_x is not None else Compensation.NONE
    data_driven = config.criterion in (Criterion.ACTIVATION, Criterion.RECONSTRUCTION)
    activity = None
    if calib_x is not None and active and (comp is not Compensation.NONE or data_driven):
        activity = unit_activity(model, active, calib_x)
    scores, used = (
        unit_importance(model, active, config.criterion, calib_x, config.seed, comp, activity) if active else ({}, {})
    )
    keep = {}
    rows = []
    for g in groups:
        k = kept_count(g.size, wanted[g.kind], config.min_units)
        keep[g.name] = select_units(scores[g.name], k) if g.name in scores else np.arange(g.size)
        removed = sorted(set(range(g.size)) - set(keep[g.name].tolist()))
        rows.append(
            {
                "group": g.name,
                "kind": g.kind,
                "config_key": g.config_key,
                "size": g.size,
                "kept": int(k),
                "removed": removed,
                "criterion": used.get(g.name),
                "compensation": comp.value if activity and g.name in activity and removed else "none",
            }
        )
    new = rebuild(model, groups, keep, activity, comp)
    before, after = count_parameters(model), count_parameters(new)
    report = {
        "method": "structured",
        "config": config.to_dict(),
        "arch": model.config["arch"],
        "calibration_sequences": None if calib_x is None else int(len(calib_x)),
        "parameters_before": before,
        "parameters_after": after,
        "parameter_reduction": 1.0 - after / before if before else 0.0,
        "groups": rows,
        "kept_indices": {k: v.tolist() for k, v in keep.items()},
        "config_changes": {g["config_key"]: [g["size"], g["kept"]] for g in rows if g["kept"] != g["size"]},
    }
    return new, report
