"""The bad-input corpus: hostile and careless inputs to every command, each run through the real
command line (in process). Every case asserts the exit status, exactly one ``edgeseq: error:`` line
naming the problem, no traceback, no "internal error" (an edgeseq bug), and that nothing was left
behind (no output, staging directory, temporary file or empty directory).

Classes (``Case.cls``): resource (zip bombs, declared sizes, oversized documents), structure
(documents that break their schema), silent (wrong input that would give a wrong answer),
data (bad values reaching indexing code), cli (arguments and output paths), paths (paths leaving
their artifact, loops), files (missing, empty, truncated, not files).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

from tests.unit import bad_inputs as B

BOMB = 300 * (1 << 20)  # inflated bytes of a corpus bomb (the memory benchmark uses 2.3 GB ones)


@dataclass
class Case:
    cls: str
    id: str
    argv: list[str]
    msg: str  # regex the error line must match (it names the problem)
    setup: Optional[Callable] = None
    rc: int = 2


CASES: list[Case] = []


def case(cls: str, id: str, argv: str, msg: str, setup=None, rc: int = 2) -> None:
    CASES.append(Case(cls, id, argv.split(), msg, setup, rc))


class Ctx:
    """A case's working directory (the current directory while it runs) and the fixtures."""

    def __init__(self, d: Path, fx: B.Fixtures):
        self.d, self.fx = d, fx

    def __getattr__(self, name):
        return getattr(self.fx, name)

    def p(self, name: str) -> Path:
        return self.d / name

    def art(self, which: str = "bundle") -> Path:
        return B.copy_artifact(getattr(self.fx, which), self.d / "art")

    def manifest(self, fn, which: str = "bundle", part: str = "") -> Path:
        a = self.art(which)
        B.edit_manifest(a / part if part else a, fn)
        return a


# ==================================================================================== resource


def _esq_array_bomb(c):
    name = B.first_array(c.esq, "arrays/")
    shape = np.load(__import__("io").BytesIO(B.members_of(c.esq)[name])).shape
    members = [B.stored(n, d) for n, d in B.members_of(c.esq).items() if n != name]
    members.append(B.bomb(name, BOMB, B.npy_header("<f4", shape)))
    B.write_zip(c.p("bomb.esq"), members)


def _esq_json_bomb(c, declared=None):
    members = [B.stored(n, d) for n, d in B.members_of(c.esq).items() if n != "graph.json"]
    B.write_zip(c.p("bomb.esq"), [B.bomb("graph.json", BOMB, b'{"format": "edgeseq-ir", "x": "', declared)] + members)


def _esq_declared_huge(c):
    """An honest bomb: the table declares a 2.2 GiB array and the member holds it (zeros)."""
    name = B.first_array(c.esq, "arrays/")
    key = name[len("arrays/") : -4]
    members = B.members_of(c.esq)
    doc = json.loads(members["graph.json"])
    doc["arrays"][key]["shape"] = [600_000_000]
    doc["arrays"][key]["dtype"] = "<f4"
    out = [B.stored("graph.json", json.dumps(doc).encode())]
    out += [B.stored(n, d) for n, d in members.items() if n not in ("graph.json", name)]
    out.append(B.bomb(name, 2_400_000_000, B.npy_header("<f4", (600_000_000,))))
    B.write_zip(c.p("bomb.esq"), out)


def _many_members(c, n=70_000):
    B.write_zip(c.p("many.esq"), [B.stored(f"m{i}", b"") for i in range(n)])


def _ckpt_tensor_bomb(c):
    members = B.members_of(c.ckpt)
    name = "tensors/0000.npy"
    shape = np.load(__import__("io").BytesIO(members[name])).shape
    out = [B.stored(n, d) for n, d in members.items() if n != name]
    out.append(B.bomb(name, BOMB, B.npy_header("<f4", shape)))
    B.write_zip(c.p("bomb.ckpt"), out)


def _ckpt_json_bomb(c, declared=None):
    out = [B.stored(n, d) for n, d in B.members_of(c.ckpt).items() if n != "checkpoint.json"]
    B.write_zip(c.p("bomb.ckpt"), [B.bomb("checkpoint.json", BOMB, b'{"format": "', declared)] + out)


def _ckpt_huge_hidden(c):
    B.edit_json_member(
        c.ckpt,
        c.p("huge.ckpt"),
        "checkpoint.json",
        lambda d: (d["config"].update(hidden=1_000_000), d.pop("content_sha256")),
    )


def _ckpt_huge_declared(c):
    def fn(d):
        d["tensors"][next(iter(d["tensors"]))]["shape"] = [1 << 20, 1 << 20]
        d.pop("content_sha256")

    B.edit_json_member(c.ckpt, c.p("huge.ckpt"), "checkpoint.json", fn)


def _q_prepared_bomb(c):
    out = [B.stored(n, d) for n, d in B.members_of(c.qesq).items() if n != "quant/prepared.esq"]
    B.write_zip(c.p("bomb.q.esq"), out + [B.bomb("quant/prepared.esq", BOMB)])


def _q_const_bomb(c):
    members = B.members_of(c.qesq)
    name = B.first_array(c.qesq, "quant/consts/")
    a = np.load(__import__("io").BytesIO(members[name]))
    out = [B.stored(n, d) for n, d in members.items() if n != name]
    B.write_zip(c.p("bomb.q.esq"), out + [B.bomb(name, BOMB, B.npy_header(a.dtype.str, a.shape))])


def _q_quant_json_bomb(c, declared=None):
    out = [B.stored(n, d) for n, d in B.members_of(c.qesq).items() if n != "quant/quant.json"]
    B.write_zip(c.p("bomb.q.esq"), out + [B.bomb("quant/quant.json", BOMB, b"[", declared)])


def _q_huge_vector(c):
    B.edit_json_member(
        c.qesq, c.p("huge.q.esq"), "quant/quant.json", lambda d: d["program"]["vectors"][0].update(n=10**9)
    )


def _npz_bomb(c, lying=True):
    header = B.npy_header("<f4", (2, 10, 3) if lying else (20_000_000, 10, 3))
    B.write_zip(c.p("bomb.npz"), [B.bomb("x.npy", BOMB, header), B.stored("y.npy", B.npy_bytes(np.zeros(2, np.int64)))])


def _big_manifest(c):
    a = c.art("onnx")
    doc = json.loads((a / "manifest.json").read_text())
    doc["padding"] = "x" * (17 * B.MiB)
    (a / "manifest.json").write_text(json.dumps(doc))


