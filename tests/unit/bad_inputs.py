"""Builders for hostile and careless inputs: real edgeseq files (IR graph, quantized graph,
checkpoint, artifacts) and ways to damage them, plus zip bombs written without ever holding their
inflated content in memory. Used by the bad-input corpus, the fuzzers and the memory benchmark."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

MiB = 1 << 20

# ------------------------------------------------------------------------------------ zip writing


@dataclass
class Member:
    """One zip member: ``data`` stored as is, or ``deflated`` raw-deflate bytes of ``size`` bytes
    whose CRC-32 is ``crc``."""

    name: str
    data: Optional[bytes] = None
    deflated: Optional[bytes] = None
    size: int = 0
    crc: int = 0


def stored(name: str, data: bytes) -> Member:
    return Member(name, data=data)


def write_zip(path: Path, members: list[Member]) -> Path:
    """A zip archive built by hand (members up to 4 GiB), so a member can be a pre-deflated bomb."""
    path.write_bytes(zip_bytes(members))
    return path


def zip_bytes(members: list[Member]) -> bytes:
    out = io.BytesIO()
    central = []
    for m in members:
        name = m.name.encode()
        if m.deflated is None:
            method, comp, size, crc = 0, m.data, len(m.data), zlib.crc32(m.data)
        else:
            method, comp, size, crc = 8, m.deflated, m.size, m.crc
        offset = out.tell()
        out.write(
            struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(comp), size, len(name), 0)
        )
        out.write(name)
        out.write(comp)
        central.append(
            struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                20,
                20,
                0,
                method,
                0,
                0x21,
                crc,
                len(comp),
                size,
                len(name),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + name
        )
    cd_start = out.tell()
    for c in central:
        out.write(c)
    cd_size = out.tell() - cd_start
    n = len(central)
    if n > 0xFFFF:  # zip64 end records carry the entry count
        z64 = out.tell()
        out.write(struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, cd_size, cd_start))
        out.write(struct.pack("<4sIQI", b"PK\x06\x07", 0, z64, 1))
        n = 0xFFFF
    out.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, cd_size, cd_start, 0))
    return out.getvalue()


_ZERO_SEGMENT: dict[int, tuple[bytes, int]] = {}
_CRC: dict[tuple, int] = {}


def zeros_deflated(prefix: bytes, n_zeros: int) -> Member:
    """A raw-deflate stream of ``prefix`` followed by ``n_zeros`` zero bytes (~1000:1), built from
    a repeated 64 MiB segment: memory stays at one segment however large the bomb."""
    seg_len = 64 * MiB
    if seg_len not in _ZERO_SEGMENT:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        block = bytes(seg_len)
        _ZERO_SEGMENT[seg_len] = (c.compress(block) + c.flush(zlib.Z_FULL_FLUSH), zlib.crc32(block))
    seg, _ = _ZERO_SEGMENT[seg_len]
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH) if prefix else b""
    k, rest = divmod(n_zeros, seg_len)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = c.compress(bytes(rest)) + c.flush(zlib.Z_FINISH)
    key = (prefix, n_zeros)
    if key not in _CRC:
        crc = zlib.crc32(prefix)
        block = bytes(seg_len)
        for _ in range(k):
            crc = zlib.crc32(block, crc)
        _CRC[key] = zlib.crc32(bytes(rest), crc)
    crc = _CRC[key]
    return Member("", deflated=head + seg * k + tail, size=len(prefix) + n_zeros, crc=crc)


def npy_header(dtype: str, shape: tuple) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def bomb(name: str, n_zeros: int, prefix: bytes = b"", declared: Optional[int] = None) -> Member:
    """A member inflating to ``prefix`` + ``n_zeros`` zero bytes; ``declared``: the (lying)
    uncompressed size its headers state."""
    m = zeros_deflated(prefix, n_zeros)
    m.name = name
    if declared is not None:
        m.size = declared
    return m


# --------------------------------------------------------------------------------- zip rewriting


class Replace:
    """Returned by an edit function: use ``value`` as the whole new document (bytes: as is)."""

    def __init__(self, value):
        self.value = value


def members_of(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def rezip(
    src: Path,
    dst: Path,
    edit: Optional[Callable[[str, bytes], Optional[bytes]]] = None,
    add: Optional[dict] = None,
    extra: Optional[list[Member]] = None,
) -> Path:
    """Copy the zip ``src`` to ``dst``; ``edit(name, data)`` returns new data or None (drop it)."""
    members = []
    for n, data in members_of(src).items():
        new = edit(n, data) if edit else data
        if new is not None:
            members.append(stored(n, new))
    for n, data in (add or {}).items():
        members.append(stored(n, data))
    return write_zip(dst, members + list(extra or []))


def edit_json_member(src: Path, dst: Path, member: str, fn) -> Path:
    """Rewrite one JSON member: ``fn(doc)`` edits in place or returns the new document."""

    def go(n, data):
        if n != member:
            return data
        doc = json.loads(data)
        new = fn(doc)  # edits in place, or returns Replace(new document)
        doc = new.value if isinstance(new, Replace) else doc
        return doc if isinstance(doc, bytes) else json.dumps(doc).encode()

    return rezip(src, dst, go)


def first_array(path: Path, prefix: str) -> str:
    return sorted(n for n in members_of(path) if n.startswith(prefix) and n.endswith(".npy"))[0]


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------ artifacts


def copy_artifact(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def edit_manifest(art: Path, fn) -> Path:
    mf = art / "manifest.json"
    doc = json.loads(mf.read_text())
    new = fn(doc)
    doc = new.value if isinstance(new, Replace) else doc
    mf.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return art


def rehash(art: Path) -> None:
    """Recompute the sha256 table of a C / bundle / ONNX / TVM manifest after editing files."""
    from edgeseq.util.fs import sha256_file

    doc = json.loads((art / "manifest.json").read_text())
    for k, v in doc.get("files", {}).items():
        if (art / k).is_file() and isinstance(v, dict):
            v["sha256"] = sha256_file(art / k)
    (art / "manifest.json").write_text(json.dumps(doc))


# ------------------------------------------------------------------------------------- fixtures


@dataclass
class Fixtures:
    root: Path
    esq: Path  # a float IR graph (GRU classifier, 3 features, 4 classes)
    qesq: Path  # its quantized graph
    other_qesq: Path  # a quantized graph of another model with the same shapes
    ckpt: Path  # a checkpoint of the same architecture
    onnx: Path  # a float ONNX artifact of esq
    bundle: Path  # an x86 bundle (tvm/ + c/) of esq
    npz: Path  # a valid data file (x, y) for esq


def build(root: Path, *, bundle: bool = True) -> Fixtures:
    """Real files to damage (a few seconds; the x86 bundle compiles TVM kernels and a C binary)."""
    import torch

    import edgeseq
    from edgeseq.nn import build_model
    from edgeseq.quant import quantize
    from edgeseq.train.checkpoint import save_checkpoint

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = build_model("gru", 3, 4, hidden=8)
    save_checkpoint(model, root / "m.ckpt", metrics={"task": "har"})
    g = edgeseq.capture(model, torch.zeros(1, 8, 3))
    g.save(root / "g.esq")
    calib = rng.standard_normal((16, 10, 3)).astype(np.float32)
    quantize(g, calib).save(root / "g.q.esq")
    torch.manual_seed(1)
    other = edgeseq.capture(build_model("gru", 3, 4, hidden=8), torch.zeros(1, 8, 3))
    quantize(other, calib).save(root / "other.q.esq")
    x = rng.standard_normal((12, 10, 3)).astype(np.float32)
    np.savez(root / "data.npz", x=x, y=rng.integers(0, 4, 12))
    edgeseq.export(g, target="onnx", out=root / "onnx")
    if bundle:
        edgeseq.export(g, target="x86", out=root / "bundle")
    return Fixtures(
        root,
        root / "g.esq",
        root / "g.q.esq",
        root / "other.q.esq",
        root / "m.ckpt",
        root / "onnx",
        root / "bundle",
        root / "data.npz",
    )
