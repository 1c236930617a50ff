"""QuantizedGraph: a float graph, its quantization plan, the integer program and the fake-quant
parameters, with execution in either mode and a safe file format.

File format: a quantized graph is saved as an ``.esq`` zip that is *also* a valid float IR file
(``graph.json`` + ``arrays/``: the original float graph, so ``edgeseq.load`` still reads it) plus
a ``quant/`` folder: ``quant.json`` (format tag, schema version, the integer program, the plan,
metadata, and the SHA-256 of every array), ``quant/prepared.esq`` (the BatchNorm-folded float graph
the program was lowered from), ``quant/consts/*.npy`` (program constants, integer dtypes) and
``quant/fake/*.npy`` (fake-quant parameters). Nothing is unpickled; loading checks every hash and
re-verifies the program, and a save/load round trip is exact.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from .._version import __version__
from ..errors import ConfigError, EdgeseqError, IRFormatError
from ..ir import serialize
from ..ir.graph import Graph
from ..ir.interpret import check_input
from ..util import schema as S
from ..util.fs import as_path, atomic_write_bytes
from ..util.safeio import SafeZip, is_zip_with
from ..util.schema import validate
from . import intexact
from .fakequant import fake_run
from .plan import QuantPlan
from .program import Program

FORMAT = "edgeseq-quant"
SCHEMA_VERSION = 1
MODES = ("int", "fake", "float")
MAX_VECTOR = 1 << 20  # values in one program vector or state (per sequence)
MAX_VECTOR_TOTAL = 1 << 24  # values in all of them


@dataclass
class QuantizedGraph:
    """The result of :func:`edgeseq.quant.quantize`.

    ``source``: the float graph as given; ``graph``: the prepared (BatchNorm-folded) float graph the
    program implements; ``plan``; ``program``: the integer program; ``fake_params``: dequantized
    parameters per node for the fake-quant simulation; ``info``: JSON-able metadata (config,
    calibration size, search results)."""

    source: Graph
    graph: Graph
    plan: QuantPlan
    program: Program
    fake_params: dict
    info: dict = field(default_factory=dict)

    # -- execution --------------------------------------------------------------------------------
    def quantize_input(self, x) -> np.ndarray | dict:
        """Float (B, T, F) input -> the program's integer input (an array, or a dict of parts)."""
        x = check_input(self.graph, x)
        parts = {s.vec: s.quantize(x) for s in self.program.inputs}
        return next(iter(parts.values())) if len(parts) == 1 else parts

    def run(self, x, state: Optional[Mapping[str, np.ndarray]] = None, mode: str = "int", *, check: bool = True):
        """Run on float input ``x`` (B, T, F); returns ``(outputs, state)`` like the reference
        interpreter (outputs dequantized to float64).

        ``mode``: 'int' (the integer program; ``state`` is the integer state, flat (B, n) per key),
        'fake' (float simulation of the same plan; float state), 'float' (the prepared float graph)."""
        if mode == "int":
            outs, st = intexact.run(self.program, self.quantize_input(x), state, check=check)
            return intexact.dequantize_outputs(self.program, outs), st
        if mode == "fake":
            return fake_run(self.graph, self.plan, self.fake_params, x, state)
        if mode == "float":
            from ..ir.interpret import run

            return run(self.graph, x, state)
        raise ConfigError(f"unknown run mode '{mode}'; choose one of: {', '.join(MODES)}")

    def run_int(self, xq, state=None, *, check: bool = True, trace: bool = False):
        """Run the integer program on integer input; returns integer outputs and state."""
        return intexact.run(self.program, xq, state, check=check, trace=trace)

    def predict(self, x, mode: str = "int", batch_size: int = 512) -> np.ndarray:
        """argmax of the first (pooled) output over the last axis, in batches."""
        out = []
        for s in range(0, len(x), batch_size):
            (y, *_), _ = self.run(x[s : s + batch_size], mode=mode)
            out.append(np.asarray(y).argmax(-1))
        return np.concatenate(out)

    def init_state(self, batch: int) -> dict[str, np.ndarray]:
        return intexact.init_state(self.program, batch)

    # -- the graph it belongs to ------------------------------------------------------------------
    @property
    def graph_sha256(self) -> str:
        """Content hash of the float graph this plan was made for (:func:`edgeseq.ir.serialize.digest`)."""
        return serialize.digest(self.source)

    def check_graph(self, graph: Graph, where: Optional[str] = None) -> None:
        """Raise ConfigError unless ``graph`` is the float graph (or the prepared graph) this plan
        was made for: a plan applied to another model would give a wrong artifact silently."""
        got = serialize.digest(graph)
        if got not in (self.graph_sha256, serialize.digest(self.graph)):
            raise ConfigError(
                f"the quantization plan was made for another model (its float graph {self.graph_sha256[:12]}, "
                f"this model {got[:12]})",
                where=where,
                hint="quantize this model itself: edgeseq quantize MODEL --data TASK --out PLAN.q.esq",
            )

    # -- sizes / text -----------------------------------------------------------------------------
    def sizes(self) -> dict:
        s = self.program.sizes()
        s["float_param_bytes"] = int(
            sum(np.asarray(a, np.float32).nbytes for n in self.source.nodes for a in n.op.arrays().values())
        )
        s["macs_per_step"] = self.program.macs_per_step()
        s["micro_ops_per_step"] = len(self.program.step)
        return s

    def summary(self) -> str:
        sz = self.sizes()
        lines = [
            f"quantized graph ({self.plan.config.name} config): {len(self.program.step)} micro-ops per step, "
            f"{len(self.program.final)} final; constants {sz['const_bytes']} B "
            f"(float32 parameters {sz['float_param_bytes']} B); state {sz['state_bytes']} B per sequence",
            self.plan.summary(),
        ]
        return "\n".join(lines)

    # -- io ---------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        path = as_path(path, "quantized graph path")
        atomic_write_bytes(path, self.to_bytes())
        return path

    def to_bytes(self) -> bytes:
        base = serialize.to_bytes(self.source)
        prepared = serialize.to_bytes(self.graph)
        blobs: dict[str, bytes] = {}
        table: dict[str, dict] = {}

        def put(member: str, a: np.ndarray) -> str:
            buf = io.BytesIO()
            np.save(buf, np.array(a, order="C"), allow_pickle=False)
            data = buf.getvalue()
            blobs[member] = data
            table[member] = {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": hashlib.sha256(data).hexdigest()}
            return member

        consts = {k: put(f"quant/consts/{i:05d}.npy", a) for i, (k, a) in enumerate(self.program.consts.items())}
        fake = {}
        i = 0
        for node, params in self.fake_params.items():
            fake[node] = {}
            for k, a in params.items():
                fake[node][k] = put(f"quant/fake/{i:05d}.npy", np.asarray(a, np.float64))
                i += 1
        doc = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "producer": f"edgeseq {__version__}",
            "program": self.program.to_json(),
            "plan": self.plan.to_dict(),
            "info": self.info,
            "consts": consts,
            "fake": fake,
            "arrays": table,
            "prepared_sha256": hashlib.sha256(prepared).hexdigest(),
            "graph_sha256": serialize.digest(self.source),
            "prepared_graph_sha256": serialize.digest(self.graph),
        }
        doc = json.loads(json.dumps(doc, allow_nan=False, default=_json_default))
        doc["content_sha256"] = _content_sha256(doc)
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(base)) as zin, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for member in zin.namelist():
                z.writestr(member, zin.read(member))
            z.writestr("quant/quant.json", json.dumps(doc, indent=1, allow_nan=False, default=_json_default))
            z.writestr("quant/prepared.esq", prepared)
            for member, data in blobs.items():
                z.writestr(member, data)
        return out.getvalue()