def _deep_manifest(c):
    a = c.art("onnx")
    (a / "manifest.json").write_text('{"format": "edgeseq-onnx", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")


def _wide_manifest(c):
    a = c.art("onnx")
    (a / "manifest.json").write_text('{"format": "edgeseq-onnx", "x": [' + ",".join(["{}"] * 300_000) + "]}")


def _long_csv_line(c):
    c.p("rec.csv").write_text("acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z\n" + "1" * (2 * B.MiB) + "\n")


def _wav_chunk(c, chunk: bytes):
    import struct

    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    data = np.zeros(16000, "<i2").tobytes()
    if chunk == b"fmt ":
        body = b"fmt " + struct.pack("<I", 0xFFFFFFF0) + fmt + b"data" + struct.pack("<I", len(data)) + data
    else:
        body = b"fmt " + struct.pack("<I", 16) + fmt + chunk + struct.pack("<I", 0xFFFFFFF0) + bytes(64)
    c.p("rec.wav").write_bytes(b"RIFF" + struct.pack("<I", 0xFFFFFFF0) + b"WAVE" + body)


case(
    "resource",
    "esq-array-inflates-past-declared",
    "info bomb.esq",
    r"bomb\.esq: array .* more bytes than its header",
    _esq_array_bomb,
)
case(
    "resource",
    "esq-graph-json-bomb",
    "info bomb.esq",
    r"bomb\.esq: graph\.json declares 300\.0 MiB, more than the "
    r"16\.0 MiB allowed",
    _esq_json_bomb,
)
case(
    "resource",
    "esq-graph-json-bomb-lying",
    "info bomb.esq",
    r"bomb\.esq: member 'graph\.json' is corrupt \(BadZipFile: Bad CRC-32",
    lambda c: _esq_json_bomb(c, declared=100),
)
case(
    "resource",
    "esq-declared-2GiB-array",
    "info bomb.esq",
    r"bomb\.esq: the file declares 2\.2 GiB of arrays, more "
    r"than the 128\.0 MiB load limit",
    _esq_declared_huge,
)
case("resource", "esq-70000-members", "info many.esq", r"many\.esq: IR file has 70000 members", _many_members)
case(
    "resource",
    "ckpt-tensor-bomb",
    "info bomb.ckpt",
    r"bomb\.ckpt: tensor .* more bytes than its header",
    _ckpt_tensor_bomb,
)
case(
    "resource", "ckpt-json-bomb", "info bomb.ckpt", r"bomb\.ckpt: checkpoint\.json declares 300\.0 MiB", _ckpt_json_bomb
)
case(
    "resource",
    "ckpt-json-bomb-lying",
    "info bomb.ckpt",
    r"bomb\.ckpt: member 'checkpoint\.json' is corrupt \(BadZipFile: Bad CRC-32",
    lambda c: _ckpt_json_bomb(c, declared=5000),
)
case(
    "resource",
    "ckpt-config-hidden-1e6",
    "info huge.ckpt",
    r"huge\.ckpt: config 'hidden' = 1000000 matches no tensor",
    _ckpt_huge_hidden,
)
case(
    "resource",
    "ckpt-declares-4TiB-tensor",
    "info huge.ckpt",
    r"huge\.ckpt: the tensors are declared as 4096\.0 GiB, "
    r"more than the 128\.0 MiB load limit",
    _ckpt_huge_declared,
)
case(
    "resource",
    "qesq-prepared-bomb",
    "export {esq} --target onnx --quant bomb.q.esq --out o",
    r"bomb\.q\.esq: .*quant/prepared\.esq.* (inflates past|more than)",
    _q_prepared_bomb,
)
case(
    "resource",
    "qesq-const-bomb",
    "export {esq} --target onnx --quant bomb.q.esq --out o",
    r"bomb\.q\.esq: array 'quant/consts/.*more bytes than its header",
    _q_const_bomb,
)
case(
    "resource",
    "qesq-quant-json-bomb",
    "export {esq} --target onnx --quant bomb.q.esq --out o",
    r"bomb\.q\.esq: quant/quant\.json declares 300\.0 MiB",
    _q_quant_json_bomb,
)
case(
    "resource",
    "qesq-quant-json-bomb-lying",
    "export {esq} --target onnx --quant bomb.q.esq --out o",
    r"bomb\.q\.esq: member 'quant/quant\.json' is corrupt \(BadZipFile: Bad CRC-32",
    lambda c: _q_quant_json_bomb(c, declared=10),
)
case(
    "resource",
    "qesq-vector-1e9-values",
    "export {esq} --target onnx --quant huge.q.esq --out o",
    r"huge\.q\.esq: quant/quant\.json: program\.vectors\[0\]\.n must be an integer in 0\.\.1048576",
    _q_huge_vector,
)
case(
    "resource",
    "validate-npz-lying-bomb",
    "validate {bundle} --data bomb.npz --no-measure",
    r"bomb\.npz: array 'x' holds more bytes than its header",
    _npz_bomb,
)
case(
    "resource",
    "audit-npz-lying-bomb",
    "audit {esq} --data bomb.npz --out o --no-ort --quiet",
    r"bomb\.npz: array 'x' holds more bytes than its header",
    _npz_bomb,
)
case(
    "resource",
    "audit-npz-2GiB-declared",
    "audit {esq} --data bomb.npz --out o --no-ort --quiet",
    r"bomb\.npz: array 'x' would take 2\.2 GiB, more than the 2\.0 GiB load limit",
    lambda c: _npz_bomb(c, lying=False),
)
case(
    "resource",
    "manifest-17MiB",
    "validate art --no-measure",
    r"manifest\.json is 17\.0 MiB, more than the 16\.0 MiB",
    _big_manifest,
)
case(
    "resource",
    "manifest-nested-100000",
    "validate art --no-measure",
    r"manifest\.json (is nested too deeply|holds more)",
    _deep_manifest,
)
case(
    "resource",
    "manifest-300000-objects",
    "validate art --no-measure",
    r"manifest\.json holds more than 250000",
    _wide_manifest,
)
case(
    "resource",
    "csv-2MiB-line",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: line 2 is longer than 1048576 characters",
    _long_csv_line,
)
case(
    "resource",
    "wav-fmt-chunk-declares-4GiB",
    "demo kws --input rec.wav --target x86 --no-live --out o",
    r"rec\.wav: not a 16-bit PCM WAV file \(chunk sizes run past the end",
    lambda c: _wav_chunk(c, b"fmt "),
)
case(
    "resource",
    "wav-junk-chunk-declares-4GiB",
    "demo kws --input rec.wav --target x86 --no-live --out o",
    r"rec\.wav: not a 16-bit PCM WAV file",
    lambda c: _wav_chunk(c, b"junk"),
)
case(
    "resource",
    "config-17MiB-json",
    "quantize {esq} --data har --out q.esq --config big.json",
    r"big\.json: config file is 17\.0 MiB, more than the 16\.0 MiB allowed",
    lambda c: c.p("big.json").write_text(json.dumps({"x": "y" * (17 * B.MiB)})),
)
case(
    "resource",
    "tolerance-17MiB-json",
    "validate {bundle} --tolerance big.json --no-measure",
    r"big\.json: tolerance file is 17\.0 MiB",
    lambda c: c.p("big.json").write_text(json.dumps({"x": "y" * (17 * B.MiB)})),
)
case(
    "resource",
    "run-input-npy-declares-8GiB",
    "run {esq} big.npy",
    r"big\.npy: input array would take 8\.0 GiB, more than the 2\.0 GiB load limit",
    lambda c: c.p("big.npy").write_bytes(B.npy_header("<f8", (1 << 30,)) + bytes(64)),
)
case(
    "resource",
    "run-input-npy-header-64KiB",
    "run {esq} big.npy",
    r"big\.npy: input array has a corrupt \.npy header",
    lambda c: c.p("big.npy").write_bytes(b"\x93NUMPY\x02\x00" + (1 << 20).to_bytes(4, "little") + b" " * 100),
)

# =================================================================================== structure

GRAPH = "graph.json"


def esq_edit(fn, name="bad.esq"):
    return lambda c: B.edit_json_member(c.esq, c.p(name), GRAPH, fn)


def _set(path, value):
    def fn(doc):
        node = doc
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value

    return fn


def _del(path):
    def fn(doc):
        node = doc
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]

    return fn


ESQ_STRUCT = [
    ("list", lambda d: B.Replace([1, 2]), r"not an edgeseq IR file \(wrong format tag\)"),
    ("string", lambda d: B.Replace("graph"), r"wrong format tag"),
    ("no-format", _del(["format"]), r"wrong format tag"),
    ("version-99", _set(["schema_version"], 99), r"schema version 99 is not supported.*upgrade edgeseq"),
    ("version-string", _set(["schema_version"], "1"), r"schema version '1' is not supported"),
    ("version-bool", _set(["schema_version"], True), r"schema version True is not supported"),
    ("inputs-missing", _del(["inputs"]), r"graph\.json is missing the key 'inputs'"),
    ("inputs-dict", _set(["inputs"], {}), r"graph\.json: inputs must be a list"),
    ("inputs-empty", _set(["inputs"], []), r"graph\.json: inputs must have 1\.\.64 entries, got 0"),
    ("input-features-str", lambda d: d["inputs"][0].update(features="3"), r"inputs\[0\]\.features must be an integer"),
    (
        "input-features-0",
        lambda d: d["inputs"][0].update(features=0),
        r"inputs\[0\]\.features must be an integer in 1\.\.",
    ),
    ("input-features-huge", lambda d: d["inputs"][0].update(features=10**12), r"inputs\[0\]\.features must be an int"),
    ("outputs-null", _set(["outputs"], None), r"graph\.json: outputs must be a list \(non-empty\), got null"),
    ("outputs-int", _set(["outputs"], [1]), r"outputs\[0\] must be a string, got integer"),
    ("outputs-unknown", _set(["outputs"], ["nope"]), r"graph output 'nope'"),
    ("nodes-dict", _set(["nodes"], {"a": 1}), r"graph\.json: nodes must be a list"),
    ("node-list", lambda d: d["nodes"].__setitem__(0, [1]), r"nodes\[0\] must be an object, got list"),
    ("node-no-kind", lambda d: d["nodes"][0].pop("kind"), r"nodes\[0\] is missing the key 'kind'"),
    ("node-kind-int", lambda d: d["nodes"][0].update(kind=3), r"nodes\[0\]\.kind must be a string"),
    ("node-kind-unknown", lambda d: d["nodes"][0].update(kind="Transformer"), r"unknown op kind 'Transformer'"),
    ("node-attrs-list", lambda d: d["nodes"][1].update(attrs=[1]), r"nodes\[1\]\.attrs must be an object"),
    ("node-attr-unknown", lambda d: d["nodes"][1]["attrs"].update(bogus=1), r"unknown attribute 'bogus' for GRU"),
    ("node-attr-wrong-type", lambda d: d["nodes"][1]["attrs"].update(reset_after="yes"), r"node 'rnn'"),
    ("node-attr-is-array", lambda d: d["nodes"][1]["attrs"].update(w_ih=[1.0]), r"'w_ih' of GRU is an array"),
    ("node-array-unknown-key", lambda d: d["nodes"][1]["arrays"].update(w_ih="nope"), r"array 'nope' is missing"),
    (
        "node-array-ref-int",
        lambda d: d["nodes"][1]["arrays"].update(w_ih=5),
        r"nodes\[1\]\.arrays\.w_ih must be a string",
    ),
    ("node-array-dropped", lambda d: d["nodes"][1]["arrays"].pop("w_ih"), r"node 'rnn'.*(w_ih|GRU)"),
    ("node-inputs-str", lambda d: d["nodes"][1].update(inputs="norm"), r"nodes\[1\]\.inputs must be a list"),
    ("node-input-undefined", lambda d: d["nodes"][1].update(inputs=["ghost"]), r"not defined before"),
    ("node-outputs-empty", lambda d: d["nodes"][1].update(outputs=[]), r"nodes\[1\]\.outputs must have at least 1"),
    ("node-name-slash", lambda d: d["nodes"][1].update(name="a/b"), r"a/b"),
    ("node-duplicate-name", lambda d: d["nodes"][2].update(name=d["nodes"][1]["name"]), r"duplicate node name"),
    ("arrays-list", _set(["arrays"], []), r"graph\.json: arrays must be an object"),
    (
        "array-shape-negative",
        lambda d: next(iter(d["arrays"].values())).update(shape=[-1]),
        r"arrays\.[\w.']+\.shape\[0\] must be an integer >= 0",
    ),
    ("array-shape-str", lambda d: next(iter(d["arrays"].values())).update(shape="3"), r"shape must be a list"),
    (
        "array-dtype-object",
        lambda d: next(iter(d["arrays"].values())).update(dtype="|O"),
        r"dtype must be a string matching",
    ),
    (
        "array-dtype-other",
        lambda d: next(iter(d["arrays"].values())).update(dtype="<f8"),
        r"has dtype <f4, the file declares <f8",
    ),
    (
        "array-shape-other",
        lambda d: next(iter(d["arrays"].values())).update(shape=[7, 7]),
        r"has shape \[\d+\], the file declares \[7, 7\]",
    ),
    (
        "array-sha-bad",
        lambda d: next(iter(d["arrays"].values())).update(sha256="0" * 64),
        r"does not match its checksum",
    ),
    (
        "array-sha-short",
        lambda d: next(iter(d["arrays"].values())).update(sha256="abc"),
        r"sha256 must be a string matching",
    ),
    ("array-entry-missing", lambda d: d["arrays"].pop(next(iter(d["arrays"]))), r"array '.*' is missing from the file"),
    ("metadata-list", _set(["metadata"], [1]), r"graph\.json: metadata must be an object"),
    ("nan-constant", lambda d: B.Replace(b'{"format": "edgeseq-ir", "schema_version": NaN}'), r"NaN is not allowed"),
    (
        "duplicate-key",
        lambda d: B.Replace(b'{"format": "edgeseq-ir", "format": "edgeseq-ir"}'),
        r"duplicate key 'format'",
    ),
    ("not-utf8", lambda d: B.Replace(b'{"format": "\xff\xfe"}'), r"graph\.json is not UTF-8"),
    ("not-json", lambda d: B.Replace(b"{oops"), r"graph\.json is not valid JSON"),
    ("deep", lambda d: B.Replace(("[" * 5000 + "]" * 5000).encode()), r"graph\.json (is nested|holds)"),
    (
        "huge-int",
        lambda d: B.Replace(('{"format": "edgeseq-ir", "schema_version": ' + "9" * 5000 + "}").encode()),
        r"graph\.json is invalid",
    ),
    ("huge-float", lambda d: B.Replace(b'{"format": "edgeseq-ir", "schema_version": 1e999}'), r"out of range"),
]
for name, fn, msg in ESQ_STRUCT:
    case(
        "structure",
        f"esq-{name}",
        "info bad.esq",
        r"bad\.esq: .*" + msg if not msg.startswith("bad") else msg,
        esq_edit(fn),
    )


