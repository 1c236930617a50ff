"""IR graphs -> NIR (the Neuromorphic Intermediate Representation), for spiking graphs.

    edgeseq export model.esq --target nir --out model_nir/      # model_nir/model.nir + manifest.json

Every neuron's continuous-time parameters are derived exactly for one step ``dt`` and one
discretisation (:mod:`edgeseq.ir.discretize`): those the graph was imported with, else forward
Euler at dt = 1e-4 (``target_options={"dt": ..., "method": "exact"}`` overrides). What NIR 1.0 cannot
state is written into node / graph metadata (``edgeseq_reset``: a subtractive reset;
``edgeseq_semantics``, ``edgeseq_dt``, ``edgeseq_method``: how to read the graph back; with a
quantized graph, ``edgeseq_int8_plan``: the int8 plan as JSON and each node's scales), so edgeseq
reads its own files back spike-identically; the export checks that before it returns.

Maps: Linear -> Affine / Linear; LeakyNeuron -> I / IF / LI / LIF / CubaLI / CubaLIF or Threshold;
snntorch LIF / CuBaLIF (Leaky, Synaptic, RLeaky, RSynaptic) -> LIF / CubaLIF in snntorch's own
convention (r = tau/dt, w_in = tau_syn/dt), their recurrence -> an Affine / Scale on a cycle; a
delay line (a one-hot depthwise Conv1d) -> Delay; Add -> two edges into one node. Other ops (GRU,
LSTM, LMU, norms, readouts, ...) have no NIR node and raise one error naming the node.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ..errors import ConfigError, UnsupportedOpError, VerificationError
from ..ir import ops as O
from ..ir.discretize import Discretization, continuous_parameters, synapse_parameters, tau_from_decay
from ..ir.graph import Graph
from ..ir.types import Recurrence, ResetRule

FORMAT = "edgeseq-nir/1"
DEFAULT_DT = 1e-4


def _f(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32) if np.asarray(a).ndim else np.asarray([a], dtype=np.float32)


class _Writer:
    def __init__(self, graph: Graph, dt: float, method: Discretization, semantics: str, quant=None):
        import nir

        self.nir, self.g, self.dt, self.method, self.semantics = nir, graph, dt, method, semantics
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.src: dict[str, list[str]] = {}  # IR value -> the NIR nodes whose outputs sum to it
        self.quant = quant
        rec = graph.metadata.get("nir") if isinstance(graph.metadata.get("nir"), dict) else {}
        self.cycles = rec.get("cycles") or {}

    def fail(self, node, why: str):
        return UnsupportedOpError(
            f"{node.op.kind} {why}",
            where=f"node '{node.name}'",
            hint="NIR holds spiking and linear layers only (no LSTM/GRU/LMU, norms or readouts)",
        )

    def connect(self, value: str, target: str) -> None:
        if value not in self.src:  # made by an op that has no NIR node (a Concat outside a cycle)
            node = self.g.producers()[value]
            raise self.fail(node, "has no NIR equivalent")
        for s in self.src[value]:
            self.edges.append((s, target))

    def meta(self, node) -> dict:
        md: dict = {}
        if self.quant is not None:
            plan = self.quant.plan
            for name, e in plan.entries.items():
                if name == node.name or name.startswith((node.name + "/", node.name + ":")):
                    md[f"int8_scale.{name.replace('/', '|')}"] = np.asarray(e.scale, dtype=np.float64).reshape(-1)
        return md

    def run(self):
        nir, g = self.nir, self.g
        self.nodes["input"] = nir.Input(input_type={"input": np.array([g.in_features])})
        self.src[g.inputs[0].name] = ["input"]
        for node in g.nodes:
            self.node(node)
        for i, out in enumerate(g.outputs):
            name = "output" if len(g.outputs) == 1 else f"output{i}"
            self.nodes[name] = nir.Output(output_type={"output": np.array([g.type_of(out).features])})
            self.connect(out, name)
        md = {"edgeseq_semantics": self.semantics, "edgeseq_dt": float(self.dt), "edgeseq_method": self.method.value}
        if self.quant is not None:
            md["edgeseq_int8_plan"] = json.dumps(self.quant.plan.to_dict(), default=_jsonable)
        return nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=md, type_check=False)

    def put(self, node, nir_node, name: Optional[str] = None) -> str:
        name = name or node.name
        md = self.meta(node)
        if md:
            nir_node.metadata = {**(nir_node.metadata or {}), **md}
        self.nodes[name] = nir_node
        return name

    def node(self, node) -> None:
        nir, op = self.nir, node.op
        if isinstance(op, O.Add):
            self.src[node.outputs[0]] = self.src[node.inputs[0]] + self.src[node.inputs[1]]
            return
        if isinstance(op, O.Linear):
            w = _f(op.weight)
            n = self.put(node, nir.Linear(weight=w) if op.bias is None else nir.Affine(weight=w, bias=_f(op.bias)))
        elif isinstance(op, O.LeakyNeuron):
            n = self.put(node, self.leaky(node, op))
        elif isinstance(op, (O.LIF, O.CuBaLIF)):
            n = self.snn(node, op)
        elif isinstance(op, O.Conv1d):
            n = self.put(node, self.delay(node, op))
        elif isinstance(op, O.Concat):
            return  # the joint input of a recurrent cycle: the cycle's nodes connect to the parts
        elif isinstance(op, O.Scan) and node.name in self.cycles:
            return self.cycle(node, self.cycles[node.name])
        else:
            raise self.fail(node, "has no NIR equivalent")
        self.connect(node.inputs[0], n if not isinstance(n, tuple) else n[0])
        self.src[node.outputs[0]] = [n if not isinstance(n, tuple) else n[1]]

    # -- recurrent cycles read from NIR ---------------------------------------------------------
    def cycle(self, node, rec: dict) -> None:
        """A cycle the NIR reader turned into a Scan: its nodes again, parameters from the program."""
        nir, params = self.nir, node.op.program.params
        names = {c["name"]: f"{node.name}.{c['tag']}" for c in rec["nodes"]}

        def get(tag, field):
            return params.get(f"{tag}.{field}")

        for c in rec["nodes"]:
            t, tag = c["type"], c["tag"]
            if t in ("Affine", "Linear"):
                w = _f(get(tag, "weight"))
                out = nir.Linear(weight=w) if t == "Linear" else nir.Affine(weight=w, bias=_f(get(tag, "bias")))
            elif t == "Scale":
                out = nir.Scale(scale=_f(get(tag, "scale")))
            elif t == "Threshold":
                out = nir.Threshold(threshold=_f(get(tag, "threshold")))
            else:
                spiking = get(tag, "threshold") is not None
                op = O.LeakyNeuron(
                    decay=get(tag, "decay"),
                    gain=get(tag, "gain"),
                    bias=get(tag, "bias"),
                    syn_decay=get(tag, "syn_decay"),
                    syn_gain=get(tag, "syn_gain"),
                    threshold=get(tag, "threshold"),
                    v_reset=get(tag, "v_reset"),
                    reset=c.get("reset", "zero"),
                    emit="spikes" if spiking else "membrane",
                )
                n = int(np.asarray(op.decay).size) if np.asarray(op.decay).size > 1 else None
                out = self.leaky(node, op, n)
            self.nodes[names[c["name"]]] = out
        self.edges += [(names[s], names[d]) for s, d in rec["edges"]]
        for value, dst in rec["inputs"]:
            self.connect(value, names[dst])
        for k, out_name in enumerate(rec["outputs"]):
            self.src[node.outputs[k]] = [names[out_name]]

    # -- neurons -------------------------------------------------------------------------------
    def leaky(self, node, op: O.LeakyNeuron, n: Optional[int] = None):
        nir = self.nir
        n = n or self.g.type_of(node.inputs[0]).features
        full = lambda a, d=None: (
            None
            if a is None and d is None
            else np.broadcast_to(  # noqa: E731
                np.asarray(d if a is None else a, dtype=np.float64), (n,)
            ).astype(np.float32)
        )
        if op.emit != ("spikes" if op.spiking else "membrane"):
            raise self.fail(
                node,
                f"emitting '{op.emit}' has no NIR equivalent (NIR neurons emit spikes, or the "
                "membrane when they do not spike)",
            )
        if (
            op.spiking
            and not op.synaptic
            and op.reset is ResetRule.NONE
            and np.all(op.decay == 0)
            and op.gain is None
            and op.bias is None
        ):
            return nir.Threshold(threshold=full(op.threshold))
        decay = np.broadcast_to(np.asarray(op.decay, np.float64), (n,))
        try:
            mem = continuous_parameters(decay, 1.0 if op.gain is None else op.gain, op.bias, self.dt, self.method)
            syn = synapse_parameters(op.syn_decay, op.syn_gain, self.dt, self.method) if op.synaptic else None
        except ConfigError as e:
            raise self.fail(node, f"has no NIR equivalent: {e.message}") from None
        md = {}
        if op.spiking and op.reset is not ResetRule.ZERO:
            md["edgeseq_reset"] = op.reset.value
        thr = full(op.threshold) if op.spiking else None
        v_reset = full(op.v_reset, 0.0) if op.spiking else None
        r = full(mem["r"])
        if "tau" not in mem:  # an integrator
            if op.synaptic:
                raise self.fail(node, "with a synapse and no leak has no NIR equivalent")
            out = nir.IF(r=r, v_threshold=thr, v_reset=v_reset) if op.spiking else nir.I(r=r)
        elif op.synaptic:
            kw = dict(
                tau_syn=full(syn["tau_syn"]),
                tau_mem=full(mem["tau"]),
                r=r,
                v_leak=full(mem["v_leak"]),
                w_in=full(syn["w_in"]),
            )
            out = nir.CubaLIF(v_threshold=thr, v_reset=v_reset, **kw) if op.spiking else nir.CubaLI(**kw)
        else:
            kw = dict(tau=full(mem["tau"]), r=r, v_leak=full(mem["v_leak"]))
            out = nir.LIF(v_threshold=thr, v_reset=v_reset, **kw) if op.spiking else nir.LI(**kw)
        if md:
            out.metadata = {**(out.metadata or {}), **md}
        return out

    def snn(self, node, op):
        """snntorch's Leaky / Synaptic (+ recurrence) in snntorch's NIR convention."""
        nir, nrn = self.nir, op.neuron
        n = self.g.type_of(node.inputs[0]).features
        if self.semantics != "snntorch":
            raise self.fail(node, "(snntorch semantics) cannot share a NIR graph with NIR-semantics neurons")
        if op.emit != "spikes" or not nrn.reset_delay or nrn.spike_scale is not None:
            raise self.fail(node, "with output=True, reset_delay=False or graded spikes has no NIR equivalent")
        full = lambda a: np.broadcast_to(np.asarray(a, np.float64), (n,))  # noqa: E731
        beta = full(nrn.beta)
        tau = tau_from_decay(beta, self.dt, Discretization.EULER)
        kw = dict(
            r=_f(tau / self.dt),
            v_leak=np.zeros(n, np.float32),
            v_threshold=_f(full(nrn.threshold)),
            v_reset=np.zeros(n, np.float32),
        )
        if nrn.synaptic:
            tau_syn = tau_from_decay(full(nrn.alpha), self.dt, Discretization.EULER)
            out = nir.CubaLIF(tau_syn=_f(tau_syn), tau_mem=_f(tau), w_in=_f(tau_syn / self.dt), **kw)
        else:
            out = nir.LIF(tau=_f(tau), **kw)
        default = ResetRule.ZERO if isinstance(op, O.LIF) and op.recurrence is Recurrence.NONE else ResetRule.ZERO_TOTAL
        if nrn.reset is not default:
            out.metadata = {"edgeseq_reset": nrn.reset.value}
        if op.recurrence is Recurrence.NONE:
            return self.put(node, out)
        lif, rec = f"{node.name}.lif", f"{node.name}.w_rec"
        self.put(node, out, lif)
        if op.recurrence is Recurrence.ONE_TO_ONE:
            self.nodes[rec] = nir.Scale(scale=_f(full(op.v_rec)))
        else:
            w = _f(op.w_rec)
            self.nodes[rec] = nir.Linear(weight=w) if op.b_rec is None else nir.Affine(weight=w, bias=_f(op.b_rec))
        self.edges += [(lif, rec), (rec, lif)]
        return lif, lif

    def delay(self, node, op: O.Conv1d):
        w = np.asarray(op.weight)
        n = w.shape[0]
        taps = w.reshape(n, -1)
        if (
            op.groups != n
            or w.shape[1] != 1
            or op.bias is not None
            or op.dilation != 1
            or not np.all((taps == 0) | (taps == 1))
            or not np.all(taps.sum(1) == 1)
        ):
            raise self.fail(node, "that is not a delay line has no NIR equivalent (NIR's Conv1d is spatial)")
        steps = (w.shape[2] - 1) - np.argmax(taps, axis=1)
        return self.nir.Delay(delay=_f(steps * self.dt))


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    raise TypeError(type(v).__name__)


def _settings(graph: Graph, options: Mapping[str, Any]) -> tuple[float, Discretization, str]:
    rec = graph.metadata.get("nir") if isinstance(graph.metadata.get("nir"), dict) else {}
    dt = float(options.get("dt", rec.get("dt", DEFAULT_DT)))
    if not (np.isfinite(dt) and dt > 0):
        raise ConfigError(f"dt must be a positive number of seconds, got {dt}", where="nir dt")
    try:
        method = Discretization(options.get("method", rec.get("method", "euler")))
    except ValueError:
        raise ConfigError(f"unknown discretisation '{options.get('method')}'; choose euler or exact") from None
    snn = any(isinstance(n.op, (O.LIF, O.CuBaLIF)) for n in graph.nodes)
    semantics = "snntorch" if snn else "nir"
    if snn and method is not Discretization.EULER:
        raise ConfigError("snntorch neurons are forward Euler (beta = 1 - dt/tau)", where="nir method")
    return dt, method, semantics


def to_nir(graph: Graph, *, dt: Optional[float] = None, method=None, quant=None):
    """The ``nir.NIRGraph`` of ``graph`` (see the module docstring)."""
    opts = {k: v for k, v in (("dt", dt), ("method", method)) if v is not None}
    d, m, sem = _settings(graph, opts)
    return _Writer(graph, d, m, sem, quant).run()


def _probes(graph: Graph, back: Graph) -> tuple[list[str], list[str]]:
    """Matching values of ``graph`` and its read-back ``back``: every node's first output (found
    through the NIR node names the importer records), then the graph outputs."""
    names = back.metadata.get("nir", {}).get("nodes", {})
    mine, theirs = [], []
    for node in graph.nodes:
        for nir_name in (node.name, f"{node.name}.lif"):
            if nir_name in names and names[nir_name] in back.value_types:
                mine.append(node.outputs[0])
                theirs.append(names[nir_name])
                break
    return mine + list(graph.outputs), theirs + list(back.outputs)


def check_round_trip(graph: Graph, path: Path, lengths=(24, 57), batches=(1, 3), seed: int = 0) -> dict:
    """Read ``path`` back and compare with ``graph`` on random spike trains at two lengths and batch
    sizes, every node's output: spikes must be identical, other values within float32 rounding of the
    parameters. Returns what was compared."""
    from ..frontends.nir import load_nir
    from ..ir.interpret import run

    back = load_nir(path)
    mine, theirs = _probes(graph, back)
    g1, g2 = graph.with_nodes(graph.nodes, mine), back.with_nodes(back.nodes, theirs)
    rng = np.random.default_rng(seed)
    worst, spikes = 0.0, 0
    for T, B in zip(lengths, batches):
        for amp in (1.5, 6.0):
            x = (rng.random((B, T, graph.in_features)) < 0.3).astype(np.float64) * amp
            want, _ = run(g1, x)
            got, _ = run(g2, x)
            for k, (a, b) in enumerate(zip(want, got)):
                if g1.output_types[k].spikes or g2.output_types[k].spikes:
                    bad = int(np.sum(a != b))
                    if bad:
                        raise VerificationError(
                            f"NIR round trip changes {bad} of {a.size} spikes of value '{mine[k]}' (T={T}, B={B})",
                            where=str(path),
                        )
                    spikes += int(a.sum())
                else:
                    worst = max(worst, float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(a))))))
    if worst > 1e-4:
        raise VerificationError(f"NIR round trip changes values by {worst:.3g} (relative)", where=str(path))
    return {
        "lengths": list(lengths),
        "batches": list(batches),
        "values_compared": len(mine),
        "spikes_compared": spikes,
        "max_rel_diff": worst,
    }


def export_nir(graph: Graph, out, *, force: bool = False, quant=None, options: Optional[Mapping] = None, say=None):
    """Write ``out/model.nir`` and ``out/manifest.json``; returns (out path, manifest)."""
    import nir

    from .._version import __version__
    from ..util.fs import atomic_write_json, check_output_dir, output_dir, sha256_file

    say = say or (lambda m: None)
    dt, method, sem = _settings(graph, dict(options or {}))
    check_output_dir(out, force)
    ng = _Writer(graph, dt, method, sem, quant).run()
    with output_dir(out, force) as stage:
        say(f"nir: writing model.nir (dt={dt:g} s, {method.value}, {sem} semantics), reading it back")
        nir.write(str(stage / "model.nir"), ng)
        checked = check_round_trip(graph, stage / "model.nir")
        manifest = {
            "format": FORMAT,
            "edgeseq_version": __version__,
            "nir_version": nir.version,
            "target": "nir",
            "model": "model.nir",
            "dt": dt,
            "method": method.value,
            "semantics": sem,
            "numerics": "float32" if quant is None else "float32 (int8 plan in metadata)",
            "round_trip": checked,
            "files": {"model.nir": sha256_file(stage / "model.nir")},
        }
        atomic_write_json(stage / "manifest.json", manifest)
    return Path(out), manifest
