#!/usr/bin/env python
"""Pack the Free Spoken Digit Dataset into the one compressed file edgeseq ships.

    .venv/bin/python scripts/pack_fsdd.py free-spoken-digit-dataset-26eb9aa.tar.gz

Reads ``recordings/{digit}_{speaker}_{take}.wav`` (8 kHz mono 16-bit) and ``metadata.py`` from the
dataset's repository tarball (or an unpacked checkout) and writes ``edgeseq/data/fsdd/fsdd.npz``:
a zip of ``.npy`` members compressed with LZMA (readable with ``numpy.load``). The samples are
stored losslessly: the first difference of all clips concatenated (int16, wrapping) split into a
low-byte and a high-byte plane, which compresses to ~12 MB against 15.6 MB for the tarball of WAVs.
:func:`edgeseq.data.digits.fsdd_clips` reverses it and checks the sha256 of the decoded samples.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import re
import sys
import tarfile
import wave
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "edgeseq" / "data" / "fsdd" / "fsdd.npz"
NAME = re.compile(r"(?:^|/)recordings/(\d)_([a-z]+)_(\d+)\.wav$")


def _members(src: Path):
    """(name, bytes) of every file of the dataset, from a tarball or a directory."""
    if src.is_dir():
        for p in sorted(src.rglob("*")):
            if p.is_file():
                yield p.relative_to(src).as_posix(), p.read_bytes()
        return
    with tarfile.open(src) as tar:
        for m in tar:
            if m.isfile():
                yield m.name, tar.extractfile(m).read()


def _metadata(text: str) -> dict:
    tree = ast.parse(text)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "metadata" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("metadata.py defines no 'metadata' dictionary")


def pack(src: Path, out: Path, commit: str) -> dict:
    clips, meta = [], None
    for name, data in _members(src):
        m = NAME.search(name)
        if m:
            with wave.open(io.BytesIO(data)) as w:
                if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (8000, 1, 2):
                    raise SystemExit(f"{name}: expected 8 kHz mono 16-bit PCM")
                pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
            clips.append((int(m.group(1)), m.group(2), int(m.group(3)), pcm))
        elif name.endswith("metadata.py"):
            meta = _metadata(data.decode("utf-8"))
    if not clips or meta is None:
        raise SystemExit(f"{src}: no recordings/*.wav or no metadata.py found")
    speakers = sorted({c[1] for c in clips})
    clips.sort(key=lambda c: (speakers.index(c[1]), c[0], c[2]))
    pcm = np.concatenate([c[3] for c in clips])
    diff = np.diff(pcm.astype(np.int32), prepend=0).astype(np.int16)  # wraps modulo 2**16: lossless
    planes = diff.view(np.uint8).reshape(-1, 2)
    info = {
        "dataset": "Free Spoken Digit Dataset (FSDD)",
        "commit": commit,
        "source": "https://github.com/Jakobovski/free-spoken-digit-dataset",
        "license": "CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)",
        "sample_rate": 8000,
        "clips": len(clips),
        "samples": int(pcm.size),
        "pcm_sha256": hashlib.sha256(pcm.astype("<i2").tobytes()).hexdigest(),
        "encoding": "first difference of the concatenated int16 clips (wrapping), low / high byte planes",
        "speakers": {s: meta.get(s, {}) for s in speakers},
    }
    arrays = {
        "pcm_lo": np.ascontiguousarray(planes[:, 0]),
        "pcm_hi": np.ascontiguousarray(planes[:, 1]),
        "lengths": np.array([c[3].size for c in clips], dtype=np.int32),
        "digit": np.array([c[0] for c in clips], dtype=np.int8),
        "speaker": np.array([speakers.index(c[1]) for c in clips], dtype=np.int8),
        "take": np.array([c[2] for c in clips], dtype=np.int8),
        "speakers": np.array(speakers),
        "info": np.array(json.dumps(info, sort_keys=True)),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, a in arrays.items():
            npy = io.BytesIO()
            np.save(npy, a, allow_pickle=False)
            zi = zipfile.ZipInfo(f"{k}.npy", date_time=(2024, 5, 2, 0, 0, 0))  # reproducible bytes
            zi.compress_type = zipfile.ZIP_LZMA
            z.writestr(zi, npy.getvalue())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out)
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", type=Path, help="the dataset repository tarball or an unpacked checkout")
    ap.add_argument("--commit", default="26eb9aa", help="repository commit of the source (recorded in the file)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    info = pack(args.source, args.out, args.commit)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {info['clips']} clips, "
        f"{info['samples']} samples, speakers {', '.join(info['speakers'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