def _esq_nan_weight(c):
    members = B.members_of(c.esq)
    name = B.first_array(c.esq, "arrays/n0001")
    a = np.load(__import__("io").BytesIO(members[name])).copy()
    a.flat[3] = np.nan
    blob = B.npy_bytes(a)
    doc = json.loads(members[GRAPH])
    doc["arrays"][name[len("arrays/") : -4]]["sha256"] = B.sha(blob)
    B.rezip(c.esq, c.p("bad.esq"), lambda n, d: blob if n == name else json.dumps(doc).encode() if n == GRAPH else d)


def _esq_object_array(c):
    name = B.first_array(c.esq, "arrays/")
    blob = B.npy_header("|O", (2,)) + b"\x80\x04N."
    B.rezip(c.esq, c.p("bad.esq"), lambda n, d: blob if n == name else d)


case("structure", "esq-nan-weight", "info bad.esq", r"bad\.esq: .*NaN", _esq_nan_weight)
case(
    "structure",
    "esq-object-array-pickle",
    "info bad.esq",
    r"bad\.esq: array .* (dtype|does not match)",
    _esq_object_array,
)
case(
    "structure",
    "esq-no-graph-json",
    "info bad.esq",
    r"bad\.esq: not an edgeseq IR file \(no graph\.json\)",
    lambda c: B.rezip(c.esq, c.p("bad.esq"), lambda n, d: None if n == GRAPH else d),
)
case(
    "structure",
    "esq-duplicate-member",
    "info bad.esq",
    r"bad\.esq: IR file holds member 'graph\.json' twice",
    lambda c: B.rezip(c.esq, c.p("bad.esq"), add={GRAPH: b"{}"}),
)
case(
    "structure",
    "esq-array-not-npy",
    "info bad.esq",
    r"bad\.esq: array .* is not a \.npy array",
    lambda c: B.rezip(c.esq, c.p("bad.esq"), lambda n, d: b"hello" if n.endswith(".npy") else d),
)
case(
    "structure",
    "esq-array-truncated",
    "info bad.esq",
    r"bad\.esq: array .* truncated",
    lambda c: B.rezip(c.esq, c.p("bad.esq"), lambda n, d: d[:-4] if n.endswith(".npy") else d),
)

CKPT = "checkpoint.json"


def ckpt_edit(fn, name="bad.ckpt"):
    return lambda c: B.edit_json_member(c.ckpt, c.p(name), CKPT, fn)


CKPT_STRUCT = [
    ("list", lambda d: B.Replace([1]), r"not an edgeseq checkpoint \(wrong format tag\)"),
    ("config-string", lambda d: d.update(config="lmu"), r"checkpoint\.json: config must be an object, got string"),
    ("config-missing", lambda d: d.pop("config"), r"checkpoint\.json is missing the key 'config'"),
    ("config-no-arch", lambda d: d["config"].pop("arch"), r"config is missing the key 'arch'"),
    (
        "config-arch-unknown",
        lambda d: (d["config"].update(arch="transformer"), d.pop("content_sha256")),
        r"invalid model config \(unknown architecture 'transformer'",
    ),
    (
        "config-unknown-setting",
        lambda d: (d["config"].update(bogus=1), d.pop("content_sha256")),
        r"invalid model config .*bogus",
    ),
    (
        "config-hidden-string",
        lambda d: (d["config"].update(hidden="64"), d.pop("content_sha256")),
        r"invalid model config",
    ),
    (
        "config-hidden-negative",
        lambda d: (d["config"].update(hidden=-4), d.pop("content_sha256")),
        r"config 'hidden' is negative",
    ),
    ("config-edited", lambda d: d["config"].update(hidden=9), r"modified after saving"),
    (
        "config-mismatch-legacy",
        lambda d: (d["config"].update(hidden=9), d.pop("content_sha256")),
        r"has shape .* the config expects",
    ),
    ("tensors-list", lambda d: d.update(tensors=[]), r"checkpoint\.json: tensors must be an object"),
    (
        "tensor-entry-null",
        lambda d: d["tensors"].update({next(iter(d["tensors"])): None}),
        r"tensors\.[\w.']+ must be an object, got null",
    ),
    (
        "tensor-extra",
        lambda d: (
            d["tensors"].update(extra={"dtype": "<f4", "shape": [1], "sha256": "0" * 64}),
            d.pop("content_sha256"),
        ),
        r"tensor 'extra' \(tensors/\d+\.npy\) is missing",
    ),
    ("version-newer", lambda d: d.update(version=9), r"checkpoint version 9 is newer .*upgrade edgeseq"),
    ("version-string", lambda d: d.update(version="1"), r"checkpoint version '1' is not valid"),
    ("content-hash-bad", lambda d: d.update(content_sha256="f" * 64), r"modified after saving"),
    ("metrics-list", lambda d: d.update(metrics=[1]), r"metrics must be an object"),
    ("not-json", lambda d: B.Replace(b"\x00\x01\x02"), r"checkpoint\.json is not valid JSON"),
]
for name, fn, msg in CKPT_STRUCT:
    case("structure", f"ckpt-{name}", "info bad.ckpt", r"bad\.ckpt: .*" + msg, ckpt_edit(fn))
case(
    "structure",
    "ckpt-no-json",
    "info bad.ckpt",
    r"bad\.ckpt: not an edgeseq checkpoint \(no checkpoint\.json\)",
    lambda c: B.rezip(c.ckpt, c.p("bad.ckpt"), lambda n, d: None if n == CKPT else d),
)
case(
    "structure",
    "prune-ckpt-config-string",
    "prune bad.ckpt --out o",
    r"bad\.ckpt: checkpoint\.json: config must be",
    ckpt_edit(lambda d: d.update(config="x")),
)

QJ = "quant/quant.json"


def q_edit(fn, name="bad.q.esq", rehash=True):
    """Edit quant.json; ``rehash``: keep its content hash consistent (a crafted file, not a damaged one)."""
    from edgeseq.quant.qgraph import _content_sha256

    def go(doc):
        new = fn(doc)
        if isinstance(new, B.Replace) or not rehash or not isinstance(doc, dict):
            return new
        doc["content_sha256"] = _content_sha256(doc)

    return lambda c: B.edit_json_member(c.qesq, c.p(name), QJ, go)


Q_STRUCT = [
    ("list", lambda d: B.Replace([1]), r"wrong quantized-graph format tag"),
    ("version-2", lambda d: d.update(schema_version=2), r"schema version 2 is not supported"),
    ("program-list", lambda d: d.update(program=[]), r"quant/quant\.json: program must be an object"),
    ("program-no-step", lambda d: d["program"].pop("step"), r"program is missing the key 'step'"),
    ("program-op-unknown", lambda d: d["program"]["step"][0].update(op="fft"), r"unknown micro-op 'fft'"),
    (
        "program-op-unknown-state",
        lambda d: d["program"]["step"][0].update(state="ghost"),
        r"loads unknown state 'ghost'",
    ),
    ("program-op-out-int", lambda d: d["program"]["step"][0].update(out=5), r"invalid quantized graph|malformed"),
    (
        "program-bits-99",
        lambda d: d["program"]["vectors"][0].update(bits=99),
        r"vectors\[0\]\.bits must be an integer in 1\.\.64",
    ),
    (
        "program-state-shape-str",
        lambda d: d["program"]["states"][0].update(shape="8"),
        r"states\[0\]\.shape must be a list",
    ),
    (
        "program-output-unknown-vec",
        lambda d: d["program"]["outputs"][0].update(vec="nope"),
        r"names unknown vector 'nope'",
    ),
    ("plan-list", lambda d: d.update(plan=[1]), r"quant/quant\.json: plan must be an object, got list"),
    ("plan-entries-dict", lambda d: d["plan"].update(entries={}), r"plan\.entries must be a list"),
    (
        "plan-entry-no-scale",
        lambda d: d["plan"]["entries"][0].pop("scale"),
        r"plan\.entries\[0\] is missing the key 'scale'",
    ),
    (
        "consts-ref-missing",
        lambda d: d["consts"].update({next(iter(d["consts"])): "quant/consts/99999.npy"}),
        r"array 'quant/consts/99999\.npy' is referenced but not declared",
    ),
    (
        "consts-ref-outside",
        lambda d: d["consts"].update({next(iter(d["consts"])): "../../etc/passwd"}),
        r"consts\.[\w.']+ must be a string matching",
    ),
    (
        "arrays-key-outside",
        lambda d: d["arrays"].update({"/etc/passwd": next(iter(d["arrays"].values()))}),
        r"arrays\.'/etc/passwd' \(key\) must be a string matching",
    ),
    (
        "array-sha-bad",
        lambda d: next(iter(d["arrays"].values())).update(sha256="0" * 64),
        r"does not match its checksum",
    ),
    ("prepared-sha-bad", lambda d: d.update(prepared_sha256="0" * 64), r"prepared graph does not match its checksum"),
    (
        "graph-hash-bad",
        lambda d: d.update(graph_sha256="0" * 64),
        r"float graph in the file is not the one the plan was made",
    ),
    ("fake-list", lambda d: d.update(fake=[]), r"fake must be an object"),
]
for name, fn, msg in Q_STRUCT:
    case(
        "structure",
        f"qesq-{name}",
        "export {esq} --target onnx --quant bad.q.esq --out o",
        r"bad\.q\.esq: .*" + msg,
        q_edit(fn),
    )
