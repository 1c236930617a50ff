"""A host C artifact's model as a shared library, called through its own C API from Python.

The executable of an ``x86`` C artifact runs sequences from files (:mod:`edgeseq.targets.driver`);
for streaming from Python, :class:`NativeModel` builds the artifact's generated ``model.c`` once
more as a shared library (same compiler and flags, plus ``-fPIC -shared``) and calls
``<prefix>_reset`` / ``<prefix>_step`` / ``<prefix>_pooled`` through ctypes with preallocated
buffers: one foreign call per step, no copies::

    m = NativeModel("out/gru-x86")             # a C artifact (float or integer) built for x86
    m.reset()
    for x_t in stream:                         # x_t: (F,) float32
        y_t = m.step(x_t)                      # (STEP_OUT,) float32, a view of the output buffer
    y = m.pooled()
"""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

import numpy as np

from ...errors import ConfigError, ShapeError
from ...targets.base import BuildError, run_tool

NATIVE_C = """/* edgeseq: sizes of the model's C API for a host binding (ctypes). */
#include <stddef.h>
#include "model.h"
size_t @p@_native_state_bytes(void) { return sizeof(@p@_state); }
int @p@_native_in_features(void) { return @P@_IN_FEATURES; }
int @p@_native_step_out_features(void) { return @P@_STEP_OUT_FEATURES; }
int @p@_native_pooled_out_features(void) { return @P@_POOLED_OUT_FEATURES; }
"""


class NativeModel:
    """The model of the C artifact at ``path`` (built for ``x86``), loaded into this process."""

    def __init__(self, path, build_dir=None):
        from .artifact import CArtifact

        art = CArtifact.load(Path(path)) if not isinstance(path, CArtifact) else path
        if art.target.name != "x86" or platform.machine() not in ("x86_64", "AMD64"):
            raise ConfigError(
                f"a native library loads only on the machine it is built for: the artifact targets '{art.target.name}'",
                hint="export for --target x86 to call the model from Python",
            )
        self.artifact = art
        p = art.manifest["prefix"]
        out = Path(build_dir) if build_dir else art.path / "native"
        out.mkdir(parents=True, exist_ok=True)
        native = out / "native.c"
        native.write_text(NATIVE_C.replace("@p@", p).replace("@P@", p.upper()))
        lib = out / f"lib{p}.so"
        t = art.target
        cc = t.compiler_path()
        run_tool(
            [
                cc,
                *t.cflags(),
                "-fPIC",
                "-shared",
                "-I",
                art.path / "src",
                art.path / "src" / "model.c",
                native,
                "-lm",
                "-o",
                lib,
            ],
            where=f"artifact {art.path}",
            what="building the native library",
            error=BuildError,
        )
        self._lib = ctypes.CDLL(str(lib))
        fn = {
            name: getattr(self._lib, f"{p}_{name}")
            for name in (
                "reset",
                "step",
                "pooled",
                "native_state_bytes",
                "native_in_features",
                "native_step_out_features",
                "native_pooled_out_features",
            )
        }
        fn["native_state_bytes"].restype = ctypes.c_size_t
        for name in ("reset", "step", "pooled"):
            fn[name].restype = None
        fn["reset"].argtypes = [ctypes.c_void_p]
        fn["step"].argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        fn["pooled"].argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.in_features = int(fn["native_in_features"]())
        self.step_out_features = int(fn["native_step_out_features"]())
        self.pooled_out_features = int(fn["native_pooled_out_features"]())
        self._state = np.zeros(-(-int(fn["native_state_bytes"]()) // 8), np.float64)  # 8-byte aligned
        self._x = np.zeros(self.in_features, np.float32)
        self._y = np.zeros(max(1, self.step_out_features), np.float32)
        self._p = np.zeros(max(1, self.pooled_out_features), np.float32)
        self._fn = fn
        self._s, self._xp, self._yp, self._pp = (a.ctypes.data for a in (self._state, self._x, self._y, self._p))
        self.reset()

    def reset(self) -> None:
        """Start a new sequence (zero state)."""
        self._fn["reset"](self._s)

    def step(self, x_t) -> np.ndarray:
        """One step on ``x_t`` (in_features float32 values); returns the step's outputs (a view of
        the output buffer, overwritten by the next call)."""
        x = np.asarray(x_t, np.float32).reshape(-1)
        if x.size != self.in_features:
            raise ShapeError(f"a step takes {self.in_features} input values, got {x.size}")
        self._x[:] = x
        self._fn["step"](self._s, self._xp, self._yp)
        return self._y[: self.step_out_features]

    def step_buffer(self) -> np.ndarray:
        """The input buffer :meth:`step_in_place` reads (write x_t into it)."""
        return self._x

    def step_in_place(self) -> np.ndarray:
        """One step on the input buffer's contents (no argument conversion: the cheapest call)."""
        self._fn["step"](self._s, self._xp, self._yp)
        return self._y[: self.step_out_features]

    def pooled(self) -> np.ndarray:
        """The pooled outputs (readouts over every step since the reset)."""
        self._fn["pooled"](self._s, self._pp)
        return self._p[: self.pooled_out_features].copy()

    def run(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(T, F) -> per-step outputs (T, STEP_OUT) and pooled outputs, from a fresh state."""
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ShapeError(f"run takes (T, {self.in_features}) inputs, got {x.shape}")
        self.reset()
        ys = np.stack([self.step(x_t).copy() for x_t in x]) if len(x) else np.zeros((0, self.step_out_features))
        return ys, self.pooled()
