"""The Python API raises only edgeseq's typed errors (EdgeseqError) for bad input: every public
function is called with bad values for each of its arguments (wrong types, missing files,
devices, ragged or non-numeric arrays, NaN / Inf, wrong shapes, unknown names), the others valid."""

from __future__ import annotations

import os

import numpy as np
import pytest

import edgeseq
from edgeseq.errors import EdgeseqError

NAN_X = np.full((1, 4, 3), np.nan, np.float32)
RAGGED = [[[1.0, 2.0, 3.0]], [[1.0, 2.0]]]
BAD_PATHS = [None, 123, 1.5, "", b"bytes", [], {}, "/nonexistent/file", "/dev/zero", "/"]
BAD_ARRAYS = [
    None,
    "abc",
    RAGGED,
    np.zeros((4, 3)),
    np.zeros((1, 4, 5)),
    np.zeros((0, 4, 3)),
    NAN_X,
    np.array([[["a", "b", "c"]]]),
    np.array([object()], dtype=object),
    {"x": 1},
    7,
]


@pytest.fixture(scope="module")
def api(bad_fixtures, tmp_path_factory):
    from edgeseq.export import load_artifact
    from edgeseq.quant import load_quantized

    tmp = tmp_path_factory.mktemp("api")
    return {
        "graph": edgeseq.load(bad_fixtures.esq),
        "q": load_quantized(bad_fixtures.qesq),
        "art": load_artifact(bad_fixtures.onnx),
        "fx": bad_fixtures,
        "tmp": tmp,
        "x": np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32),
    }