case(
    "structure",
    "qesq-program-edited",
    "export {esq} --target onnx --quant bad.q.esq --out o",
    r"bad\.q\.esq: quant/quant\.json was modified after saving",
    q_edit(lambda d: d["program"]["vectors"][0].update(bits=12), rehash=False),
)
case(
    "structure",
    "esq-attr-edited",
    "info bad.esq",
    r"bad\.esq: graph\.json was modified after saving",
    esq_edit(lambda d: d["nodes"][1]["attrs"].update(reset_after=False)),
)
case(
    "structure",
    "qesq-float-only",
    "export {esq} --target onnx --quant bad.q.esq --out o",
    r"bad\.q\.esq: not a quantized graph",
    lambda c: shutil.copy(c.esq, c.p("bad.q.esq")),
)
case(
    "structure",
    "qesq-prepared-garbage",
    "export {esq} --target onnx --quant bad.q.esq --out o",
    r"bad\.q\.esq: prepared graph does not match its checksum",
    lambda c: B.rezip(c.qesq, c.p("bad.q.esq"), lambda n, d: b"junk" if n == "quant/prepared.esq" else d),
)
case(
    "structure",
    "qesq-source-swapped",
    "export {esq} --target onnx --quant bad.q.esq --out o",
    r"bad\.q\.esq: the float graph in the file is not the one the plan was made for",
    lambda c: B.rezip(
        c.qesq, c.p("bad.q.esq"), lambda n, d: B.members_of(c.other_qesq)[n] if not n.startswith("quant/") else d
    ),
)

# manifests: bundle, its parts, onnx


def m_case(id, fn, msg, which="bundle", part="", argv="validate art --no-measure"):
    case("structure", f"manifest-{id}", argv, msg, lambda c: c.manifest(fn, which, part))


m_case("list", lambda d: B.Replace([1, 2]), r"art/manifest\.json: manifest\.json must be a JSON object, got list")
m_case("string", lambda d: B.Replace('"x"'), r"manifest\.json must be a JSON object, got string")
m_case("format-unknown", lambda d: d.update(format="edgeseq-zip/9"), r"unknown artifact format 'edgeseq-zip/9'")
m_case("format-dict", lambda d: d.update(format={"a": 1}), r"unknown artifact format object")
m_case("bundle-no-parts", lambda d: d.pop("parts"), r"bundle manifest is missing the key 'parts'")
m_case("bundle-parts-list", lambda d: d.update(parts=[{"dir": "c"}]), r"bundle manifest: parts must be an object")
m_case("bundle-parts-empty", lambda d: d.update(parts={}), r"the bundle manifest lists no parts")
m_case("bundle-part-no-dir", lambda d: d["parts"]["c"].pop("dir"), r"parts\.c is missing the key 'dir'")
m_case("bundle-default-runtime-unknown", lambda d: d.update(default_runtime="gpu"), r"default_runtime 'gpu' is not one")
m_case("bundle-files-list", lambda d: d.update(files=["graph.esq"]), r"files must be an object")
m_case(
    "bundle-file-sha-int",
    lambda d: d["files"]["graph.esq"].update(sha256=1),
    r"files\.'graph\.esq'\.sha256 must be a string",
)
m_case("c-missing-outputs", lambda d: d.pop("outputs"), r"c manifest is missing the key 'outputs'", part="c")
m_case("c-outputs-str", lambda d: d.update(outputs="head"), r"c manifest: outputs must be a list", part="c")
m_case("c-target-str", lambda d: d.update(target="x86"), r"c manifest: target must be an object", part="c")
m_case("c-target-unknown", lambda d: d["target"].update(name="pdp11"), r"(unknown target|pdp11)", part="c")
m_case(
    "c-target-bad-option", lambda d: d["target"].update(options={"bogus": 1}), r"(malformed c manifest|bogus)", part="c"
)
m_case("c-state-layout-dict", lambda d: d.update(state_layout={}), r"state_layout must be a list", part="c")
m_case("c-in-features-0", lambda d: d.update(in_features=0), r"in_features must be an integer in 1\.\.", part="c")
m_case("c-golden-missing-key", lambda d: d["golden"].pop("input"), r"golden is missing the key 'input'", part="c")
m_case("tvm-signature-list", lambda d: d.update(signature=[]), r"tvm manifest: signature must be an object", part="tvm")
m_case(
    "tvm-golden-outputs-empty",
    lambda d: d["golden"].update(outputs=[]),
    r"golden\.outputs must have at least 1",
    part="tvm",
)
m_case("tvm-library-int", lambda d: d.update(library=5), r"library must be a string", part="tvm")
m_case("tvm-files-list", lambda d: d.update(files=[]), r"files must be an object", part="tvm")
m_case("onnx-inputs-empty", lambda d: d.update(inputs=[]), r"inputs must have at least 1", which="onnx")
m_case(
    "onnx-input-shape-2d",
    lambda d: d["inputs"][0].update(shape=["batch", 3]),
    r"inputs\[0\]\.shape must have 3",
    which="onnx",
)
m_case("onnx-state-missing", lambda d: d.pop("state"), r"onnx manifest is missing the key 'state'", which="onnx")
m_case(
    "onnx-files-values-str",
    lambda d: d.update(files={"model.onnx": "abc"}),
    r"files\.'model\.onnx' must be an object",
    which="onnx",
)
m_case(
    "onnx-format-version-str",
    lambda d: d.update(format_version="1"),
    r"format_version must be an integer",
    which="onnx",
)
case(
    "structure",
    "manifest-not-json",
    "validate art --no-measure",
    r"manifest\.json is not valid JSON",
    lambda c: (c.art("onnx") / "manifest.json").write_text("{nope"),
)
case(
    "structure",
    "manifest-binary",
    "validate art --no-measure",
    r"manifest\.json is not UTF-8",
    lambda c: (c.art("onnx") / "manifest.json").write_bytes(b"\xff\xd8\xff\xe0" * 10),
)
case(
    "structure",
    "export-artifact-graph-garbage",
    "info art/graph.esq",
    r"graph\.esq: corrupt or truncated IR file",
    lambda c: (c.art("onnx") / "graph.esq").write_bytes(b"not a zip"),
)

# golden vectors


def _golden(c, fn, part="c"):
    a = c.art()
    fn(a / part)
    return a


case(
    "structure",
    "golden-c-input-truncated",
    "validate art --no-measure",
    r"(golden|corrupt|truncated)",
    lambda c: _golden(c, lambda p: (p / "golden/input.bin").write_bytes((p / "golden/input.bin").read_bytes()[:10])),
)
case(
    "structure",
    "golden-c-input-missing",
    "validate art --no-measure",
    r"golden.*input\.bin.* missing",
    lambda c: _golden(c, lambda p: (p / "golden/input.bin").unlink()),
)
case(
    "structure",
    "golden-c-expected-truncated",
    "validate art --no-measure",
    r"(golden|corrupt|truncated)",
    lambda c: _golden(c, lambda p: (p / "golden/expected.bin").write_bytes(b"\x01\x02")),
)
case(
    "structure",
    "golden-tvm-input-short",
    "validate art --no-measure",
    r"golden file 'golden/x\.f32' has 8 bytes",
    lambda c: _golden(c, lambda p: (p / "golden/x.f32").write_bytes(bytes(8)), "tvm"),
)
case(
    "structure",
    "golden-tvm-output-missing",
    "validate art --no-measure",
    r"golden file 'golden/y0\.f32' is missing",
    lambda c: _golden(c, lambda p: (p / "golden/y0.f32").unlink(), "tvm"),
)
case(
    "structure",
    "golden-onnx-input-object",
    "validate art --no-measure",
    r"golden array .* dtype '\|O'",
    lambda c: (c.art("onnx") / "golden/input.npy").write_bytes(B.npy_header("|O", (1,)) + b"\x80\x04N."),
)
case(
    "structure",
    "golden-onnx-input-2d",
    "validate art --no-measure",
    r"golden input must be a non-empty \(B, T, F\)",
    lambda c: np.save(c.art("onnx") / "golden/input.npy", np.zeros((2, 3), np.float32)),
)
case(
    "structure",
    "golden-onnx-input-nan",
    "validate art --no-measure",
    r"golden input contains a NaN/Inf value",
    lambda c: np.save(
        c.art("onnx") / "golden/input.npy", np.where(np.arange(24).reshape(2, 4, 3) == 5, np.nan, 0).astype(np.float32)
    ),
)
case(
    "structure",
    "golden-onnx-output-truncated",
    "validate art --no-measure",
    r"golden array is truncated",
    lambda c: (c.art("onnx") / "golden/output_0.npy").write_bytes(
        (c.fx.onnx / "golden/output_0.npy").read_bytes()[:-8]
    ),
)

