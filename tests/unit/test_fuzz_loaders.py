"""Property-based fuzzing of the loaders of untrusted files: the IR graph (.esq), the quantized graph
(plan, .q.esq), the checkpoint (.ckpt) and the artifact manifest (manifest.json). Inputs are real
files mutated and truncated byte-wise, their JSON documents replaced by random JSON or edited at a
random place, and their zip members rewritten with random (lying) sizes, random data lengths and
small bombs. Property: the loader returns or raises one of edgeseq's typed errors (EdgeseqError),
nothing else, and the Python heap peak of one load stays under 200 MiB (tracemalloc, numpy
arrays included).

Budget (fixed examples per loader, derandomized so CI is reproducible): see BUDGET.
"""

from __future__ import annotations

import copy
import json
import shutil
import tracemalloc
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgeseq.errors import EdgeseqError  # noqa: E402
from tests.unit import bad_inputs as B  # noqa: E402

BUDGET = {"esq": 200, "plan": 100, "checkpoint": 150, "manifest": 100}  # examples per loader
PEAK_LIMIT = 200 * B.MiB


def _settings(loader: str):
    return settings(
        max_examples=BUDGET[loader],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        [
            "edgeseq-ir",
            "edgeseq-quant",
            "edgeseq-checkpoint",
            "<f4",
            "|O",
            "../../etc/passwd",
            "/etc/hostname",
            "c",
            "tvm",
            "graph.esq",
        ]
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def _places(doc, path=()):
    """Every (path) to a value inside a JSON document."""
    yield path
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _places(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _places(v, path + (i,))


def _edit(doc, path, action, value):
    if not path:
        return value
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    if action == "delete":
        del parent[key]
    elif action == "wrap":
        parent[key] = [parent[key]]
    else:
        parent[key] = value
    return doc


@st.composite
def edited_json(draw, doc):
    """``doc`` with one to three random edits (replace a value with random JSON, delete, wrap in a list)."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        places = list(_places(doc))
        path = draw(st.sampled_from(places))
        doc = _edit(doc, path, draw(st.sampled_from(["replace", "delete", "wrap"])), draw(JSON))
    return doc


@st.composite
def damaged_zip(draw, src: Path, json_member: str, rehash=None):
    """One way of damaging the zip ``src``: bytes, its JSON document, or its members' sizes."""
    kind = draw(st.sampled_from(["bytes", "truncate", "random-json", "edited-json", "members"]))
    data = src.read_bytes()
    if kind == "bytes":
        buf = bytearray(data)
        for pos, val in draw(
            st.lists(st.tuples(st.integers(0, len(buf) - 1), st.integers(0, 255)), min_size=1, max_size=8)
        ):
            buf[pos] = val
        return kind, bytes(buf)
    if kind == "truncate":
        return kind, data[: draw(st.integers(0, len(data) - 1))]
    members = B.members_of(src)
    if kind in ("random-json", "edited-json"):
        doc = json.loads(members[json_member])
        new = draw(JSON) if kind == "random-json" else draw(edited_json(doc))
        if rehash is not None and isinstance(new, dict) and draw(st.booleans()):
            rehash(new)  # a crafted file whose own hashes agree: the checks behind them must hold too
        members[json_member] = json.dumps(new).encode()
        out = [B.stored(n, d) for n, d in members.items()]
    else:
        out = []
        for n, d in members.items():
            how = draw(st.sampled_from(["keep", "keep", "keep", "lie", "cut", "grow", "drop", "bomb"]))
            if how == "keep":
                out.append(B.stored(n, d))
            elif how == "lie":
                m = B.Member(n, deflated=_deflate(d), size=draw(st.integers(0, 1 << 31)), crc=_crc(d))
                out.append(m)
            elif how == "cut":
                out.append(B.stored(n, d[: draw(st.integers(0, max(0, len(d) - 1)))]))
            elif how == "grow":
                out.append(B.stored(n, d + bytes(draw(st.integers(1, 4096)))))
            elif how == "bomb":
                out.append(B.bomb(n, draw(st.integers(1, 16)) * B.MiB, d[: draw(st.integers(0, len(d)))]))
    return kind, B.zip_bytes(out)


def _deflate(d: bytes) -> bytes:
    import zlib

    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(d) + c.flush()


def _crc(d: bytes) -> int:
    import zlib

    return zlib.crc32(d)


def _check(load, path: Path) -> None:
    """``load(path)`` returns or raises EdgeseqError, within the heap limit (traced during the load
    only: tracing the input generation too would make the budget ten times slower)."""
    tracemalloc.start()
    try:
        load(path)
    except EdgeseqError as e:
        assert str(e).strip() and "\n" not in str(e), repr(str(e))
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"heap peak {peak / B.MiB:.0f} MiB"


@pytest.fixture
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _fuzz_file(loader: str, src: Path, member: str, rehash, load, work: Path, suffix: str) -> None:
    """Run ``load`` on ``BUDGET[loader]`` damaged copies of the zip ``src`` (see damaged_zip)."""

    @_settings(loader)
    @given(st.data())
    def run(data):
        kind, blob = data.draw(damaged_zip(src, member, rehash))
        p = work / f"fuzz{suffix}"
        p.write_bytes(blob)
        _check(load, p)

    run()


def test_fuzz_ir_graph(bad_fixtures, work):
    import edgeseq

    _fuzz_file(
        "esq", bad_fixtures.esq, "graph.json", lambda doc: doc.pop("graph_sha256", None), edgeseq.load, work, ".esq"
    )


def test_fuzz_plan(bad_fixtures, work):
    from edgeseq.quant import load_quantized
    from edgeseq.quant.qgraph import _content_sha256

    def rehash(doc):
        doc["content_sha256"] = _content_sha256(doc)

    _fuzz_file("plan", bad_fixtures.qesq, "quant/quant.json", rehash, load_quantized, work, ".q.esq")


def test_fuzz_checkpoint(bad_fixtures, work):
    from edgeseq.train.checkpoint import load_checkpoint

    _fuzz_file(
        "checkpoint",
        bad_fixtures.ckpt,
        "checkpoint.json",
        lambda doc: doc.pop("content_sha256", None),
        load_checkpoint,
        work,
        ".ckpt",
    )


def test_fuzz_manifest(bad_fixtures, work):
    from edgeseq.export import load_artifact
    from edgeseq.validate import open_artifact

    arts = {}
    for which, part in (("onnx", ""), ("bundle", ""), ("bundle", "c"), ("bundle", "tvm")):
        d = work / f"{which}-{part or 'top'}"
        shutil.copytree(getattr(bad_fixtures, which), d, symlinks=True)
        arts[(which, part)] = d / part if part else d
    docs = {k: json.loads((d / "manifest.json").read_text()) for k, d in arts.items()}

    @_settings("manifest")
    @given(st.data())
    def run(data):
        key = data.draw(st.sampled_from(sorted(arts)))
        d = arts[key]
        how = data.draw(st.sampled_from(["random", "edited", "bytes"]))
        if how == "random":
            text = json.dumps(data.draw(JSON))
        elif how == "edited":
            text = json.dumps(data.draw(edited_json(docs[key])))
        else:
            raw = bytearray(json.dumps(docs[key]).encode())
            for pos, val in data.draw(
                st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), min_size=1, max_size=6)
            ):
                raw[pos] = val
            text = bytes(raw)
        mf = d / "manifest.json"
        try:
            mf.write_bytes(text if isinstance(text, bytes) else text.encode())
            top = arts[(key[0], "")]
            _check(load_artifact, top)
            _check(open_artifact, top)
        finally:
            mf.write_text(json.dumps(docs[key]))

    run()
