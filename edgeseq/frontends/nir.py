"""NIR (the Neuromorphic Intermediate Representation) -> IR graphs.

    graph = edgeseq.capture("model.nir")                      # or a nir.NIRGraph
    graph = edgeseq.capture("model.nir", nir=NirOptions(dt=1e-3, method="exact", reset="subtract"))

A NIR graph is continuous-time: its neurons are differential equations (tau, r, v_leak, v_threshold,
v_reset, tau_syn, w_in) and it stores no time step. Reading one is therefore a choice, recorded in
the graph's metadata under ``"nir"``: the step ``dt``, the discretisation (forward Euler or the
exact exponential, :mod:`edgeseq.ir.discretize`) and the reset rule (NIR's reset to ``v_reset`` or a
subtractive reset). The defaults follow the graph's producer (unless a dt or method is given, which means NIR's equations
discretised that way):

- ``semantics="snntorch"`` (chosen when every LIF/CubaLIF has snntorch's export signature,
  r = tau/dt at dt = 1e-4, v_leak = v_reset = 0): the neurons run as snntorch's own Leaky / RLeaky /
  Synaptic / RSynaptic (beta = 1 - dt/tau, reset applied one step after the spike, Leaky zeroes the
  previous membrane, the others the integrated total); so a model from snntorch's ``export_to_nir``
  gives snntorch's spikes.
- ``semantics="rockpool"`` (chosen when every LIF/CubaLIF has Rockpool's export signature,
  r = tau exp(-dt/tau)/dt for one dt, w_in = 1, v_leak = 0): Rockpool's LIFTorch, exact decays
  exp(-dt/tau) at that dt, the input scaled by the synaptic decay, subtractive reset at the spike.
- ``semantics="nir"`` (otherwise): each neuron is a :class:`~edgeseq.ir.ops.LeakyNeuron` with the
  coefficients of the chosen discretisation (default forward Euler, dt = 1e-4) and NIR's reset at the
  step of the spike.

Nodes: Input, Output, Affine, Linear, Scale, Conv1d / Conv2d / SumPool2d / AvgPool2d (applied to
each step, as one dense matrix), Flatten, Threshold, Delay (whole steps), I, IF, LI, LIF, CubaLI,
CubaLIF, nested NIRGraphs. Several edges into one node add up. A cycle becomes one scan (a
:class:`~edgeseq.ir.ops.Scan` whose step program holds the cycle's nodes; snntorch's RLeaky /
RSynaptic pattern becomes their LIF / CuBaLIF op): an edge that closes the cycle carries the value
of the previous step, and every cycle must pass through a neuron.

Files are read by :func:`edgeseq.util.safeio.read_hdf5_tree` (no pickle, bounded memory, nothing
outside the file); anything malformed or unsupported raises one error naming the file and the node.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ..errors import ConfigError, EdgeseqError, IRFormatError, ShapeError, UnsupportedOpError
from ..ir import ops as O
from ..ir.discretize import Discretization, neuron_coefficients
from ..ir.graph import Graph, GraphBuilder
from ..ir.types import ResetRule
from ..util.graphs import strongly_connected

__all__ = ["NirOptions", "Semantics", "load_nir", "nir_to_graph", "NEURONS", "SUPPORTED"]

SNNTORCH_DT = 1e-4
NEURONS = ("I", "IF", "LI", "LIF", "CubaLI", "CubaLIF")
SPIKING = ("IF", "LIF", "CubaLIF")
SUPPORTED = (
    "Input",
    "Output",
    "Affine",
    "Linear",
    "Scale",
    "Conv1d",
    "Conv2d",
    "SumPool2d",
    "AvgPool2d",
    "Flatten",
    "Threshold",
    "Delay",
    "NIRGraph",
) + NEURONS
_PARAMS = {  # required parameters of each node type
    "Affine": ("weight", "bias"),
    "Linear": ("weight",),
    "Scale": ("scale",),
    "Threshold": ("threshold",),
    "Delay": ("delay",),
    "Conv1d": ("weight",),
    "Conv2d": ("weight",),
    "SumPool2d": ("kernel_size",),
    "AvgPool2d": ("kernel_size",),
    "I": ("r",),
    "IF": ("r", "v_threshold"),
    "LI": ("tau", "r", "v_leak"),
    "LIF": ("tau", "r", "v_leak", "v_threshold"),
    "CubaLI": ("tau_syn", "tau_mem", "r", "v_leak"),
    "CubaLIF": ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold"),
}
MAX_DENSE = 1 << 22  # elements of the dense matrix of a per-step convolution / pooling


class Semantics(str, __import__("enum").Enum):
    AUTO = "auto"
    NIR = "nir"
    SNNTORCH = "snntorch"
    ROCKPOOL = "rockpool"


@dataclass(frozen=True)
class NirOptions:
    """How to turn a continuous-time NIR graph into steps. None: the producer's choice (see module doc).

    ``reset``: 'zero' (NIR: to v_reset) or 'subtract' (v - v_threshold), overriding the graph's."""

    dt: Optional[float] = None
    method: Optional[Discretization] = None
    reset: Optional[ResetRule] = None
    semantics: Semantics = Semantics.AUTO

    def __post_init__(self):
        if self.dt is not None and not (np.isfinite(self.dt) and self.dt > 0):
            raise ConfigError(f"dt must be a positive number of seconds, got {self.dt}", where="nir.dt")
        if self.method is not None:
            object.__setattr__(self, "method", _enum(Discretization, self.method, "method"))
        if self.reset is not None:
            r = _enum(ResetRule, self.reset, "reset")
            if r not in (ResetRule.ZERO, ResetRule.SUBTRACT):
                raise ConfigError(f"reset must be 'zero' or 'subtract', got '{r.value}'", where="nir.reset")
            object.__setattr__(self, "reset", r)
        object.__setattr__(self, "semantics", _enum(Semantics, self.semantics, "semantics"))