# configs
case(
    "structure",
    "quant-config-binary",
    "quantize {esq} --data har --out q.esq --config cfg.json",
    r"cfg\.json: config file is not UTF-8",
    lambda c: c.p("cfg.json").write_bytes(os.urandom(64) + b"\xff"),
)
case(
    "structure",
    "quant-config-list",
    "quantize {esq} --data har --out q.esq --config cfg.json",
    r"cfg\.json",
    lambda c: c.p("cfg.json").write_text("[1, 2]"),
)
case(
    "structure",
    "quant-config-unknown-key",
    "quantize {esq} --data har --out q.esq --config cfg.json",
    r"cfg\.json.*(unknown|bogus)",
    lambda c: c.p("cfg.json").write_text('{"bogus": 1}'),
)
case(
    "structure",
    "quant-config-nan",
    "quantize {esq} --data har --out q.esq --config cfg.json",
    r"cfg\.json: config file is invalid: NaN is not allowed",
    lambda c: c.p("cfg.json").write_text('{"x": NaN}'),
)
case(
    "structure",
    "tolerance-binary",
    "validate {bundle} --tolerance tol.json --no-measure",
    r"tol\.json: tolerance file is not UTF-8",
    lambda c: c.p("tol.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff"),
)
case(
    "structure",
    "tolerance-list",
    "validate {bundle} --tolerance tol.json --no-measure",
    r"tol\.json: the tolerance file must hold a JSON object",
    lambda c: c.p("tol.json").write_text("[]"),
)
case(
    "structure",
    "tolerance-bad-format",
    "validate {bundle} --tolerance tol.json --no-measure",
    r"tol\.json.*(unknown|format)",
    lambda c: c.p("tol.json").write_text('{"formats": {"float96": {"max_abs": 1}}}'),
)
case(
    "structure",
    "wav-not-riff",
    "demo kws --input rec.wav --target x86 --no-live --out o",
    r"rec\.wav: not a 16-bit PCM WAV file",
    lambda c: c.p("rec.wav").write_bytes(b"ID3" + bytes(100)),
)
case(
    "structure",
    "wav-8bit-stereo",
    "demo kws --input rec.wav --target x86 --no-live --out o",
    r"rec\.wav: .*2 channels, 8-bit samples; the model needs 16 kHz mono",
    lambda c: _wav(c.p("rec.wav"), channels=2, width=1),
)
case(
    "structure",
    "truth-binary",
    "demo kws --input rec.wav --truth t.txt --target x86 --no-live --out o",
    r"t\.txt: label file is not UTF-8",
    lambda c: (_wav(c.p("rec.wav")), c.p("t.txt").write_bytes(b"\xff\xfe\x00")),
)
case(
    "structure",
    "truth-nan",
    "demo kws --input rec.wav --truth t.txt --target x86 --no-live --out o",
    r"t\.txt: line 1: need 0 <= start <= end",
    lambda c: (_wav(c.p("rec.wav")), c.p("t.txt").write_text("nan 1 yes\n")),
)
case(
    "structure",
    "truth-inf",
    "demo kws --input rec.wav --truth t.txt --target x86 --no-live --out o",
    r"t\.txt: line 2: need 0 <= start <= end",
    lambda c: (_wav(c.p("rec.wav")), c.p("t.txt").write_text("0 1 yes\n1 inf no\n")),
)


def _wav(path: Path, channels=1, width=2, rate=16000, seconds=1.5):
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(int(rate * seconds) * channels * width))


# ====================================================================================== silent


def _npz(c, name="d.npz", **arrays):
    np.savez(c.p(name), **arrays)


X = np.random.default_rng(3).standard_normal((12, 10, 3)).astype(np.float32)
Y = np.arange(12) % 4

case(
    "silent",
    "plan-for-another-model",
    "export {esq} --target onnx --quant {other_qesq} --out o",
    r"quant: the quantization plan was made for another model",
)
case(
    "silent",
    "plan-for-another-model-checkpoint",
    "export {ckpt} --target onnx --quant {other_qesq} --out o",
    r"quant: the quantization plan was made for another model",
)
case(
    "silent",
    "run-nan-input",
    "run {esq} x.npy",
    r"x\.npy: input contains a NaN/Inf value \(first: nan at index \(0, 2, 1\)\)",
    lambda c: np.save(c.p("x.npy"), np.where(np.arange(30).reshape(1, 10, 3) == 7, np.nan, 0.0)),
)
case(
    "silent",
    "run-inf-input",
    "run {esq} x.npy",
    r"input contains 30 NaN/Inf values \(first: inf at index \(0, 0, 0\)\)",
    lambda c: np.save(c.p("x.npy"), np.full((1, 10, 3), np.inf)),
)
case(
    "silent",
    "validate-nan-data",
    "validate {bundle} --data d.npz --no-measure",
    r"d\.npz: x contains a NaN/Inf value \(first: nan at index \(4, 0, 0\)\)",
    lambda c: _npz(c, x=np.where(np.arange(X.size).reshape(X.shape) == 120, np.nan, X), y=Y),
)
case(
    "silent",
    "audit-nan-data",
    "audit {esq} --data d.npz --out o --no-ort --quiet",
    r"d\.npz: x contains \d+ NaN/Inf values \(first: inf at index \(\d+, \d+, \d+\)\)",
    lambda c: _npz(c, x=np.where(X > 2.5, np.inf, X), y=Y),
)
case(
    "silent",
    "audit-negative-labels",
    "audit {esq} --data d.npz --out o --no-ort --quiet",
    r"d\.npz: y holds a negative class id \(-1 at index 0\)",
    lambda c: _npz(c, x=X, y=Y - 1),
)
case(
    "silent",
    "audit-nan-calib",
    "audit {esq} --data d.npz --out o --no-ort --quiet",
    r"d\.npz: calibration data contains",
    lambda c: _npz(c, x=X, y=Y, calib_x=np.full((2, 10, 3), np.nan)),
)
case(
    "silent",
    "audit-nan-val",
    "audit {esq} --data d.npz --out o --no-ort --quiet",
    r"d\.npz: val_x contains",
    lambda c: _npz(c, x=X, y=Y, val_x=np.full((2, 10, 3), np.nan), val_y=Y[:2]),
)
case(
    "silent",
    "csv-time-nan",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: line \d+, column 'time': 'nan' is NaN or Inf",
    lambda c: _csv(c.p("rec.csv"), time_fn=lambda i: "nan"),
)
case(
    "silent",
    "csv-time-one-nan",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: line 7, column 'time'",
    lambda c: _csv(c.p("rec.csv"), time_fn=lambda i: "nan" if i == 5 else i / 50),
)
case(
    "silent",
    "csv-imu-inf",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: line 4, column 'gyro_x': 'inf' is NaN or Inf",
    lambda c: _csv(c.p("rec.csv"), value_fn=lambda i, ch: "inf" if (i, ch) == (2, "gyro_x") else "0.1"),
)
case(
    "silent",
    "csv-time-decreasing",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: the time column is not strictly increasing \(sample 50\)",
    lambda c: _csv(c.p("rec.csv"), time_fn=lambda i: i / 50 if i != 50 else 0.0),
)


def _csv(
    path: Path,
    n=200,
    time_fn=lambda i: i / 50,
    value_fn=lambda i, ch: "0.1",
    label_fn=None,
    columns=("time", "acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"),
):
    cols = list(columns) + (["label"] if label_fn else [])
    lines = [",".join(cols)]
    for i in range(n):
        row = []
        for ch in columns:
            row.append(str(time_fn(i)) if ch == "time" else value_fn(i, ch))
        if label_fn:
            row.append(str(label_fn(i)))
        lines.append(",".join(row))
    path.write_text("\n".join(lines) + "\n")


# ======================================================================================== data