def _typed(fn, *args, **kw):
    with pytest.raises(EdgeseqError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert msg and "\n" not in msg, repr(msg)


def _calls(api):
    """(name, callable) pairs: each must raise EdgeseqError."""
    from edgeseq.export import load_artifact
    from edgeseq.models import load_model
    from edgeseq.quant import load_quantized
    from edgeseq.train import load_checkpoint, read_checkpoint
    from edgeseq.validate import open_artifact

    g, q, art, x, fx, tmp = api["graph"], api["q"], api["art"], api["x"], api["fx"], api["tmp"]
    calls = []
    fifo = tmp / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    (tmp / "file.txt").write_text("x")
    # bad places to write: never a real system path (a writer that accepted one would damage the machine)
    bad_out = [
        None,
        123,
        1.5,
        "",
        b"bytes",
        [],
        {},
        str(tmp),
        str(fifo),
        str(tmp / "file.txt" / "sub"),
        str(tmp / ("n" * 300)),
        "a\x00b",
    ]
    for p in bad_out:
        calls.append((f"Graph.save({p!r:.40})", lambda p=p: g.save(p)))
        calls.append((f"QuantizedGraph.save({p!r:.40})", lambda p=p: q.save(p)))
        calls.append((f"export(out={p!r:.40})", lambda p=p: edgeseq.export(g, target="onnx", out=p)))
    for p in BAD_PATHS:
        for name, fn in (
            ("load", edgeseq.load),
            ("load_quantized", load_quantized),
            ("load_artifact", load_artifact),
            ("open_artifact", open_artifact),
            ("read_checkpoint", read_checkpoint),
            ("load_checkpoint", load_checkpoint),
            ("load_model", load_model),
            ("validate", edgeseq.validate),
        ):
            calls.append((f"{name}({p!r})", lambda fn=fn, p=p: fn(p)))
    for a in BAD_ARRAYS:
        calls += [
            (f"reference(x={a!r:.30})", lambda a=a: edgeseq.reference(g, a)),
            (f"Artifact.run({a!r:.30})", lambda a=a: art.run(a)),
            (f"QuantizedGraph.run({a!r:.30})", lambda a=a: q.run(a)),
            (f"QuantizedGraph.run(fake, {a!r:.30})", lambda a=a: q.run(a, mode="fake")),
            (f"quantize(calib={a!r:.30})", lambda a=a: edgeseq.quantize(g, a)),
        ]
        if a is not None:  # None: the default golden input
            calls.append(
                (
                    f"export(golden_input={a!r:.30})",
                    lambda a=a: edgeseq.export(g, target="onnx", out=tmp / "o", golden_input=a),
                )
            )
    for st in (
        [1, 2],
        "state",
        {"rnn/h": np.full((2, 8), np.nan)},
        {"rnn/h": np.zeros((3, 8))},
        {"bogus": 1},
        {"rnn/h": RAGGED},
    ):
        calls.append((f"reference(state={st!r:.30})", lambda st=st: edgeseq.reference(g, x, st)))
    for bad_graph in (None, 123, "g.esq", np.zeros(3)):
        calls += [
            (f"reference(graph={bad_graph!r:.20})", lambda b=bad_graph: edgeseq.reference(b, x)),
            (f"quantize(graph={bad_graph!r:.20})", lambda b=bad_graph: edgeseq.quantize(b, x)),
            (f"export(model={bad_graph!r:.20})", lambda b=bad_graph: edgeseq.export(b, target="onnx", out=tmp / "o2")),
        ]
    for target in (5, "riscv", None, "onnx:cortex-a72", ["onnx"]):
        calls.append((f"export(target={target!r})", lambda t=target: edgeseq.export(g, target=t, out=tmp / "o3")))
    for quant in ("abc", 5, g):
        calls.append(
            (
                f"export(quant={quant!r:.20})",
                lambda qq=quant: edgeseq.export(g, target="onnx", out=tmp / "o4", quant=qq),
            )
        )
    calls.append(
        (
            "export(other model's plan)",
            lambda: edgeseq.export(g, target="onnx", out=tmp / "o5", quant=load_quantized(fx.other_qesq)),
        )
    )
    for cfg in (5, "fancy", {"bogus": 1}, [1]):
        calls.append((f"quantize(config={cfg!r})", lambda c=cfg: edgeseq.quantize(g, x, c)))
    for mode in ("fast", 5, None):
        calls.append((f"QuantizedGraph.run(mode={mode!r})", lambda m=mode: q.run(x, mode=m)))
    for runtime in ("gpu", 5, ["c"]):
        calls.append((f"Artifact.run(runtime={runtime!r})", lambda r=runtime: art.run(x, runtime=r)))
    calls.append(("Artifact.cost(onnx)", lambda: art.cost(x)))
    for kw in (
        {"reference": "tpu"},
        {"reference": 5},
        {"samples": 0},
        {"samples": "many"},
        {"samples": 2.5},
        {"data": 5},
        {"data": "mnist"},
        {"data": RAGGED},
        {"tolerance": 5},
        {"tolerance": "/nonexistent.json"},
        {"tolerance": {"bogus": 1}},
        {"graph": 5},
        {"graph": "/nonexistent.esq"},
        {"batch": 0},
        {"out": fx.esq},
    ):
        calls.append((f"validate({kw!r:.40})", lambda kw=kw: edgeseq.validate(fx.onnx, measure=False, **kw)))
    for bad in (None, 123, "x"):
        calls.append((f"capture({bad!r})", lambda b=bad: edgeseq.capture(b, x)))
        calls.append((f"prune({bad!r})", lambda b=bad: edgeseq.prune(b, None)))
    for name, split in (("mnist", "train"), ("har", "validation"), (5, "train")):
        calls.append((f"load_dataset({name!r}, {split!r})", lambda n=name, s=split: _load_dataset(n, s)))
    return calls


def _load_dataset(name, split):
    from edgeseq.data import load_dataset

    return load_dataset(name, split)


def test_every_public_function_raises_typed_errors(api):
    failures = []
    calls = _calls(api)
    for name, fn in calls:
        try:
            fn()
        except EdgeseqError as e:
            if not str(e) or "\n" in str(e):
                failures.append(f"{name}: message not one line: {str(e)!r}")
        except BaseException as e:  # noqa: BLE001 - the point of the test
            failures.append(f"{name}: {type(e).__name__}: {str(e)[:160]}")
        else:
            failures.append(f"{name}: accepted")
    assert len(calls) > 200
    assert not failures, f"{len(failures)} of {len(calls)} calls:\n" + "\n".join(failures)
    for leftover in ("o", "o2", "o3", "o4", "o5"):
        assert not (api["tmp"] / leftover).exists()
    assert not [p for p in api["tmp"].iterdir() if p.name.startswith(".")], "staging left behind"
    assert sorted(p.name for p in api["tmp"].iterdir()) == ["fifo", "file.txt"]


def test_capture_with_bad_example_input(api):
    from edgeseq.nn import build_model

    model = build_model("gru", 3, 4, hidden=8)
    for a in (RAGGED, "abc", np.zeros((2, 3)), {"x": 1}):
        _typed(edgeseq.capture, model, a)


def test_nonfinite_allowed_explicitly(api):
    """The NaN/Inf policy's explicit allowance: the reference then computes (and propagates NaN)."""
    from edgeseq.util.finite import allow_nonfinite

    with allow_nonfinite():
        y, _ = edgeseq.reference(api["graph"], NAN_X)
    assert np.isnan(y).all()
    os.environ.pop("EDGESEQ_ALLOW_NONFINITE", None)
    _typed(edgeseq.reference, api["graph"], NAN_X)