def _enum(cls, value, what: str):
    try:
        return cls(value.value if isinstance(value, cls) else str(value))
    except ValueError:
        raise ConfigError(
            f"unknown {what} '{value}'; choose one of: {', '.join(m.value for m in cls)}", where=f"nir.{what}"
        ) from None


# ----------------------------------------------------------------------------------------------
# reading: a file or a nir.NIRGraph -> a flat graph of plain nodes


@dataclass
class NNode:
    name: str
    type: str
    p: dict  # parameters as float64 arrays (strings left as they are)
    meta: dict


def _where(src: str, node: str) -> str:
    return f"{src}:{node}" if node else src


def read_tree(path) -> dict:
    """The HDF5 tree of a .nir file (safe reader)."""
    from ..util.safeio import read_hdf5_tree

    tree = read_hdf5_tree(path, IRFormatError, what="NIR file", install="pip install h5py")
    if not isinstance(tree.get("node"), dict):
        raise IRFormatError("not a NIR file (no 'node' group)", where=str(path))
    return tree


def _text(v) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray) and v.dtype == object and v.size == 1:
        return _text(v.reshape(-1)[0])
    return str(v)


def _edges(raw, where: str) -> list[tuple[str, str]]:
    a = np.asarray(raw, dtype=object) if not isinstance(raw, list) else np.asarray(raw, dtype=object)
    if a.size == 0:
        return []
    if a.ndim != 2 or a.shape[1] != 2:
        raise IRFormatError(f"'edges' must be a list of (source, target) pairs, got shape {a.shape}", where=where)
    return [(_text(s), _text(d)) for s, d in a]


