"""Peak memory of edgeseq on zip bombs: small files (about 2 MB) that inflate to 2.3 GB, given to
the real commands as IR graphs, checkpoints, quantization plans and data files.

Each case runs in a fresh process (the CLI exactly as a user types it, and the Python API loader);
the peak resident set size comes from the kernel (``wait4`` rusage ``ru_maxrss``) and includes the
interpreter, numpy and everything the command imports. Target: every case below 200 MB, rejected
with edgeseq's typed one-line error. Results: benchmarks/results/bombs.json.

    python -m benchmarks.bench_bombs [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
INFLATED = 2300 * (1 << 20)  # bytes one bomb member inflates to
LIMIT_MB = 200.0


def _cases(fx, d: Path, n: int):
    """(name, file, CLI argv, Python API statement) of every bomb, written into ``d``."""
    from tests.unit import bad_inputs as B

    def npy_shape(blob):
        return np.load(io.BytesIO(blob)).shape

    cases = []
    m = B.members_of(fx.esq)
    arr = B.first_array(fx.esq, "arrays/")
    B.write_zip(
        d / "array.esq",
        [B.stored(k, v) for k, v in m.items() if k != arr] + [B.bomb(arr, n, B.npy_header("<f4", npy_shape(m[arr])))],
    )
    cases.append(
        (
            "esq: array member inflates past its declared shape",
            d / "array.esq",
            ["info", d / "array.esq"],
            "import edgeseq; edgeseq.load({p!r})",
        )
    )
    B.write_zip(
        d / "json.esq",
        [B.bomb("graph.json", n, b'{"format": "edgeseq-ir", "x": "')]
        + [B.stored(k, v) for k, v in m.items() if k != "graph.json"],
    )
    cases.append(
        ("esq: graph.json is the bomb", d / "json.esq", ["info", d / "json.esq"], "import edgeseq; edgeseq.load({p!r})")
    )
    key = arr[len("arrays/") : -4]
    doc = json.loads(m["graph.json"])
    doc["arrays"][key].update(shape=[n // 4], dtype="<f4")
    B.write_zip(
        d / "declared.esq",
        [B.stored("graph.json", json.dumps(doc).encode())]
        + [B.stored(k, v) for k, v in m.items() if k not in ("graph.json", arr)]
        + [B.bomb(arr, n, B.npy_header("<f4", (n // 4,)))],
    )
    cases.append(
        (
            "esq: an honestly declared 2.2 GiB array of zeros",
            d / "declared.esq",
            ["info", d / "declared.esq"],
            "import edgeseq; edgeseq.load({p!r})",
        )
    )

    m = B.members_of(fx.ckpt)
    t = "tensors/0000.npy"
    B.write_zip(
        d / "tensor.ckpt",
        [B.stored(k, v) for k, v in m.items() if k != t] + [B.bomb(t, n, B.npy_header("<f4", npy_shape(m[t])))],
    )
    cases.append(
        (
            "checkpoint: tensor member bomb",
            d / "tensor.ckpt",
            ["info", d / "tensor.ckpt"],
            "from edgeseq.train import load_checkpoint; load_checkpoint({p!r})",
        )
    )
    B.write_zip(
        d / "json.ckpt",
        [B.bomb("checkpoint.json", n, b'{"format": "')]
        + [B.stored(k, v) for k, v in m.items() if k != "checkpoint.json"],
    )
    cases.append(
        (
            "checkpoint: checkpoint.json is the bomb",
            d / "json.ckpt",
            ["info", d / "json.ckpt"],
            "from edgeseq.train import load_checkpoint; load_checkpoint({p!r})",
        )
    )
    B.edit_json_member(
        fx.ckpt,
        d / "hidden.ckpt",
        "checkpoint.json",
        lambda c: (c["config"].update(hidden=1_000_000), c.pop("content_sha256")),
    )
    cases.append(
        (
            "checkpoint: config declares hidden=1000000 (360 GB of weights)",
            d / "hidden.ckpt",
            ["info", d / "hidden.ckpt"],
            "from edgeseq.train import load_checkpoint; load_checkpoint({p!r})",
        )
    )

    m = B.members_of(fx.qesq)
    for member, name in (
        ("quant/prepared.esq", "prepared"),
        (B.first_array(fx.qesq, "quant/consts/"), "const"),
        ("quant/quant.json", "quantjson"),
    ):
        prefix = B.npy_header(*_dtype_shape(m[member])) if member.endswith(".npy") else b"["
        B.write_zip(
            d / f"{name}.q.esq", [B.stored(k, v) for k, v in m.items() if k != member] + [B.bomb(member, n, prefix)]
        )
        cases.append(
            (
                f"plan: {member} is the bomb",
                d / f"{name}.q.esq",
                ["export", fx.esq, "--target", "onnx", "--quant", d / f"{name}.q.esq", "--out", d / "never"],
                "from edgeseq.quant import load_quantized; load_quantized({p!r})",
            )
        )

    B.write_zip(
        d / "lying.npz",
        [B.bomb("x.npy", n, B.npy_header("<f4", (2, 10, 3))), B.stored("y.npy", B.npy_bytes(np.zeros(2, np.int64)))],
    )
    cases.append(
        (
            "data: x.npy inflates past its header",
            d / "lying.npz",
            ["audit", fx.esq, "--data", d / "lying.npz", "--out", d / "never", "--no-ort", "--quiet"],
            "from edgeseq.util.safeio import read_npz; from edgeseq.errors import DatasetError; "
            "read_npz({p!r}, DatasetError)",
        )
    )
    B.write_zip(
        d / "honest.npz",
        [
            B.bomb("x.npy", n, B.npy_header("<f4", (n // 120, 10, 3))),
            B.stored("y.npy", B.npy_bytes(np.zeros(2, np.int64))),
        ],
    )
    cases.append(
        (
            "data: an honestly declared 2.2 GiB x (above the 2 GiB data limit)",
            d / "honest.npz",
            ["validate", fx.onnx, "--data", d / "honest.npz", "--no-measure", "--out", d / "never"],
            "from edgeseq.util.safeio import read_npz; from edgeseq.errors import DatasetError; "
            "read_npz({p!r}, DatasetError)",
        )
    )
    return cases


def _dtype_shape(blob: bytes):
    a = np.load(io.BytesIO(blob))
    return a.dtype.str, a.shape


_HWM = (
    "import atexit, sys\n"
    "def _hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            sys.__stderr__.write('EDGESEQ_VMHWM_KB ' + line.split()[1] + '\\n')\n"
    "atexit.register(_hwm)\n"
)


def peak_rss(code: str) -> tuple[int, float, str]:
    """(exit status, peak RSS in MB, last edgeseq stderr line) of ``code`` run by a fresh interpreter.
    The peak is the process's own high-water mark (VmHWM, read at exit), so nothing of this
    benchmark process is counted."""
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", _HWM + code], capture_output=True, text=True, env=env, timeout=600)
    lines = r.stderr.strip().splitlines()
    kb = [int(line.split()[1]) for line in lines if line.startswith("EDGESEQ_VMHWM_KB ")]
    msg = [line for line in lines if not line.startswith("EDGESEQ_VMHWM_KB ")]
    return r.returncode, (kb[-1] / 1024.0 if kb else float("nan")), msg[-1] if msg else ""


def measure(fx, work: Path, n: int = INFLATED, only=None) -> list[dict]:
    rows = []
    for name, path, cli, api in _cases(fx, work, n):
        if only is not None and name not in only:
            continue
        argv = ["edgeseq", *map(str, cli)]
        cli_rc, cli_mb, cli_msg = peak_rss(
            f"import sys; sys.argv = {argv!r}\nfrom edgeseq.cli import main\nsys.exit(main())"
        )
        api_rc, api_mb, api_msg = peak_rss(api.format(p=str(path)))
        rows.append(
            {
                "case": name,
                "file_bytes": path.stat().st_size,
                "inflated_bytes": n,
                "cli": {
                    "command": "edgeseq " + " ".join(Path(a).name if "/" in str(a) else str(a) for a in cli),
                    "exit_status": cli_rc,
                    "peak_rss_mb": round(cli_mb, 1),
                    "message": cli_msg,
                },
                "api": {
                    "call": api.split("; ")[-1].replace("{p!r}", path.name),
                    "exit_status": api_rc,
                    "peak_rss_mb": round(api_mb, 1),
                    "message": api_msg,
                },
            }
        )
    return rows


def run(quick: bool = False, write: bool = True) -> dict:
    from benchmarks.common import machine_info, write_results
    from tests.unit import bad_inputs as B

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="edgeseq-bombs-") as tmp:
        t0 = time.perf_counter()
        fx = B.build(Path(tmp) / "fixtures", bundle=False)
        work = Path(tmp) / "bombs"
        work.mkdir()
        rows = measure(fx, work, INFLATED // 8 if quick else INFLATED)
    worst = max(max(r["cli"]["peak_rss_mb"], r["api"]["peak_rss_mb"]) for r in rows)
    result = {
        "benchmark": "zip bombs: peak resident memory",
        "machine": machine_info(),
        "limit_mb": LIMIT_MB,
        "inflated_bytes_per_bomb": INFLATED // 8 if quick else INFLATED,
        "cases": rows,
        "worst_peak_rss_mb": worst,
        "all_below_limit": worst < LIMIT_MB,
        "all_rejected": all(r["cli"]["exit_status"] == 2 and r["api"]["exit_status"] == 1 for r in rows),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if write:
        write_results("bombs", result)
    for r in rows:
        print(f"{r['cli']['peak_rss_mb']:7.1f} MB cli  {r['api']['peak_rss_mb']:7.1f} MB api  {r['case']}")
    print(f"worst peak {worst:.1f} MB (limit {LIMIT_MB:.0f} MB)")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    run(quick=args.quick)


if __name__ == "__main__":
    main()
