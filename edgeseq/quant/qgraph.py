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
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from .._version import __version__
from ..errors import ConfigError, IRFormatError
from ..ir import serialize
from ..ir.graph import Graph
from ..ir.interpret import check_input
from ..util.fs import atomic_write_bytes
from . import intexact
from .fakequant import fake_run
from .plan import QuantPlan
from .program import Program

FORMAT = "edgeseq-quant"
SCHEMA_VERSION = 1
MODES = ("int", "fake", "float")


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
            (y, *_), _ = self.run(x[s:s + batch_size], mode=mode)
            out.append(np.asarray(y).argmax(-1))
        return np.concatenate(out)

    def init_state(self, batch: int) -> dict[str, np.ndarray]:
        return intexact.init_state(self.program, batch)

    # -- sizes / text -----------------------------------------------------------------------------
    def sizes(self) -> dict:
        s = self.program.sizes()
        s["float_param_bytes"] = int(sum(np.asarray(a, np.float32).nbytes for n in self.source.nodes
                                         for a in n.op.arrays().values()))
        s["macs_per_step"] = self.program.macs_per_step()
        s["micro_ops_per_step"] = len(self.program.step)
        return s

    def summary(self) -> str:
        sz = self.sizes()
        lines = [f"quantized graph ({self.plan.config.name} config): {len(self.program.step)} micro-ops per step, "
                 f"{len(self.program.final)} final; constants {sz['const_bytes']} B "
                 f"(float32 parameters {sz['float_param_bytes']} B); state {sz['state_bytes']} B per sequence",
                 self.plan.summary()]
        return "\n".join(lines)

    # -- io ---------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        path = Path(path)
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
            "format": FORMAT, "schema_version": SCHEMA_VERSION, "producer": f"edgeseq {__version__}",
            "program": self.program.to_json(), "plan": self.plan.to_dict(), "info": self.info,
            "consts": consts, "fake": fake, "arrays": table,
            "prepared_sha256": hashlib.sha256(prepared).hexdigest(),
        }
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(base)) as zin, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for member in zin.namelist():
                z.writestr(member, zin.read(member))
            z.writestr("quant/quant.json", json.dumps(doc, indent=1, allow_nan=False, default=_json_default))
            z.writestr("quant/prepared.esq", prepared)
            for member, data in blobs.items():
                z.writestr(member, data)
        return out.getvalue()


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def from_bytes(data: bytes, where: str = "<bytes>") -> QuantizedGraph:
    source = serialize.from_bytes(data, where)
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        names = set(z.namelist())
        if "quant/quant.json" not in names:
            raise IRFormatError("not a quantized graph (no quant/quant.json); it is a float IR file", where=where,
                                hint="quantize it with `edgeseq quantize`")
        doc = json.loads(z.read("quant/quant.json").decode("utf-8"))
        if doc.get("format") != FORMAT:
            raise IRFormatError("wrong quantized-graph format tag", where=where)
        v = doc.get("schema_version")
        if not isinstance(v, int) or not 1 <= v <= SCHEMA_VERSION:
            raise IRFormatError(f"quantized-graph schema version {v!r} is not supported (1..{SCHEMA_VERSION})",
                                where=where)
        arrays: dict[str, np.ndarray] = {}
        for member, info in doc["arrays"].items():
            if member not in names:
                raise IRFormatError(f"array '{member}' is missing", where=where)
            blob = z.read(member)
            if hashlib.sha256(blob).hexdigest() != info["sha256"]:
                raise IRFormatError(f"array '{member}' does not match its checksum (corrupt file)", where=where)
            a = np.load(io.BytesIO(blob), allow_pickle=False)
            if a.dtype.str != info["dtype"] or list(a.shape) != info["shape"]:
                raise IRFormatError(f"array '{member}' has unexpected dtype/shape", where=where)
            a.setflags(write=False)
            arrays[member] = a
        prepared_bytes = z.read("quant/prepared.esq")
        if hashlib.sha256(prepared_bytes).hexdigest() != doc["prepared_sha256"]:
            raise IRFormatError("prepared graph does not match its checksum", where=where)
        prepared = serialize.from_bytes(prepared_bytes, where + ":quant/prepared.esq")
        consts = {k: arrays[m] for k, m in doc["consts"].items()}
        program = Program.from_json(doc["program"], consts)
        fake = {node: {k: np.array(arrays[m]) for k, m in params.items()} for node, params in doc["fake"].items()}
        plan = QuantPlan.from_dict(doc["plan"])
        return QuantizedGraph(source, prepared, plan, program, fake, dict(doc.get("info", {})))
    except IRFormatError:
        raise
    except (KeyError, TypeError, ValueError, zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IRFormatError(f"malformed quantized graph ({type(e).__name__}: {e})", where=where) from e


def is_quantized_file(path) -> bool:
    """True if ``path`` is a quantized-graph file (an .esq zip holding ``quant/quant.json``)."""
    try:
        with zipfile.ZipFile(Path(path)) as z:
            return "quant/quant.json" in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def load_quantized(path) -> QuantizedGraph:
    """Load a quantized graph written by :meth:`QuantizedGraph.save`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IRFormatError("file not found", where=str(path)) from None
    except OSError as e:
        raise IRFormatError(f"cannot read ({e.strerror})", where=str(path)) from None
    return from_bytes(data, str(path))