def _flatten(group: dict, prefix: str, src: str, nodes: dict, edges: list, depth: int = 0) -> None:
    """Add the nodes of a (nested) NIRGraph dict, names prefixed with their graph's name + '.'."""
    where = _where(src, prefix.rstrip("."))
    if depth > 16:
        raise IRFormatError("NIR graphs nested deeper than 16 levels", where=where)
    sub = group.get("nodes")
    if not isinstance(sub, dict):
        raise IRFormatError("NIRGraph has no 'nodes'", where=where)
    local = {}
    for key, body in sub.items():
        name = prefix + str(key)
        if not isinstance(body, dict) or "type" not in body:
            raise IRFormatError("node has no 'type'", where=_where(src, name))
        kind = _text(body["type"])
        if kind == "NIRGraph":
            _flatten(body, name + ".", src, nodes, edges, depth + 1)
            local[str(key)] = "graph"
            continue
        if kind not in SUPPORTED:
            raise UnsupportedOpError(
                f"NIR node type '{kind}' is not supported",
                where=_where(src, name),
                hint="supported: " + ", ".join(SUPPORTED),
            )
        params = {}
        for k, v in body.items():
            if k in ("type", "metadata", "input_type", "output_type"):
                continue
            if isinstance(v, dict):
                continue
            a = np.asarray(v)
            if a.dtype.kind in "biuf":
                a = a.astype(np.float64)
                if not np.all(np.isfinite(a)):
                    raise IRFormatError(f"parameter '{k}' holds NaN or Inf", where=_where(src, name))
            params[k] = a
        missing = [k for k in _PARAMS.get(kind, ()) if k not in params]
        if missing:
            raise IRFormatError(f"{kind} node lacks {', '.join(missing)}", where=_where(src, name))
        meta = (
            {
                k: _text(v) if not isinstance(v, np.ndarray) or v.dtype == object else v
                for k, v in (body.get("metadata") or {}).items()
            }
            if isinstance(body.get("metadata"), dict)
            else {}
        )
        nodes[name] = NNode(name, kind, params, meta)
        local[str(key)] = kind
    for s, d in _edges(group.get("edges", []), where):
        edges.append((_resolve(s, prefix, local, nodes, "out", src), _resolve(d, prefix, local, nodes, "in", src)))


def _resolve(ref: str, prefix: str, local: dict, nodes: dict, side: str, src: str) -> str:
    """A flat node name for an edge end: a node of this graph, a node inside a nested graph
    ('sub.node'), or a nested graph itself (its Input when entering, its Output when leaving)."""
    full = prefix + ref
    if full in nodes:
        return full
    head = ref.split(".")[0]
    if local.get(ref) == "graph" or (local.get(head) == "graph" and ref == head):
        kind = "Input" if side == "in" else "Output"
        ends = [
            n for n, v in nodes.items() if n.startswith(full + ".") and v.type == kind and "." not in n[len(full) + 1 :]
        ]
        if len(ends) != 1:
            raise IRFormatError(
                f"edge into nested graph '{ref}' needs exactly one {kind} node there, found {len(ends)}",
                where=_where(src, full),
            )
        return ends[0]
    raise IRFormatError(
        f"edge refers to unknown node '{ref}'", where=_where(src, prefix.rstrip(".")) if prefix else src
    )


def read_nir(source) -> tuple[dict[str, NNode], list[tuple[str, str]], str, dict]:
    """(flat nodes, edges, where, graph metadata) of a .nir file or a nir.NIRGraph."""
    if isinstance(source, (str, Path)):
        where = str(source)
        tree = read_tree(source)
        root = tree["node"]
        version = _text(tree.get("version", "?"))
    else:
        to_dict = getattr(source, "to_dict", None)
        if to_dict is None or type(source).__name__ != "NIRGraph":
            raise ConfigError(f"expected a .nir path or a nir.NIRGraph, got {type(source).__name__}")
        where, root = "NIRGraph", to_dict()
        import nir

        version = getattr(nir, "version", "?")
    if _text(root.get("type", "")) != "NIRGraph":
        raise IRFormatError("the root node is not a NIRGraph", where=where)
    nodes: dict[str, NNode] = {}
    edges: list[tuple[str, str]] = []
    _flatten(root, "", where, nodes, edges)
    md = root.get("metadata") if isinstance(root.get("metadata"), dict) else {}
    md = {k: _text(v) if not isinstance(v, np.ndarray) or v.dtype == object else v.tolist() for k, v in md.items()}
    md["nir_version"] = version
    return nodes, edges, where, md


# ----------------------------------------------------------------------------------------------
# shapes and per-step dense maps


def _shape_of(a) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(a, dtype=np.float64).reshape(-1))