case(
    "data",
    "csv-label-99",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: line 2: label 99 is not a class id of the model \(0\.\.5\)",
    lambda c: _csv(c.p("rec.csv"), label_fn=lambda i: 99),
)
case(
    "data",
    "csv-label-negative",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: line 2: label -3 is not a class id",
    lambda c: _csv(c.p("rec.csv"), label_fn=lambda i: -3),
)
case(
    "data",
    "csv-label-unknown",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: line 2: unknown label 'jogging'",
    lambda c: _csv(c.p("rec.csv"), label_fn=lambda i: "jogging"),
)
case(
    "data",
    "csv-time-text",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: line 2, column 'time': 'soon' is not a number",
    lambda c: _csv(c.p("rec.csv"), time_fn=lambda i: "soon"),
)
case(
    "data",
    "csv-imu-text",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: line 2, column 'acc_x': 'high' is not a number",
    lambda c: _csv(c.p("rec.csv"), value_fn=lambda i, ch: "high" if ch == "acc_x" else "0"),
)
case(
    "data",
    "csv-short-row",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: line 3 has 2 fields",
    lambda c: (_csv(c.p("rec.csv")), _replace_line(c.p("rec.csv"), 2, "0.1,0.2")),
)
case(
    "data",
    "csv-missing-columns",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: missing column\(s\) gyro_y, gyro_z",
    lambda c: _csv(c.p("rec.csv"), columns=("acc_x", "acc_y", "acc_z", "gyro_x")),
)
case(
    "data",
    "csv-duplicate-column",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: column 'acc_x' appears more than once",
    lambda c: _csv(c.p("rec.csv"), columns=("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z", "acc_x")),
)
case(
    "data",
    "csv-too-short",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: the recording has 50 samples; at least 128",
    lambda c: _csv(c.p("rec.csv"), n=50),
)
case(
    "data",
    "csv-rate-25hz",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: sample rate is 25\.0 Hz",
    lambda c: _csv(c.p("rec.csv"), time_fn=lambda i: i / 25),
)
case(
    "data",
    "csv-binary",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: .*not UTF-8",
    lambda c: c.p("rec.csv").write_bytes(b"\x00\xff" * 100),
)
case(
    "data",
    "csv-quote-nul",
    "demo har --input rec.csv --target x86 --no-live --out o",
    r"rec\.csv: (malformed CSV|missing)",
    lambda c: c.p("rec.csv").write_text('"acc_x\0,acc_y\n'),
)
case(
    "data",
    "audit-labels-out-of-range",
    "audit {esq} --data d.npz --out o --no-ort --quiet",
    r"d\.npz: y holds class id 7 at index \d+; the model has 4 classes",
    lambda c: _npz(c, x=X, y=np.full(12, 7)),
)
case(
    "data",
    "audit-labels-float",
    "audit {esq} --data d.npz --out o --no-ort --quiet",
    r"d\.npz: y must be \(12,\) integer class ids",
    lambda c: _npz(c, x=X, y=Y + 0.5),
)
case(
    "data",
    "audit-labels-short",
    "audit {esq} --data d.npz --out o --no-ort --quiet",
    r"d\.npz: y must be \(12,\) integer class ids, got shape \(3,\)",
    lambda c: _npz(c, x=X, y=Y[:3]),
)
case(
    "data",
    "audit-x-scalar",
    "audit {esq} --data d.npz --out o --no-ort --quiet",
    r"d\.npz: x must be a non-empty \(N, T, F\) array, got shape \(\)",
    lambda c: _npz(c, x=np.float32(1), y=Y),
)
case(
    "data",
    "audit-x-features",
    "audit {esq} --data d.npz --out o --no-ort --quiet",
    r"d\.npz: .*5 features per step; the model expects 3",
    lambda c: _npz(c, x=np.zeros((12, 10, 5)), y=Y),
)
case(
    "data",
    "audit-x-strings",
    "audit {esq} --data d.npz --out o --no-ort --quiet",
    r"d\.npz: x must be numeric, got dtype <U1",
    lambda c: _npz(c, x=np.full((12, 10, 3), "a"), y=Y),
)
case(
    "data",
    "audit-no-y",
    "audit {esq} --data d.npz --out o --no-ort --quiet",
    r"d\.npz: missing array\(s\) \['y'\]",
    lambda c: _npz(c, x=X),
)
case(
    "data",
    "audit-val-without-labels",
    "audit {esq} --data d.npz --out o --no-ort --quiet",
    r"d\.npz: val_x and val_y come together",
    lambda c: _npz(c, x=X, y=Y, val_x=X),
)
case(
    "data",
    "audit-val-labels-range",
    "audit {esq} --data d.npz --out o --no-ort --quiet",
    r"d\.npz: val_y holds class id 9",
    lambda c: _npz(c, x=X, y=Y, val_x=X[:2], val_y=np.array([0, 9])),
)
case(
    "data",
    "audit-object-array",
    "audit {esq} --data d.npz --out o --no-ort --quiet",
    r"d\.npz: array 'x' has dtype '\|O'; only plain",
    lambda c: np.savez(c.p("d.npz"), x=np.array([None, 1], object), y=Y),
)
case(
    "data",
    "validate-x-scalar",
    "validate {bundle} --data d.npz --no-measure",
    r"d\.npz: x must be a non-empty \(N, T, F\) array, got shape \(\)",
    lambda c: _npz(c, x=np.float32(2)),
)
case(
    "data",
    "validate-x-empty",
    "validate {bundle} --data d.npz --no-measure",
    r"d\.npz: x must be a non-empty \(N, T, F\) array, got shape \(0, 10, 3\)",
    lambda c: _npz(c, x=np.zeros((0, 10, 3))),
)
case(
    "data",
    "validate-y-negative",
    "validate {bundle} --data d.npz --no-measure",
    r"d\.npz: y holds a negative class id \(-2 at index 0\)",
    lambda c: _npz(c, x=X, y=-2 - Y),
)
case(
    "data",
    "validate-y-range",
    "validate {bundle} --data d.npz --no-measure",
    r"d\.npz: y holds class id 4 at index 0; the model has 4 classes",
    lambda c: _npz(c, x=X, y=Y + 4),
)
case(
    "data",
    "validate-y-2d",
    "validate {bundle} --data d.npz --no-measure",
    r"d\.npz: y must have shape \(12,\)",
    lambda c: _npz(c, x=X, y=np.zeros((12, 2), np.int64)),
)
case(
    "data",
    "validate-features",
    "validate {bundle} --data d.npz --no-measure",
    r"d\.npz: x has 6 features per step; the model expects 3",
    lambda c: _npz(c, x=np.zeros((2, 4, 6))),
)
case(
    "data",
    "validate-no-x",
    "validate {bundle} --data d.npz --no-measure",
    r"d\.npz: the \.npz file needs an array 'x'",
    lambda c: _npz(c, inputs=X),
)
case(
    "data",
    "validate-npz-garbage",
    "validate {bundle} --data d.npz --no-measure",
    r"d\.npz: corrupt or truncated \.npz file",
    lambda c: c.p("d.npz").write_bytes(b"PK\x03\x04 not really"),
)
case(
    "data",
    "run-input-2d",
    "run {esq} x.npy",
    r"x\.npy: input must have shape \(batch, time, 3\), got shape \(4, 3\)",
    lambda c: np.save(c.p("x.npy"), np.zeros((4, 3))),
)
case(
    "data",
    "run-input-features",
    "run {esq} x.npy",
    r"x\.npy: input has 5 features per step; the model expects 3",
    lambda c: np.save(c.p("x.npy"), np.zeros((1, 4, 5))),
)
case(
    "data",
    "run-input-object",
    "run {esq} x.npy",
    r"x\.npy: input array has dtype '\|O'",
    lambda c: np.save(c.p("x.npy"), np.array([1, "a"], object), allow_pickle=True),
)
case(
    "data",
    "run-input-empty-time",
    "run {esq} x.npy",
    r"x\.npy: input needs at least one sequence and one time step",
    lambda c: np.save(c.p("x.npy"), np.zeros((1, 0, 3))),
)
case(
    "data",
    "run-input-strings",
    "run {esq} x.npy",
    r"x\.npy: input must be numeric, got dtype <U1",
    lambda c: np.save(c.p("x.npy"), np.full((1, 2, 3), "z")),
)
case(
    "data",
    "run-input-truncated",
    "run {esq} x.npy",
    r"x\.npy: input array is truncated",
    lambda c: c.p("x.npy").write_bytes(B.npy_bytes(np.zeros((1, 4, 3)))[:-5]),
)
case(
    "data",
    "run-input-trailing",
    "run {esq} x.npy",
    r"x\.npy: input array holds more bytes than its header",
    lambda c: c.p("x.npy").write_bytes(B.npy_bytes(np.zeros((1, 4, 3))) + b"junk"),
)
case(
    "data",
    "run-input-not-npy",
    "run {esq} x.npy",
    r"x\.npy: input array is not a \.npy array",
    lambda c: c.p("x.npy").write_text("1,2,3"),
)
case(
    "data",
    "run-input-npy-v9",
    "run {esq} x.npy",
    r"x\.npy: input array has unsupported \.npy version 9",
    lambda c: c.p("x.npy").write_bytes(b"\x93NUMPY\x09\x00" + bytes(20)),
)
case(
    "data",
    "run-input-bad-header",
    "run {esq} x.npy",
    r"x\.npy: input array (has a corrupt|declares an invalid)",
    lambda c: c.p("x.npy").write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': 5}   \n"),
)

# ========================================================================================= cli

