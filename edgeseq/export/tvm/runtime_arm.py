"""Running aarch64 TVM artifacts on this machine: the TVM runtime for aarch64 and qemu-aarch64.

An ``arm`` artifact is a Relax VM executable in an aarch64 shared library; it needs the TVM
runtime (``libtvm_runtime.so`` + ``libtvm_ffi.so``, ~5 MB) on the device and a host program that
loads it. edgeseq runs it with

- the runtime libraries from the aarch64 wheels of ``apache-tvm`` / ``apache-tvm-ffi`` (same
  versions as the installed TVM), fetched once with ``pip download`` into
  ``~/.cache/edgeseq/tvm-aarch64/<versions>/`` (:func:`fetch_runtime`, or
  ``python -m edgeseq.export.tvm.runtime_arm``), or from a directory named by
  ``$EDGESEQ_TVM_AARCH64_RUNTIME`` that holds both libraries;
- a small C++ driver (``driver/edgeseq_tvm_run.cc``) built with ``aarch64-linux-gnu-g++`` against
  the runtime's headers (the installed TVM's, architecture-independent) and linked with
  ``libtvm_runtime`` (linking it, not only loading it, registers the module loaders and the VM);
- ``qemu-aarch64 -L /usr/aarch64-linux-gnu``. qemu wall time is emulation time, not device time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import ArtifactError, ToolchainMissingError
from ...toolchains import require

LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")
ENV = "EDGESEQ_TVM_AARCH64_RUNTIME"
DRIVER_SRC = Path(__file__).with_name("driver") / "edgeseq_tvm_run.cc"
SYSROOT = "/usr/aarch64-linux-gnu"
FETCH_HINT = f"python -m edgeseq.export.tvm.runtime_arm  (or set ${ENV} to a directory with {' and '.join(LIBS)})"


def versions() -> tuple[str, str]:
    return importlib.metadata.version("apache-tvm"), importlib.metadata.version("apache-tvm-ffi")


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    tvm_v, ffi_v = versions()
    return base / "edgeseq" / "tvm-aarch64" / f"tvm-{tvm_v}_ffi-{ffi_v}"


def _complete(d: Path) -> bool:
    return all((d / lib).is_file() for lib in LIBS)


def runtime_dir() -> Path:
    """Directory holding the aarch64 TVM runtime libraries, or ToolchainMissingError."""
    env = os.environ.get(ENV)
    if env:
        if not _complete(Path(env)):
            raise ArtifactError(f"${ENV} does not hold {' and '.join(LIBS)}", where=env)
        return Path(env)
    d = cache_dir()
    if _complete(d):
        return d
    raise ToolchainMissingError("aarch64 TVM runtime", install=FETCH_HINT, purpose="running arm TVM artifacts")


def fetch_runtime() -> Path:
    """Download the aarch64 wheels of the installed apache-tvm / apache-tvm-ffi versions with pip and
    keep only the two runtime libraries (cached; returns the directory)."""
    d = cache_dir()
    if _complete(d):
        return d
    tvm_v, ffi_v = versions()
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    with tempfile.TemporaryDirectory(prefix="edgeseq-tvm-wheels-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--platform",
            "manylinux_2_28_aarch64",
            "--python-version",
            py,
            "-d",
            tmp,
            f"apache-tvm=={tvm_v}",
            f"apache-tvm-ffi=={ffi_v}",
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["pip failed"]
            raise ToolchainMissingError(
                "aarch64 TVM runtime",
                install=FETCH_HINT,
                purpose=f"running arm TVM artifacts; pip download failed: {tail[0]}",
            )
        stage = Path(tempfile.mkdtemp(dir=_parent(d), prefix=".fetch-"))
        try:
            for wheel in Path(tmp).glob("*.whl"):
                with zipfile.ZipFile(wheel) as z:
                    for name in z.namelist():
                        if Path(name).name in LIBS and "/lib/" in name:
                            (stage / Path(name).name).write_bytes(z.read(name))
            if not _complete(stage):
                raise ArtifactError(f"the aarch64 wheels did not contain {' and '.join(LIBS)}", where=tmp)
            try:
                os.replace(stage, d)
            except OSError:  # another process finished first (d exists and is not empty)
                if not _complete(d):
                    raise

        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return d


def _parent(d: Path) -> Path:
    d.parent.mkdir(parents=True, exist_ok=True)
    return d.parent


def _include_dirs() -> list[str]:
    import importlib.util

    ffi = Path(importlib.util.find_spec("tvm_ffi").origin).parent / "include"
    tvm = Path(importlib.util.find_spec("tvm").origin).parent / "include"
    return [str(ffi), str(tvm)]


def driver_path() -> Path:
    """The aarch64 driver binary, built on first use (cached next to the runtime libraries)."""
    rt = runtime_dir()
    src = DRIVER_SRC.read_bytes()
    key = hashlib.sha256(src + str(rt).encode()).hexdigest()[:16]
    out = cache_dir() / f"edgeseq_tvm_run-{key}"
    if out.is_file():
        return out
    gxx = shutil.which("aarch64-linux-gnu-g++")
    if gxx is None:
        raise ToolchainMissingError(
            "aarch64-linux-gnu-g++",
            install="sudo apt-get install -y g++-aarch64-linux-gnu",
            purpose="building the driver that runs arm TVM artifacts",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    cmd = [
        gxx,
        "-std=c++17",
        "-O2",
        str(DRIVER_SRC),
        *[f"-I{d}" for d in _include_dirs()],
        f"-L{rt}",
        f"-Wl,-rpath,{rt}",
        "-Wl,--no-as-needed",
        "-ltvm_runtime",
        "-ltvm_ffi",
        "-o",
        str(tmp),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise ArtifactError(f"building the aarch64 driver failed: {res.stderr.strip()[-2000:]}", where=str(DRIVER_SRC))
    os.replace(tmp, out)
    return out


# element types the driver reads and writes (its ARG suffix)
DTYPES = {"f32": "<f4", "f64": "<f8", "i8": "|i1", "i16": "<i2", "i32": "<i4", "i64": "<i8", "u8": "|u1"}
_INT_CODES = {"int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64", "uint8": "u8"}


def _arg_dtype(a: np.ndarray) -> str:
    """Driver type code of an argument: integer arrays keep their type, everything else is float32."""
    return _INT_CODES.get(a.dtype.name, "f32") if a.dtype.kind in "iu" else "f32"


def run_qemu(
    library: Path, function: str, args: Sequence[np.ndarray], repeat: int = 1, timeout: float = 600.0
) -> tuple[list[np.ndarray], float | None]:
    """Call ``function`` of the aarch64 Relax VM library under qemu-aarch64 with ``args`` (int8 /
    int16 / int32 / int64 / uint8 arrays keep their type, anything else is passed as float32);
    returns (outputs in the types the library returns, median wall microseconds under emulation
    when repeat > 1)."""
    qemu = require("qemu-aarch64")
    drv = driver_path()
    rt = runtime_dir()
    with tempfile.TemporaryDirectory(prefix="edgeseq-tvm-qemu-") as tmp:
        argv = [qemu, "-L", SYSROOT, "-E", f"LD_LIBRARY_PATH={rt}", str(drv), str(library), function, tmp]
        for i, a in enumerate(args):
            a = np.asarray(a)
            code = _arg_dtype(a)
            a = np.ascontiguousarray(a, dtype=DTYPES[code])
            path = Path(tmp) / f"arg{i}.{code}"
            path.write_bytes(a.tobytes())
            argv.append(f"{path}:{','.join(str(d) for d in a.shape)}" + ("" if code == "f32" else f":{code}"))
        if repeat > 1:
            argv += ["--repeat", str(repeat)]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise ArtifactError(
                f"running under qemu-aarch64 failed (exit {res.returncode}): "
                f"{(res.stderr or res.stdout).strip()[-2000:]}",
                where=str(library),
            )
        outs, median = [], None
        for line in res.stdout.splitlines():
            name, _, rest = line.partition(" ")
            if name.startswith("out"):
                dims, _, code = rest.partition(" ")
                code = code.strip() or "f32"
                if code not in DTYPES:
                    raise ArtifactError(
                        f"the driver returned an output of unsupported type '{code}'", where=str(library)
                    )
                shape = tuple(int(v) for v in dims.split(",")) if dims else ()
                data = np.fromfile(Path(tmp) / f"{name}.bin", dtype=DTYPES[code])
                outs.append(data.reshape(shape).astype(np.dtype(DTYPES[code]).newbyteorder("=")))
            elif name == "median_us":
                median = float(rest)
        return outs, median


if __name__ == "__main__":  # python -m edgeseq.export.tvm.runtime_arm
    path = fetch_runtime()
    print(f"aarch64 TVM runtime in {path}")