def _dense(fn, in_shape: tuple[int, ...], where: str) -> np.ndarray:
    """The matrix (out, in) of a per-step linear map ``fn`` (torch, batched over basis vectors)."""
    import torch

    n_in = int(np.prod(in_shape))
    with torch.no_grad():
        probe = fn(torch.zeros((1,) + in_shape, dtype=torch.float64))
        n_out = int(np.prod(probe.shape[1:]))
        if n_in * n_out > MAX_DENSE:
            raise ShapeError(
                f"a per-step map of {n_in} -> {n_out} values is too large to unroll (more than {MAX_DENSE} weights)",
                where=where,
            )
        cols = []
        for s in range(0, n_in, 1024):
            eye = torch.zeros((min(1024, n_in - s), n_in), dtype=torch.float64)
            eye[torch.arange(eye.shape[0]), torch.arange(s, s + eye.shape[0])] = 1.0
            out = fn(eye.reshape((-1,) + in_shape)) - probe
            cols.append(out.reshape(eye.shape[0], -1))
        return torch.cat(cols).T.contiguous().numpy(), tuple(probe.shape[1:]), probe.reshape(-1).numpy()


def _conv_map(node: NNode, in_shape: tuple[int, ...], where: str):
    import torch.nn.functional as F

    p = node.p
    two = node.type == "Conv2d"
    w = np.asarray(p["weight"])
    if w.ndim != (4 if two else 3):
        raise ShapeError(f"{node.type} weight must be {'4' if two else '3'}-D, got shape {w.shape}", where=where)
    if len(in_shape) != w.ndim - 1:
        if "input_shape" in p:
            in_shape = _shape_of(p["input_shape"])
        else:
            raise ShapeError(f"{node.type} needs a {w.ndim - 1}-D input per step, got shape {in_shape}", where=where)
    import torch

    wt = torch.as_tensor(w, dtype=torch.float64)
    b = torch.as_tensor(np.asarray(p["bias"], dtype=np.float64)) if "bias" in p else None

    def arg(k, d):
        v = np.asarray(p.get(k, d))
        if v.dtype.kind in "US" or v.dtype == object:
            return _text(v)
        t = tuple(int(x) for x in np.atleast_1d(v).reshape(-1))
        return t if len(t) > 1 else t[0]

    conv = F.conv2d if two else F.conv1d
    groups = int(np.asarray(p.get("groups", 1)).reshape(-1)[0])
    kw = dict(stride=arg("stride", 1), padding=arg("padding", 0), dilation=arg("dilation", 1), groups=groups)
    try:
        mat, out_shape, offset = _dense(lambda x: conv(x, wt, b, **kw), in_shape, where)
    except RuntimeError as e:
        raise ShapeError(
            f"{node.type} does not fit its input {in_shape}: {str(e).splitlines()[0][:160]}", where=where
        ) from None
    return mat, offset, out_shape


def _pool_map(node: NNode, in_shape: tuple[int, ...], where: str):
    import torch.nn.functional as F

    if len(in_shape) != 3:
        raise ShapeError(f"{node.type} needs a (C, H, W) input per step, got shape {in_shape}", where=where)
    k = _shape_of(node.p["kernel_size"])
    stride = _shape_of(node.p.get("stride", node.p["kernel_size"]))
    pad = _shape_of(node.p.get("padding", [0]))
    k, stride, pad = (
        (k * 2 if len(k) == 1 else k),
        (stride * 2 if len(stride) == 1 else stride),
        (pad * 2 if len(pad) == 1 else pad),
    )
    if node.type == "AvgPool2d":
        fn = lambda x: F.avg_pool2d(x, k, stride, pad)  # noqa: E731
    else:
        fn = lambda x: F.avg_pool2d(x, k, stride, pad, divisor_override=1)  # noqa: E731
    mat, out_shape, _ = _dense(fn, in_shape, where)
    return mat, None, out_shape


# ----------------------------------------------------------------------------------------------
# conversion