case(
    "cli",
    "out-name-300-bytes",
    "export {esq} --target onnx --out " + "n" * 300,
    r"the name 'n+\.\.\.' is 300 bytes long",
)
case("cli", "out-dot-force", "export {esq} --target onnx --out . --force", r"refusing to use the current directory")
case("cli", "out-parent-force", "export {esq} --target onnx --out .. --force", r"refusing to use the current directory")
case("cli", "out-root-force", "export {esq} --target onnx --out / --force", r"refusing to use the current directory")
case(
    "cli",
    "out-is-file",
    "export {esq} --target onnx --out f.txt",
    r"f\.txt: exists and is not a directory",
    lambda c: c.p("f.txt").write_text("keep me"),
)
case(
    "cli",
    "out-exists",
    "export {esq} --target onnx --out o",
    r"o: output directory already exists.*--force",
    lambda c: (c.p("o").mkdir(), (c.p("o") / "keep").write_text("x")),
)
case(
    "cli",
    "out-parent-is-file",
    "export {esq} --target onnx --out f.txt/o",
    r"f\.txt: is not a directory",
    lambda c: c.p("f.txt").write_text("keep me"),
)
case(
    "cli",
    "out-parent-readonly",
    "export {esq} --target onnx --out ro/o",
    r"ro: directory is not writable",
    lambda c: (c.p("ro").mkdir(), os.chmod(c.p("ro"), 0o500)),
)
case(
    "cli",
    "quantize-out-name-300",
    "quantize {esq} --data har --out " + "q" * 300 + ".esq",
    r"the name 'q+\.\.\.' is 304 bytes long",
)
case(
    "cli",
    "quantize-out-is-dir",
    "quantize {esq} --data har --out d.esq",
    r"d\.esq: is a directory",
    lambda c: c.p("d.esq").mkdir(),
)
case(
    "cli",
    "quantize-out-exists",
    "quantize {esq} --data har --out q.esq",
    r"q\.esq: output file already exists",
    lambda c: c.p("q.esq").write_text("keep"),
)
case(
    "cli", "quantize-out-not-esq", "quantize {esq} --data har --out q.onnx", r"--out: the output must be an \.esq file"
)
case(
    "cli",
    "quantize-budget-nan",
    "quantize {esq} --data har --out q.esq --budget nan",
    r"edgeseq quantize: argument --budget: expected a finite number, got 'nan'",
)
case(
    "cli",
    "quantize-calib-0",
    "quantize {esq} --data har --out q.esq --calib 0",
    r"argument --calib: must be at least 1",
)
case(
    "cli",
    "quantize-calib-text",
    "quantize {esq} --data har --out q.esq --calib many",
    r"argument --calib: expected an integer, got 'many'",
)
case(
    "cli",
    "quantize-unknown-task",
    "quantize {esq} --data mnist --out q.esq",
    r"--data: unknown task 'mnist'; one of: .*or a FILE.npz",
)
case(
    "cli",
    "quantize-unknown-preset",
    "quantize {esq} --data har --out q.esq --config fancy",
    r"unknown quantization config 'fancy'",
)
case(
    "cli",
    "train-set-unknown",
    "train --task har --model lmu --out t --set unknown=1 --epochs 1 --quiet",
    r"invalid model setting for 'lmu' .*unknown",
)
case(
    "cli",
    "train-set-no-equals",
    "train --task har --model lmu --out t --set hidden --epochs 1 --quiet",
    r"--set expects key=value, got 'hidden'",
)
case("cli", "train-unknown-arch", "train --task har --model transformer --out t", r"argument --model: invalid choice")
case(
    "cli", "train-epochs-0", "train --task har --model lmu --out t --epochs 0", r"argument --epochs: must be at least 1"
)
case(
    "cli",
    "train-minutes-inf",
    "train --task har --model lmu --out t --max-minutes inf",
    r"argument --max-minutes: expected a finite number",
)
case(
    "cli",
    "audit-budget-negative",
    "audit {esq} --data har --out o --budget -1",
    r"argument --budget: must be at least 0",
)
case(
    "cli",
    "audit-data-unknown",
    "audit {esq} --data mnist --out o",
    r"--data: --data must be har, kws, smartwatch or an "
    r"\.npz file, got 'mnist'",
)
case("cli", "validate-samples-0", "validate {bundle} --samples 0", r"argument --samples: must be at least 1")
case("cli", "validate-reference-bad", "validate {bundle} --reference tpu", r"argument --reference: invalid choice")
case(
    "cli",
    "validate-out-is-file",
    "validate {bundle} --out f.txt --no-measure",
    r"f\.txt: exists and is not a directory",
    lambda c: c.p("f.txt").write_text("keep"),
)
case("cli", "demo-limit-negative", "demo har --limit -5 --out o", r"argument --limit: must be at least 1")
case("cli", "demo-snr-nan", "demo kws --snr nan --out o", r"argument --snr: expected a finite number")
case("cli", "demo-hop-7", "demo kws --hop-ms 7 --target x86 --out o --no-live", r"--hop-ms must be a multiple of 10 ms")
case(
    "cli",
    "demo-truth-without-input",
    "demo kws --truth t.txt --target x86 --out o --no-live",
    r"--truth labels a recording given with --input",
)
case("cli", "prune-sparsity-1", "prune {ckpt} --out o --sparsity 1.0", r"argument --sparsity: must be in \[0, 1\)")
case("cli", "export-unknown-target", "export {esq} --target riscv --out o", r"unknown export target 'riscv'")
case(
    "cli", "export-cpu-suffix", "export {esq} --target onnx:cortex-a72 --out o", r"target 'onnx' takes no ':cpu' suffix"
)
case("cli", "export-quant-not-a-plan", "export {esq} --target onnx --quant {esq} --out o", r"not a quantized graph")
case(
    "cli",
    "export-qdq-without-quant",
    "export {esq} --target onnx --onnx-numerics qdq --out o",
    r"onnx_numerics='qdq' needs a quantized graph",
)
case("cli", "unknown-command", "frobnicate", r"argument COMMAND: invalid choice: 'frobnicate'")
case("cli", "unknown-option", "info {esq} --colour", r"unrecognized arguments: --colour")
case("cli", "info-nothing", "info", r"give a model \(name, \.ckpt or \.esq\) or --models")

# ======================================================================================= paths


def _outside(field_fn, which="bundle", part=""):
    def setup(c):
        c.p("secret.txt").write_text("not yours")
        return c.manifest(field_fn, which, part)

    return setup


for name, fn, part, which, msg in [
    (
        "golden-dotdot",
        lambda d: d["golden"].update(input="../../secret.txt"),
        "c",
        "bundle",
        r"golden\.input '\.\./\.\./secret\.txt' points outside",
    ),
    (
        "golden-absolute",
        lambda d: d["golden"].update(input="/etc/hostname"),
        "c",
        "bundle",
        r"golden\.input '/etc/hostname' is absolute",
    ),
    ("golden-home", lambda d: d["golden"].update(input="~/x"), "c", "bundle", r"golden\.input '~/x' is absolute"),
    (
        "golden-empty",
        lambda d: d["golden"].update(input=""),
        "c",
        "bundle",
        r"golden\.input must be a non-empty relative path",
    ),
    (
        "binary-outside",
        lambda d: d.update(binary="../../secret.txt"),
        "c",
        "bundle",
        r"binary '\.\./\.\./secret\.txt' points outside",
    ),
    (
        "graph-file-outside",
        lambda d: d["graph"].update(file="/etc/passwd"),
        "c",
        "bundle",
        r"graph\.file '/etc/passwd' is absolute",
    ),
    (
        "files-key-outside",
        lambda d: d["files"].update({"../secret.txt": {"sha256": "0" * 64}}),
        "c",
        "bundle",
        r"files\.\.\./secret\.txt '\.\./secret\.txt' points outside",
    ),
    (
        "tvm-library-outside",
        lambda d: d.update(library="/usr/lib/x86_64-linux-gnu/libc.so.6"),
        "tvm",
        "bundle",
        r"library '/usr/lib.*' is absolute",
    ),
    (
        "tvm-golden-outside",
        lambda d: d["golden"]["input"].update(file="../c/../../secret.txt"),
        "tvm",
        "bundle",
        r"golden\.input\.file .* points outside",
    ),
    (
        "bundle-ir-graph-outside",
        lambda d: d.update(ir_graph="../secret.txt"),
        "",
        "bundle",
        r"ir_graph '\.\./secret\.txt' points outside",
    ),
    (
        "bundle-part-self",
        lambda d: d["parts"]["c"].update(dir="."),
        "",
        "bundle",
        r"part 'c' must be a subdirectory of the bundle, got '\.'",
    ),
    (
        "bundle-part-parent",
        lambda d: d["parts"]["c"].update(dir=".."),
        "",
        "bundle",
        r"parts\.c\.dir '\.\.' points outside",
    ),
    (
        "bundle-part-nested",
        lambda d: d["parts"]["c"].update(dir="c/golden"),
        "",
        "bundle",
        r"part 'c' must be a subdirectory",
    ),
    (
        "onnx-model-outside",
        lambda d: d.update(model="../../secret.txt"),
        "",
        "onnx",
        r"model '\.\./\.\./secret\.txt' points outside",
    ),
    (
        "onnx-quantized-outside",
        lambda d: d.update(quantized_graph="/etc/hostname"),
        "",
        "onnx",
        r"quantized_graph '/etc/hostname' is absolute",
    ),
    (
        "onnx-golden-output-outside",
        lambda d: d["golden"].update(outputs=["../secret.txt"]),
        "",
        "onnx",
        r"golden\.outputs\[0\] '\.\./secret\.txt' points outside",
    ),
]:
    case("paths", f"manifest-{name}", "validate art --no-measure", msg, _outside(fn, which, part))


def _symlink_out(c):
    a = c.art("onnx")
    c.p("secret.npy").write_bytes(B.npy_bytes(np.zeros((1, 2, 3), np.float32)))
    (a / "golden/input.npy").unlink()
    os.symlink(c.p("secret.npy"), a / "golden/input.npy")


def _bundle_loop(c):
    a = c.art()
    shutil.copy(a / "manifest.json", a / "c" / "manifest.json")  # the part is itself the bundle


def _dir_symlink_loop(c):
    a = c.art("onnx")
    os.symlink("loop", a / "loop")
    B.edit_manifest(a, lambda d: d["golden"].update(input="loop/x.npy"))


case(
    "paths",
    "golden-symlink-outside",
    "validate art --no-measure",
    r"golden\.input 'golden/input\.npy' points outside",
    _symlink_out,
)
case(
    "paths",
    "bundle-part-is-bundle",
    "validate art --no-measure",
    r"a bundle part may not itself be a bundle",
    _bundle_loop,
)
case(
    "paths",
    "symlink-loop",
    "validate art --no-measure",
    r"golden\.input 'loop/x\.npy' cannot be resolved",
    _dir_symlink_loop,
)
case(
    "paths",
    "export-artifact-as-model-outside",
    "validate art --no-measure --graph /etc/hostname",
    r"/etc/hostname: (corrupt|not)",
    lambda c: c.art("onnx"),
)
case(
    "paths",
    "validate-graph-of-other-model",
    "validate art --no-measure --graph other.esq",
    r"art: the graph other\.esq \(given with --graph\) is not the one this artifact was exported from",
    lambda c: (c.art("onnx"), _other_graph(c)),
)


def _other_graph(c):
    import zipfile

    data = zipfile.ZipFile(c.other_qesq).read("graph.json")
    B.rezip(c.other_qesq, c.p("other.esq"), lambda n, d: None if n.startswith("quant/") else d)
    assert data


# ======================================================================================= files

