"""IR graph -> TVM Relax IRModule.

Each node's plan (:mod:`.rules`) becomes ``R.call_tir`` bindings of generated PrimFuncs; weights
become Relax constants (embedded in the compiled library). Batch size ``B`` and sequence length
``T`` are symbolic: one compiled module runs any (B, T).

Two Relax functions can be built:

- ``main(x)``: whole sequence from the zero state; returns the graph output (a tuple when the
  graph has several outputs).
- ``stream(x, *state)``: one chunk from an explicit state, the state tensors in
  ``graph.state_spec()`` order with the batch axis first; returns ``(*outputs, *new_state)``.
  Pooled outputs after a chunk are the readout over every step seen so far, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax, tirx

from ...ir.graph import Graph
from .emit import Schedule
from .lint import check_kernels
from .plan import Call
from .rules import plan_node

FUNCTIONS = ("main", "stream")


@dataclass
class Lowered:
    mod: tvm.IRModule
    functions: tuple[str, ...]
    kernels: dict[str, str]  # PrimFunc name -> TVMScript source
    state_keys: tuple[str, ...]


def plan_graph(graph: Graph, sched: Schedule) -> dict[str, list[Call]]:
    """Every node's kernel calls (raises UnsupportedOpError before anything is compiled)."""
    return {n.name: plan_node(n, graph.input_types(n), sched) for n in graph.nodes}


def _parse(source: str) -> tirx.PrimFunc:
    return tvm.script.from_source(source)


def lower(graph: Graph, sched: Schedule, functions=("main",)) -> Lowered:
    plans = plan_graph(graph, sched)
    spec = graph.state_spec()
    bb = relax.BlockBuilder()
    by_source: dict[str, relax.GlobalVar] = {}
    names: dict[str, str] = {}

    def gvar(call: Call) -> relax.GlobalVar:
        src = call.kernel.source()
        if src in by_source:
            return by_source[src]
        name = call.kernel.name
        i = 1
        while name in names:
            name = f"{call.kernel.name}_{i}"
            i += 1
        if name != call.kernel.name:
            src = src.replace(f"def {call.kernel.name}(", f"def {name}(", 1)
        gv = bb.add_func(_parse(src), name)
        names[name] = src
        by_source[call.kernel.source()] = gv
        return gv

    for fname in functions:
        if fname not in FUNCTIONS:
            raise ValueError(fname)
        streaming = fname == "stream"
        bsym, tsym = tirx.Var("B", "int64"), tirx.Var("T", "int64")

        def shape(dims):
            return [bsym if d == "B" else tsym if d == "T" else int(d) for d in dims]

        x = relax.Var("x", relax.TensorType([bsym, tsym, graph.in_features], "float32"))
        params = [x]
        svars: dict[str, relax.Var] = {}
        if streaming:
            for i, (key, shp) in enumerate(spec.items()):
                v = relax.Var(f"state{i}", relax.TensorType(shape(("B", *shp)), "float32"))
                svars[key] = v
                params.append(v)
        with bb.function(fname, params):
            with bb.dataflow():
                env: dict[str, relax.Expr] = {graph.inputs[0].name: x}
                new_state: dict[str, relax.Expr] = {}
                for node in graph.nodes:
                    tmp: dict[str, relax.Expr] = {}

                    def resolve(ref: str):
                        if ref.startswith("in"):
                            return env[node.inputs[int(ref[2:])]]
                        if ref.startswith("tmp:"):
                            return tmp[ref[4:]]
                        if ref.startswith("state:"):
                            key = f"{node.name}/{ref[6:]}"
                            if streaming:
                                return svars[key]
                            return bb.emit(relax.op.zeros(relax.ShapeExpr(shape(("B", *spec[key]))), "float32"))
                        raise ValueError(ref)

                    for call in plans[node.name]:
                        args = []
                        for p in call.kernel.inputs():
                            if p.name in call.consts:
                                args.append(relax.const(call.consts[p.name]))
                            else:
                                args.append(resolve(call.ins[p.name]))
                        outs = call.kernel.outputs()
                        types = [relax.TensorType(shape(p.shape), p.dtype) for p in outs]
                        res = bb.emit(relax.call_tir(gvar(call), args, types))
                        vals = (
                            [res] if len(outs) == 1 else [bb.emit(relax.TupleGetItem(res, i)) for i in range(len(outs))]
                        )
                        for p, v in zip(outs, vals):
                            for ref in call.outs[p.name].split("|"):
                                if ref.startswith("out"):
                                    env[node.outputs[int(ref[3:])]] = v
                                elif ref.startswith("tmp:"):
                                    tmp[ref[4:]] = v
                                elif ref.startswith("state:"):
                                    new_state[f"{node.name}/{ref[6:]}"] = v
                                else:
                                    raise ValueError(ref)
                results = [env[o] for o in graph.outputs]
                if streaming:
                    results += [new_state[k] for k in spec]
                    ret = relax.Tuple(results)
                else:
                    ret = results[0] if len(results) == 1 else relax.Tuple(results)
                out = bb.emit_output(ret)
            bb.emit_func_output(out)
    mod = bb.get()
    check_kernels(mod)
    return Lowered(mod, tuple(functions), dict(names), tuple(spec))
