"""IR contract: verifier, exact serialisation round trip, corrupt files, state contract, and
chunked execution being bit-identical to whole-sequence execution."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch

import edgeseq
from edgeseq.errors import IRFormatError, NumericsError, ShapeError, VerificationError
from edgeseq.ir import GraphBuilder, load, struct_equal
from edgeseq.ir import ops as O
from edgeseq.ir.graph import Graph, Input, Node
from edgeseq.ir.interpret import run, run_chunked
from edgeseq.ir.serialize import from_bytes, to_bytes

from .zoo_cases import ZOO, build


@pytest.fixture(scope="module")
def zoo_graphs():
    return {case: edgeseq.capture(build(case), torch.randn(2, 8, 6)) for case in ZOO}


def gru_graph(rng, h=8, i=6):
    b = GraphBuilder(i)
    y = b.add(O.GRU(w_ih=rng.standard_normal((3 * h, i)), w_hh=rng.standard_normal((3 * h, h))), "x", "gru")
    r = b.add(O.Readout(mode="mean"), y)
    return b.build(b.add(O.Linear(weight=rng.standard_normal((3, h)), bias=np.zeros(3)), r, "fc"))


# ---------------------------------------------------------------- execution


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_chunked_equals_whole_exactly(zoo_graphs, chunk):
    rng = np.random.default_rng(chunk)
    x = rng.standard_normal((3, 41, 6)) * 2
    for case, g in zoo_graphs.items():
        whole, s_whole = run(g, x)
        parts, s_parts = run_chunked(g, x, chunk)
        for a, b in zip(whole, parts):
            assert np.array_equal(a, b), case
        assert s_whole.keys() == s_parts.keys()
        for k in s_whole:
            assert np.array_equal(s_whole[k], s_parts[k]), (case, k)


def test_state_contract(rng):
    g = gru_graph(rng)
    assert g.state_spec() == {"gru/h": (8,), "readout/sum": (8,), "readout/count": (1,)}
    x = rng.standard_normal((2, 5, 6))
    _, st = edgeseq.reference(g, x)
    assert {k: v.shape for k, v in st.items()} == {"gru/h": (2, 8), "readout/sum": (2, 8), "readout/count": (2, 1)}
    with pytest.raises(ShapeError, match="missing: gru/h"):
        edgeseq.reference(g, x, {k: v for k, v in st.items() if k != "gru/h"})
    with pytest.raises(ShapeError, match="unexpected: bogus"):
        edgeseq.reference(g, x, {**st, "bogus": np.zeros(1)})
    with pytest.raises(ShapeError, match=r"state 'gru/h' must have shape \(2, 8\)"):
        edgeseq.reference(g, x, {**st, "gru/h": np.zeros((2, 7))})


@pytest.mark.parametrize(
    "x,err,pattern",
    [
        (np.zeros((5, 6)), ShapeError, "shape \\(batch, time, 6\\)"),
        (np.zeros((1, 5, 4)), ShapeError, "4 features per step; the model expects 6"),
        (np.zeros((1, 0, 6)), ShapeError, "at least one"),
        (np.full((1, 3, 6), np.nan), NumericsError, "NaN"),
    ],
)
def test_bad_inputs(rng, x, err, pattern):
    with pytest.raises(err, match=pattern):
        edgeseq.reference(gru_graph(rng), x)


def test_reference_returns_tuple_for_multi_output(rng):
    b = GraphBuilder(3)
    spk, mem = b.add(O.LIF(neuron=O.NeuronParams(beta=0.9, threshold=1.0), emit="both"), "x", "lif")
    g = b.build([spk, mem])
    (s, m), _ = edgeseq.reference(g, rng.standard_normal((2, 4, 3)) * 3)
    assert s.shape == m.shape == (2, 4, 3)
    assert set(np.unique(s)) <= {0.0, 1.0}


# ---------------------------------------------------------------- serialisation


def test_exact_round_trip(zoo_graphs, tmp_path):
    for case, g in zoo_graphs.items():
        path = tmp_path / f"{case}.esq"
        g.save(path)
        g2 = edgeseq.load(path)
        assert [n.name for n in g2.nodes] == [n.name for n in g.nodes]
        assert g2.outputs == g.outputs and g2.inputs == g.inputs and g2.metadata == g.metadata
        for a, b in zip(g.nodes, g2.nodes):
            assert struct_equal(a.op, b.op), (case, a.name)
        x = np.random.default_rng(0).standard_normal((2, 9, 6))
        for a, b in zip(run(g, x)[0], run(g2, x)[0]):
            assert np.array_equal(a, b)
        assert to_bytes(g2) == to_bytes(g), "serialisation is deterministic"


def test_no_pickle_in_files(zoo_graphs):
    data = to_bytes(zoo_graphs["l2mu"])
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name in z.namelist():
            if name.endswith(".npy"):
                np.load(io.BytesIO(z.read(name)), allow_pickle=False)  # would raise on object arrays
    assert b"cnumpy" not in data


def _rewrite(data: bytes, fn) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in src.namelist():
            content = fn(name, src.read(name))
            if content is not None:
                z.writestr(name, content)
    return out.getvalue()


def test_corrupt_files(rng, tmp_path):
    data = to_bytes(gru_graph(rng))
    cases = {
        "truncated": data[: len(data) // 2],
        "garbage": b"not a zip at all",
        "empty": b"",
        "no_graph": _rewrite(data, lambda n, c: None if n == "graph.json" else c),
        "bad_json": _rewrite(data, lambda n, c: b"{oops" if n == "graph.json" else c),
        "flipped_array": _rewrite(data, lambda n, c: c[:-1] + bytes([c[-1] ^ 1]) if n.endswith(".npy") else c),
        "missing_array": _rewrite(data, lambda n, c: None if n.endswith("w_hh.npy") else c),
    }
    for name, blob in cases.items():
        p = tmp_path / f"{name}.esq"
        p.write_bytes(blob)
        with pytest.raises(IRFormatError) as ei:
            load(p)
        assert str(p) in str(ei.value), name


def test_schema_version_and_unknown_kind(rng):
    data = to_bytes(gru_graph(rng))

    def edit(fn):
        def go(name, content):
            if name != "graph.json":
                return content
            doc = json.loads(content)
            fn(doc)
            return json.dumps(doc)

        return _rewrite(data, go)

    with pytest.raises(IRFormatError, match="schema version 99 is not supported.*upgrade edgeseq"):
        from_bytes(edit(lambda d: d.update(schema_version=99)))
    with pytest.raises(IRFormatError, match="unknown op kind 'Transformer'"):
        from_bytes(edit(lambda d: d["nodes"][0].update(kind="Transformer")))
    with pytest.raises(IRFormatError, match="unknown attribute 'bogus'"):
        from_bytes(edit(lambda d: d["nodes"][0]["attrs"].update(bogus=1)))


def test_nan_in_saved_weights_is_named(rng):
    g = gru_graph(rng)

    def poison(name, content):
        if name.endswith("w_hh.npy"):
            a = np.load(io.BytesIO(content))
            a[0, 0] = np.nan
            buf = io.BytesIO()
            np.save(buf, a)
            return buf.getvalue()
        return content

    data = _rewrite(to_bytes(g), poison)
    # re-hash so only the NaN (not the checksum) is wrong
    doc = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("graph.json"))
    import hashlib

    for key in doc["arrays"]:
        doc["arrays"][key]["sha256"] = hashlib.sha256(
            zipfile.ZipFile(io.BytesIO(data)).read(f"arrays/{key}.npy")
        ).hexdigest()
    data = _rewrite(data, lambda n, c: json.dumps(doc).encode() if n == "graph.json" else c)
    with pytest.raises(NumericsError, match="node 'gru' .*'w_hh' has 1 NaN"):
        from_bytes(data)


# ---------------------------------------------------------------- verifier


def test_verifier_rejects_bad_graphs(rng):
    lin = O.Linear(weight=rng.standard_normal((4, 6)))
    with pytest.raises(VerificationError, match="not defined before"):
        Graph((Input("x", 6),), (Node("a", lin, ("y",), ("a",)),), ("a",))
    with pytest.raises(VerificationError, match="duplicate node name"):
        Graph((Input("x", 6),), (Node("a", lin, ("x",), ("a",)), Node("a", lin, ("x",), ("b",))), ("a",))
    with pytest.raises(VerificationError, match="graph output 'z'"):
        Graph((Input("x", 6),), (Node("a", lin, ("x",), ("a",)),), ("z",))
    with pytest.raises(ShapeError, match="node 'a' .*expects 6 input features, got 5"):
        Graph((Input("x", 5),), (Node("a", lin, ("x",), ("a",)),), ("a",))
    bad_gru = O.GRU(w_ih=rng.standard_normal((9, 6)), w_hh=rng.standard_normal((12, 4)))
    with pytest.raises(ShapeError, match="node 'g' .*needs w_ih/w_hh with 12 rows"):
        Graph((Input("x", 6),), (Node("g", bad_gru, ("x",), ("g",)),), ("g",))
    nan_lin = O.Linear(weight=np.full((2, 6), np.inf))
    with pytest.raises(NumericsError, match="node 'n'.*'weight' has 12 NaN/Inf"):
        Graph((Input("x", 6),), (Node("n", nan_lin, ("x",), ("n",)),), ("n",))
    ro = O.Readout(mode="last")
    with pytest.raises(ShapeError, match="needs a temporal"):
        Graph((Input("x", 6),), (Node("r", ro, ("x",), ("r",)), Node("r2", ro, ("r",), ("r2",))), ("r2",))
    with pytest.raises(VerificationError, match="invalid node name"):
        Graph((Input("x", 6),), (Node("a/b", lin, ("x",), ("a",)),), ("a",))


def test_ops_are_frozen(rng):
    op = O.Linear(weight=rng.standard_normal((2, 3)))
    with pytest.raises(Exception):
        op.weight = None
    with pytest.raises(ValueError):
        op.weight[0, 0] = 1.0


def test_import_edgeseq_is_cheap():
    import subprocess
    import sys

    code = (
        "import sys, edgeseq; edgeseq.__version__; "
        "bad=[m for m in ('torch','onnxruntime','tvm','onnx','snntorch') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import edgeseq pulled in: {out}"
    code = (
        "import sys, edgeseq.ir; print('torch' in sys.modules or 'onnxruntime' in sys.modules or 'tvm' in sys.modules)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