for cmd, what, msg in [
    ("info {f}", "missing.esq", r"missing\.esq: no such model file or shipped model"),
    ("info {f}", "missing.ckpt", r"missing\.ckpt: no such model file"),
    ("run {esq} {f}", "missing.npy", r"missing\.npy: no such file \(input array\)"),
    ("validate {f}", "missing-dir", r"missing-dir: artifact directory not found"),
    (
        "export {esq} --target onnx --quant {f} --out o",
        "missing.q.esq",
        r"missing\.q\.esq: (no such file|not a quantized)",
    ),
    ("quantize {esq} --data har --out q.esq --config {f}", "missing.json", r"missing\.json: no such file"),
    ("validate {bundle} --tolerance {f} --no-measure", "missing.json", r"missing\.json: no such file"),
    ("audit {esq} --data {f} --out o --no-ort", "missing.npz", r"missing\.npz: no such data file"),
    ("demo kws --input {f} --target x86 --out o --no-live", "missing.wav", r"missing\.wav: no such file"),
    ("demo har --input {f} --target x86 --out o --no-live", "missing.csv", r"missing\.csv: no such file"),
    ("prune {f} --out o", "missing.ckpt", r"missing\.ckpt: no such file"),
]:
    case("files", f"missing-{cmd.split()[0]}-{what}", cmd.replace("{f}", what), msg)

for ext, cmd, msg in [
    (".esq", "info {f}", r"empty\.esq: corrupt or truncated IR file"),
    (".ckpt", "info {f}", r"empty\.ckpt: corrupt or truncated checkpoint"),
    (".npy", "run {esq} {f}", r"empty\.npy: input array is not a \.npy array"),
    (".npz", "validate {bundle} --data {f} --no-measure", r"empty\.npz: corrupt or truncated \.npz file"),
    (".json", "quantize {esq} --data har --out q.esq --config {f}", r"empty\.json: config file is not valid JSON"),
    (".csv", "demo har --input {f} --target x86 --out o --no-live", r"empty\.csv: the CSV recording is empty"),
    (".wav", "demo kws --input {f} --target x86 --out o --no-live", r"empty\.wav: not a 16-bit PCM WAV file"),
]:
    case(
        "files",
        f"empty{ext}",
        cmd.replace("{f}", "empty" + ext),
        msg,
        lambda c, e=ext: c.p("empty" + e).write_bytes(b""),
    )

for src, ext, cmd, name in [
    ("esq", ".esq", "info {f}", "IR file"),
    ("ckpt", ".ckpt", "info {f}", "checkpoint"),
    ("qesq", ".q.esq", "export {esq} --target onnx --quant {f} --out o", "quantized graph"),
]:
    e = re.escape(ext)
    case(
        "files",
        f"truncated{ext}",
        cmd.replace("{f}", "trunc" + ext),
        rf"trunc{e}: (corrupt or truncated {name}|not "
        "a quantized graph)",
        lambda c, s=src, e=ext: c.p("trunc" + e).write_bytes(getattr(c.fx, s).read_bytes()[:-200]),
    )
    case(
        "files",
        f"bitflip{ext}",
        cmd.replace("{f}", "flip" + ext),
        rf"flip{e}: member '.*' is corrupt",
        lambda c, s=src, e=ext: _flip(getattr(c.fx, s), c.p("flip" + e)),
    )
    case(
        "files",
        f"garbage{ext}",
        cmd.replace("{f}", "junk" + ext),
        rf"junk{e}: (corrupt or truncated {name}|not a "
        "quantized graph)",
        lambda c, e=ext: c.p("junk" + e).write_bytes(os.urandom(4096)),
    )


def _flip(src: Path, dst: Path):
    """Flip one byte inside the first .npy member's data (its CRC no longer matches)."""
    data = bytearray(src.read_bytes())
    i = data.find(b"NUMPY")
    data[i + 200] ^= 0x55
    dst.write_bytes(bytes(data))


for cmd, msg in [
    ("info /dev/zero", r"/dev/zero: (unknown model file type|is not a regular file)"),
    ("run {esq} /dev/zero", r"/dev/zero: is not a regular file"),
    ("quantize {esq} --data har --out q.esq --config /dev/zero", r"/dev/zero: is not a regular file"),
    ("validate {bundle} --tolerance /dev/zero --no-measure", r"/dev/zero: is not a regular file"),
    ("demo har --input /dev/zero --target x86 --out o --no-live", r"/dev/zero: is not a regular file"),
    ("demo kws --input /dev/zero --target x86 --out o --no-live", r"/dev/zero: is not a regular file"),
    ("validate /dev/null", r"/dev/null: not a directory"),
]:
    case("files", f"device-{cmd.split()[0]}-{len(CASES)}", cmd, msg)

for cmd, msg in [
    ("info dir.esq", r"dir\.esq: directory holds neither model\.ckpt nor graph\.esq"),
    ("run {esq} dir.esq", r"dir\.esq: is a directory"),
    ("quantize {esq} --data har --out q.esq --config dir.esq", r"dir\.esq: is a directory"),
    ("demo har --input dir.esq --target x86 --out o --no-live", r"dir\.esq: is a directory"),
]:
    case("files", f"directory-{cmd.split()[0]}", cmd, msg, lambda c: c.p("dir.esq").mkdir())

case(
    "files",
    "fifo-config",
    "quantize {esq} --data har --out q.esq --config pipe.json",
    r"pipe\.json: is not a regular file",
    lambda c: os.mkfifo(c.p("pipe.json")),
)
case("files", "fifo-model", "info pipe.esq", r"pipe\.esq: is not a regular file", lambda c: os.mkfifo(c.p("pipe.esq")))
case(
    "files",
    "unreadable-model",
    "info locked.esq",
    r"locked\.esq: cannot read IR file \(Permission denied\)",
    lambda c: (shutil.copy(c.esq, c.p("locked.esq")), os.chmod(c.p("locked.esq"), 0)),
)
case(
    "files",
    "artifact-without-manifest",
    "validate art --no-measure",
    r"art: not an edgeseq artifact \(no manifest\.json\)",
    lambda c: (c.art("onnx") / "manifest.json").unlink(),
)
case(
    "files",
    "manifest-is-dir",
    "validate art --no-measure",
    r"manifest\.json: is a directory",
    lambda c: ((c.art("onnx") / "manifest.json").unlink(), (c.d / "art" / "manifest.json").mkdir()),
)


# edgeseq sweep: refused before any work (no sweep directory, no baseline measured)
SWEEP = "sweep --task har --target cortex-m4 --engine sequential --no-baseline --out o"
case("files", "sweep-space-device", f"{SWEEP} --space /dev/zero", r"/dev/zero: is not a regular file")
case(
    "structure",
    "sweep-space-schema",
    f"{SWEEP} --space s.json",
    r"s\.json: model\.arch: 'choices' must be a non-empty list",
    lambda c: c.p("s.json").write_text('{"model": {"arch": {"choices": []}}}'),
)
case(
    "structure",
    "sweep-space-duplicate-key",
    f"{SWEEP} --space s.json",
    r"s\.json: .*duplicate",
    lambda c: c.p("s.json").write_text('{"model": {"arch": "lmu", "arch": "gru"}}'),
)
case("cli", "sweep-batch-zero", f"{SWEEP} --batch 0", r"--batch: batch must be >= 1, got 0")
case(
    "files",
    "sweep-data-garbage",
    f"{SWEEP} --train-data junk.npz --test-data junk.npz",
    r"junk\.npz: corrupt or truncated",
    lambda c: c.p("junk.npz").write_bytes(os.urandom(4096)),
)


# ===================================================================================== runner


def _snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            try:
                st = p.lstat()
            except OSError:
                continue
            is_dir = p.is_dir() and not p.is_symlink()
            out[str(p.relative_to(root))] = (st.st_mode, 0 if is_dir else st.st_size, 0 if is_dir else st.st_mtime_ns)
    return out


def _run_cli(argv: list[str]) -> int:
    from edgeseq.cli import main

    try:
        return main(argv)
    except SystemExit as e:  # argparse
        return e.code if isinstance(e.code, int) else 1


@pytest.mark.parametrize("c", CASES, ids=[f"{c.cls}:{c.id}" for c in CASES])
def test_bad_input(c: Case, bad_fixtures, tmp_path, monkeypatch, capsys):
    if os.geteuid() == 0 and c.id in ("out-parent-readonly", "unreadable-model"):
        pytest.skip("root ignores file permissions")
    d = tmp_path / "case"
    d.mkdir()
    monkeypatch.chdir(d)
    monkeypatch.setenv("EDGESEQ_DEBUG", "0")
    ctx = Ctx(d, bad_fixtures)
    if c.setup:
        c.setup(ctx)
    names = {k: str(v) for k, v in vars(bad_fixtures).items()}
    argv = [a.format(**names) for a in c.argv]
    before, fx_before, tmp_before = _snapshot(d), _snapshot(bad_fixtures.root), _snapshot(tmp_path)
    rc = _run_cli(argv)
    out, err = capsys.readouterr()
    text = out + err
    assert "Traceback" not in text, text
    assert "internal error" not in text, f"{c.id} reached the internal-error path: {err}"
    assert rc == c.rc, f"{c.id}: exit status {rc}, expected {c.rc}; stderr: {err}"
    errors = [line for line in err.splitlines() if line.startswith("edgeseq:")]
    assert len(errors) == 1 and errors[0].startswith("edgeseq: error: "), f"{c.id}: {err!r}"
    assert re.search(c.msg, errors[0]), f"{c.id}: {errors[0]!r} does not match {c.msg!r}"
    assert _snapshot(d) == before, f"{c.id} left files behind: {sorted(set(_snapshot(d)) ^ set(before))}"
    assert _snapshot(bad_fixtures.root) == fx_before, f"{c.id} changed the fixtures"
    assert _snapshot(tmp_path) == tmp_before


def test_corpus_covers_every_class():
    counts: dict[str, int] = {}
    for c in CASES:
        counts[c.cls] = counts.get(c.cls, 0) + 1
    assert len(CASES) >= 150, len(CASES)
    assert set(counts) == {"resource", "structure", "silent", "data", "cli", "paths", "files"}, counts
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


def _replace_line(path: Path, k: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[k] = text
    path.write_text("\n".join(lines) + "\n")