def _content_sha256(doc: dict) -> str:
    """Hash of quant.json without itself: the program and plan are bound to the file (an edited
    shift or scale would otherwise load as a valid, different program)."""
    body = {k: v for k, v in doc.items() if k != "content_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


_VEC_N = S.Int(min=0, max=MAX_VECTOR)
_PROGRAM = S.Obj(
    {
        "inputs": S.List(
            S.Obj(
                {
                    "vec": S.Str(),
                    "channels": S.List(S.Int(min=0, max=1 << 24)),
                    "bits": S.Int(min=1, max=64),
                    "scale": S.List(S.Num()),
                    "inv_scale": S.List(S.Num()),
                    "offset": S.List(S.Num()),
                }
            ),
            min_len=1,
        ),
        "vectors": S.List(S.Obj({"name": S.Str(), "n": _VEC_N, "bits": S.Int(min=1, max=64)})),
        "states": S.List(S.Obj({"key": S.Str(), "shape": S.List(_VEC_N, max_len=8), "bits": S.Int(min=1, max=64)})),
        "consts": S.Map(S.Obj({"dtype": S.DTYPE, "shape": S.SHAPE})),
        "step": S.List(S.Obj({"op": S.Str()})),
        "final": S.List(S.Obj({"op": S.Str()})),
        "outputs": S.List(S.Obj({"name": S.Str(), "vec": S.Str(), "temporal": S.Bool()}), min_len=1),
    },
    {"metadata": S.Map()},
)
_SCALE = S.OneOf(S.Num(), S.List(S.Num()))
_PLAN = S.Obj(
    {
        "entries": S.List(
            S.Obj(
                {
                    "name": S.Str(),
                    "role": S.Str(),
                    "bits": S.Int(min=1, max=64),
                    "scale": _SCALE,
                    "granularity": S.Str(),
                }
            )
        ),
        "config": S.Map(),
    },
    {
        "weights": S.List(
            S.Obj({"name": S.Str(), "bits": S.Int(min=1, max=64), "granularity": S.Str(), "shape": S.SHAPE})
        ),
        "aliases": S.Map(S.Str()),
        "outliers": S.Map(),
    },
)
_MEMBER = S.Str(pattern=r"quant/(consts|fake)/[0-9]{1,9}\.npy")
SCHEMA = S.Obj(
    {
        "format": S.Str(),
        "schema_version": S.Int(),
        "program": _PROGRAM,
        "plan": _PLAN,
        "consts": S.Map(_MEMBER),
        "fake": S.Map(S.Map(_MEMBER)),
        "arrays": S.Map(S.ARRAY_ENTRY, key=_MEMBER),
        "prepared_sha256": S.SHA256,
    },
    {
        "info": S.Map(),
        "producer": S.Str(),
        "graph_sha256": S.SHA256,
        "prepared_graph_sha256": S.SHA256,
        "content_sha256": S.SHA256,
    },
)


def _read(z: SafeZip, where: str) -> QuantizedGraph:
    source = serialize.read_graph(z, where)
    if "quant/quant.json" not in z:
        raise IRFormatError(
            "not a quantized graph (no quant/quant.json); it is a float IR file",
            where=where,
            hint="quantize it with `edgeseq quantize`",
        )
    doc = z.read_json("quant/quant.json")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise IRFormatError("wrong quantized-graph format tag", where=where)
    v = doc.get("schema_version")
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= SCHEMA_VERSION:
        raise IRFormatError(f"quantized-graph schema version {v!r} is not supported (1..{SCHEMA_VERSION})", where=where)
    validate(doc, SCHEMA, IRFormatError, where=where, what="quant/quant.json")
    if "content_sha256" in doc and doc["content_sha256"] != _content_sha256(doc):
        raise IRFormatError(
            "quant/quant.json was modified after saving (program or plan does not match its content hash)", where=where
        )
    prog = doc["program"]
    declared = sum(v["n"] for v in prog["vectors"]) + sum(math.prod(s["shape"]) for s in prog["states"])
    if declared > MAX_VECTOR_TOTAL:
        raise IRFormatError(
            f"the integer program declares {declared} values per sequence step (at most "
            f"{MAX_VECTOR_TOTAL} are allowed)",
            where=where,
        )
    for ref in list(doc["consts"].values()) + [m for params in doc["fake"].values() for m in params.values()]:
        if ref not in doc["arrays"]:
            raise IRFormatError(f"array '{ref}' is referenced but not declared", where=where)
    arrays = serialize.read_arrays(z, doc["arrays"], lambda member: member)
    if "quant/prepared.esq" not in z:
        raise IRFormatError("the prepared graph (quant/prepared.esq) is missing", where=where)
    prepared_bytes = z.read_bytes("quant/prepared.esq", z.budget.left)
    if hashlib.sha256(prepared_bytes).hexdigest() != doc["prepared_sha256"]:
        raise IRFormatError("prepared graph does not match its checksum", where=where)
    pwhere = where + ":quant/prepared.esq"
    with SafeZip(prepared_bytes, where=pwhere, error=IRFormatError, budget=z.budget, what="IR file") as pz:
        prepared = serialize.read_graph(pz, pwhere)
    z.budget.refund(len(prepared_bytes))  # the archive's bytes are freed; its inflated arrays were charged
    del prepared_bytes
    for key, graph, what in (
        ("graph_sha256", source, "float graph"),
        ("prepared_graph_sha256", prepared, "prepared graph"),
    ):
        if key in doc and serialize.digest(graph) != doc[key]:
            raise IRFormatError(
                f"the {what} in the file is not the one the plan was made for (content hash differs)", where=where
            )
    try:
        consts = {k: arrays[m] for k, m in doc["consts"].items()}
        program = Program.from_json(prog, consts)
        fake = {node: {k: np.array(arrays[m]) for k, m in params.items()} for node, params in doc["fake"].items()}
        plan = QuantPlan.from_dict(doc["plan"])
    except EdgeseqError as e:
        raise IRFormatError(f"invalid quantized graph: {e.message}", where=where) from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as e:
        raise IRFormatError(f"malformed quantized graph ({type(e).__name__}: {e})", where=where) from None
    return QuantizedGraph(source, prepared, plan, program, fake, dict(doc.get("info", {})))


def from_bytes(data: bytes, where: str = "<bytes>") -> QuantizedGraph:
    with SafeZip(data, where=where, error=IRFormatError, what="quantized graph") as z:
        return _read(z, where)


def is_quantized_file(path) -> bool:
    """True if ``path`` is a quantized-graph file (an .esq zip holding ``quant/quant.json``)."""
    return isinstance(path, (str, Path)) and is_zip_with(path, "quant/quant.json")


def load_quantized(path) -> QuantizedGraph:
    """Load a quantized graph written by :meth:`QuantizedGraph.save`: bounded memory, structure
    checked before use, every array against its hash, the program re-verified, and the float and
    prepared graphs against the content hashes the plan records (see :mod:`edgeseq.util.safeio`)."""
    if not isinstance(path, (str, Path)) or (isinstance(path, str) and not path):
        raise IRFormatError(f"expected the path of a quantized .esq file, got {type(path).__name__} {path!r:.40}")
    path = Path(path)
    with SafeZip(path, where=str(path), error=IRFormatError, what="quantized graph") as z:
        return _read(z, str(path))