def _is_snntorch_export(nodes: Mapping[str, NNode]) -> bool:
    neurons = [n for n in nodes.values() if n.type in ("LIF", "CubaLIF")]
    if not neurons or any(n.type in ("I", "IF", "LI", "CubaLI") for n in nodes.values()):
        return False
    for n in neurons:
        p = n.p
        tau = p["tau"] if n.type == "LIF" else p["tau_mem"]
        if (
            np.any(p["v_leak"])
            or np.any(p.get("v_reset", 0.0))
            or not np.allclose(p["r"], tau / SNNTORCH_DT, rtol=1e-5)
        ):
            return False
        if n.type == "CubaLIF" and not np.allclose(p.get("w_in", 1.0), p["tau_syn"] / SNNTORCH_DT, rtol=1e-5):
            return False
    return True


def _rockpool_dt(nodes: Mapping[str, NNode]) -> Optional[float]:
    """The dt of a Rockpool export (r = tau exp(-dt/tau) / dt for every LIF / CubaLIF), or None."""
    neurons = [n for n in nodes.values() if n.type in ("LIF", "CubaLIF")]
    if not neurons or any(n.type in ("I", "IF", "LI", "CubaLI") for n in nodes.values()):
        return None
    found = None
    for n in neurons:
        p = n.p
        tau = np.asarray(p["tau"] if n.type == "LIF" else p["tau_mem"], np.float64).reshape(-1)
        r = np.broadcast_to(np.asarray(p["r"], np.float64).reshape(-1), tau.shape)
        if np.any(p["v_leak"]) or (n.type == "CubaLIF" and not np.allclose(p.get("w_in", 1.0), 1.0)):
            return None
        if np.any(r <= 0) or np.any(r * 1.0 < np.exp(-1.0 / tau)):  # f(dt) = r dt/tau - exp(-dt/tau) rises
            return None
        lo, hi = np.zeros_like(tau), np.ones_like(tau)
        for _ in range(80):
            mid = (lo + hi) / 2
            up = r * mid / tau - np.exp(-mid / tau) > 0
            hi, lo = np.where(up, mid, hi), np.where(up, lo, mid)
        dt = float(np.median(hi))
        if dt <= 0 or not np.allclose(hi, dt, rtol=1e-4) or (found is not None and abs(found - dt) > 1e-4 * dt):
            return None
        found = dt
    if found is None:
        return None
    # Rockpool's dt is a round number (1 ms, 0.5 ms, ...); the exported r carries float32 noise
    digits = 10 ** np.floor(np.log10(found))
    snapped = float(round(found / digits, 1) * digits)
    return snapped if abs(snapped - found) < 1e-4 * found else None


class _Converter:
    def __init__(
        self, nodes: dict[str, NNode], edges: list[tuple[str, str]], where: str, opts: NirOptions, graph_meta: dict
    ):
        self.nodes, self.edges, self.src, self.meta = nodes, edges, where, graph_meta
        sem, dt_default, method_default = opts.semantics, SNNTORCH_DT, "euler"
        if sem is Semantics.AUTO and (opts.dt is not None or opts.method is not None):
            sem = Semantics.NIR  # a step or method of one's own: NIR's equations, discretised that way
        rp_dt = _rockpool_dt(nodes) if sem in (Semantics.AUTO, Semantics.ROCKPOOL) else None
        if sem is Semantics.AUTO:
            if graph_meta.get("edgeseq_semantics"):
                sem = Semantics(graph_meta["edgeseq_semantics"])
            elif _is_snntorch_export(nodes):
                sem = Semantics.SNNTORCH
            else:
                sem = Semantics.ROCKPOOL if rp_dt is not None else Semantics.NIR
        if sem is Semantics.ROCKPOOL:
            if rp_dt is None:
                raise ConfigError(
                    "the graph's neurons do not have Rockpool's export signature "
                    "(r = tau exp(-dt/tau)/dt, w_in = 1, v_leak = 0)",
                    where=where,
                )
            dt_default, method_default = rp_dt, "exact"
        self.semantics = sem
        self.dt = float(opts.dt if opts.dt is not None else graph_meta.get("edgeseq_dt", dt_default))
        self.method = opts.method or Discretization(graph_meta.get("edgeseq_method", method_default))
        if sem is Semantics.ROCKPOOL and self.method is not Discretization.EXACT:
            raise ConfigError("Rockpool's neurons decay by exp(-dt/tau) (the exact discretisation)", where="nir.method")
        if self.semantics is Semantics.SNNTORCH and self.method is not Discretization.EULER:
            raise ConfigError(
                "snntorch semantics are forward Euler (beta = 1 - dt/tau)",
                where="nir.method",
                hint="use semantics='nir' for the exact discretisation",
            )
        self.reset = opts.reset
        self.preds: dict[str, list[str]] = {n: [] for n in nodes}
        self.succ: dict[str, list[str]] = {n: [] for n in nodes}
        for s, d in edges:
            self.succ[s].append(d)
            self.preds[d].append(s)
        self.shape: dict[str, tuple[int, ...]] = {}
        self.value: dict[str, str] = {}
        self.map: dict[str, str] = {}
        self.cycles: dict[str, dict] = {}

    def where(self, name: str) -> str:
        return _where(self.src, name)

    # -- whole graph ---------------------------------------------------------------------------
    def run(self) -> Graph:
        inputs = [n for n in self.nodes if self.nodes[n].type == "Input" and "." not in n]
        if len(inputs) != 1:
            raise IRFormatError(
                f"edgeseq graphs take one input; the NIR graph has {len(inputs)} top-level Input nodes", where=self.src
            )
        inp = self.nodes[inputs[0]]
        shape = _shape_of(inp.p.get("shape", inp.p.get("input_type", [])))
        if not shape or min(shape) < 1:
            raise IRFormatError("Input node has no valid 'shape'", where=self.where(inp.name))
        self.builder = GraphBuilder(int(np.prod(shape)))
        self.shape[inp.name], self.value[inp.name] = shape, "x"
        outputs = [n for n in self.nodes if self.nodes[n].type == "Output" and "." not in n]
        if not outputs:
            raise IRFormatError("the NIR graph has no Output node", where=self.src)
        for n, p in self.preds.items():
            if not p and n != inp.name and self.nodes[n].type != "Input":
                raise IRFormatError("node has no incoming edge", where=self.where(n))
        comps = strongly_connected(list(self.nodes), self.succ)[::-1]
        for comp in comps:
            if len(comp) == 1 and comp[0] not in self.succ[comp[0]]:
                if comp[0] != inp.name:
                    self._node(self.nodes[comp[0]])
            else:
                self._cycle(comp)
        outs = [self.value[o] for o in outputs]
        md = {
            "source": f"nir:{Path(self.src).name}",
            "input_layout": "BTF",
            "input_shape": list(shape),
            "nir": {
                "semantics": self.semantics.value,
                "dt": self.dt,
                "method": self.method.value,
                "reset": None if self.reset is None else self.reset.value,
                "version": self.meta.get("nir_version"),
                "nodes": self.map,
            },
        }
        if self.cycles:
            md["nir"]["cycles"] = self.cycles
        return self.builder.build(outs, md)

    # -- one acyclic node ------------------------------------------------------------------------
    def _input(self, node: NNode) -> tuple[str, tuple[int, ...]]:
        """The node's input value: the sum of its incoming edges (all of one shape)."""
        preds = self.preds[node.name]
        shapes = {self.shape[p] for p in preds}
        sizes = {int(np.prod(s)) for s in shapes}
        if len(sizes) != 1:
            raise ShapeError(f"incoming edges carry different sizes {sorted(sizes)}", where=self.where(node.name))
        cur = self.value[preds[0]]
        for p in preds[1:]:
            cur = self.builder.add(O.Add(), (cur, self.value[p]), f"{node.name}.sum")
        shape = self.shape[preds[0]] if len(shapes) == 1 else (sizes.pop(),)
        return cur, shape

    def _add(self, node: NNode, op: O.Op, x: str) -> str:
        try:
            v = self.builder.add(op, x, node.name)
        except EdgeseqError as e:
            e.where = self.where(node.name)
            raise
        self.map[node.name] = v if isinstance(v, str) else v[0]
        return v

    def _node(self, node: NNode) -> None:
        x, shape = self._input(node)
        n = int(np.prod(shape))
        w = self.where(node.name)
        t, p = node.type, node.p
        out_shape = shape
        if t in ("Input", "Output"):
            y = x
        elif t == "Flatten":
            y, out_shape = x, (n,)
        elif t in ("Affine", "Linear"):
            W = p["weight"]
            if W.ndim != 2:
                raise ShapeError(f"{t} weight must be 2-D (out, in), got shape {W.shape}", where=w)
            if W.shape[1] != n:
                raise ShapeError(f"{t} weight expects {W.shape[1]} inputs, the node receives {n}", where=w)
            if t == "Affine" and p["bias"].shape not in ((W.shape[0],), (), (1,)):
                raise ShapeError(f"Affine bias must have shape ({W.shape[0]},), got {p['bias'].shape}", where=w)
            bias = None if t == "Linear" else np.broadcast_to(p["bias"], (W.shape[0],))
            y, out_shape = self._add(node, O.Linear(weight=W, bias=bias), x), (W.shape[0],)
        elif t == "Scale":
            s = np.broadcast_to(p["scale"], shape).reshape(-1) if p["scale"].size in (1, n) else None
            if s is None:
                raise ShapeError(f"Scale has {p['scale'].size} factors for {n} inputs", where=w)
            y = self._add(node, O.Linear(weight=np.diag(s)), x)
        elif t in ("Conv1d", "Conv2d", "SumPool2d", "AvgPool2d"):
            mat, off, out_shape = (_conv_map if t.startswith("Conv") else _pool_map)(node, shape, w)
            bias = None if off is None or not np.any(off) else off
            y = self._add(node, O.Linear(weight=mat, bias=bias), x)
        elif t == "Threshold":
            thr = self._vec(node, "threshold", n)
            y = self._add(node, O.LeakyNeuron(decay=0.0, threshold=thr, reset=ResetRule.NONE), x)
        elif t == "Delay":
            y = self._delay(node, x, n)
        elif t in NEURONS:
            y = self._neuron(node, x, n)
        else:  # pragma: no cover - SUPPORTED and this chain agree
            raise UnsupportedOpError(f"NIR node type '{t}' is not supported", where=w)
        self.value[node.name], self.shape[node.name] = y, tuple(out_shape)

    def _vec(self, node: NNode, key: str, n: int, default=None) -> Optional[np.ndarray]:
        if key not in node.p:
            return None if default is None else np.full(n, float(default))
        a = node.p[key]
        if a.size == 1:
            return np.full(n, float(a.reshape(-1)[0]))
        if a.size != n:
            raise ShapeError(f"'{key}' has {a.size} values for {n} neurons", where=self.where(node.name))
        return a.reshape(-1)

    def _delay(self, node: NNode, x: str, n: int) -> str:
        d = self._vec(node, "delay", n) / self.dt
        steps = np.rint(d)
        if np.any(np.abs(d - steps) > 1e-6 * np.maximum(1.0, d)) or np.any(steps < 0):
            raise ConfigError(
                f"delays must be whole multiples of dt={self.dt:g} s",
                where=self.where(node.name),
                hint="pass nir dt that divides every delay",
            )
        k = int(steps.max()) + 1
        if k == 1:
            return x
        w = np.zeros((n, 1, k))
        w[np.arange(n), 0, k - 1 - steps.astype(int)] = 1.0
        return self._add(node, O.Conv1d(weight=w, groups=n), x)

    # -- neurons -------------------------------------------------------------------------------
    def neuron_op(self, node: NNode, n: int) -> O.LeakyNeuron:
        """The LeakyNeuron of a NIR neuron under the chosen dt / method / reset (NIR semantics)."""
        p = {k: self._vec(node, k, n) for k in node.p if k in ("tau", "tau_mem", "tau_syn", "r", "v_leak", "w_in")}
        try:
            c = neuron_coefficients(p, self.dt, self.method)
        except ConfigError as e:
            e.where = self.where(node.name)
            raise
        spiking = node.type in SPIKING
        thr = self._vec(node, "v_threshold", n) if spiking else None
        reset = self.reset or ResetRule(node.meta.get("edgeseq_reset", "zero")) if spiking else ResetRule.ZERO
        v_reset = None
        if spiking and reset is ResetRule.ZERO:
            v_reset = self._vec(node, "v_reset", n)
            v_reset = None if v_reset is None or not np.any(v_reset) else v_reset
        one = lambda a: None if a is None or np.all(a == 1.0) else a  # noqa: E731
        return O.LeakyNeuron(
            decay=c["decay"],
            gain=one(c["gain"]),
            bias=c["bias"],
            syn_decay=c.get("syn_decay"),
            syn_gain=one(c.get("syn_gain")),
            threshold=thr,
            v_reset=v_reset,
            reset=reset if spiking else ResetRule.ZERO,
            emit="spikes" if spiking else "membrane",
        )

    def snn_neuron(self, node: NNode, n: int, rec: Optional[dict] = None) -> O.Op:
        """snntorch's own neuron for an exported LIF / CubaLIF (Leaky, Synaptic, RLeaky, RSynaptic)."""
        syn = node.type == "CubaLIF"
        beta = 1.0 - self.dt / self._vec(node, "tau_mem" if syn else "tau", n)
        alpha = 1.0 - self.dt / self._vec(node, "tau_syn", n) if syn else None
        default = ResetRule.ZERO if not syn and rec is None else ResetRule.ZERO_TOTAL
        reset = self.reset or ResetRule(node.meta.get("edgeseq_reset", default.value))
        if np.any(beta < 0) or (alpha is not None and np.any(alpha < 0)):
            raise ConfigError(
                f"tau < dt={self.dt:g}: snntorch's beta = 1 - dt/tau would be negative", where=self.where(node.name)
            )
        neuron = O.NeuronParams(beta=beta, threshold=self._vec(node, "v_threshold", n), alpha=alpha, reset=reset)
        cls = O.CuBaLIF if syn else O.LIF
        return cls(neuron=neuron, **(rec or {}))

    def rockpool_neuron(self, node: NNode, n: int) -> O.LeakyNeuron:
        """Rockpool's LIFTorch: i = a_syn (i + x); v = a_mem v + i; spike v > thr; v -= thr * spike."""
        syn = node.type == "CubaLIF"
        decay = np.exp(-self.dt / self._vec(node, "tau_mem" if syn else "tau", n))
        syn_decay = np.exp(-self.dt / self._vec(node, "tau_syn", n)) if syn else None
        reset = self.reset or ResetRule.SUBTRACT
        return O.LeakyNeuron(
            decay=decay,
            syn_decay=syn_decay,
            syn_gain=syn_decay,
            threshold=self._vec(node, "v_threshold", n),
            reset=reset,
            v_reset=None,
        )

    def _neuron(self, node: NNode, x: str, n: int) -> str:
        if self.semantics is Semantics.SNNTORCH and node.type in ("LIF", "CubaLIF"):
            return self._add(node, self.snn_neuron(node, n), x)
        if self.semantics is Semantics.ROCKPOOL and node.type in ("LIF", "CubaLIF"):
            return self._add(node, self.rockpool_neuron(node, n), x)
        return self._add(node, self.neuron_op(node, n), x)

    # -- cycles ----------------------------------------------------------------------------------
    def _cycle(self, comp: list[str]) -> None:
        from .nir_cycle import lower_cycle

        lower_cycle(self, comp)


def nir_to_graph(nodes, edges, where: str, opts: NirOptions, graph_meta: Optional[dict] = None) -> Graph:
    return _Converter(nodes, edges, where, opts, graph_meta or {}).run()


def load_nir(
    source, options: Optional[NirOptions] = None, *, metadata: Optional[Mapping[str, Any]] = None, **kw
) -> Graph:
    """A .nir file (path) or a ``nir.NIRGraph`` as an IR graph. ``options`` (or its fields as keyword
    arguments: dt, method, reset, semantics) choose the discretisation; see the module docstring."""
    opts = options if options is not None else NirOptions(**kw)
    if options is not None and kw:
        opts = dataclasses.replace(options, **kw)
    nodes, edges, where, md = read_nir(source)
    g = nir_to_graph(nodes, edges, where, opts, md)
    if metadata:
        g = g.with_nodes(g.nodes, **dict(metadata))
    return g
