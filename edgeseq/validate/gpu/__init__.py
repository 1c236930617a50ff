"""Reference kernels for whole IR graphs on a GPU (Triton) or, without one, in plain torch.

Scan families and how they run:

===========================  ==========================================================================
linear recurrences           minGRU, minLSTM: parallel associative scan over (a_t, b_t) pairs;
                             LMU memory: parallel doubling scan with a constant transition matrix
nonlinear cells              RNN, GRU, LSTM, LIF, CuBa-LIF: one fused per-step kernel per layer
                             (input projection hoisted to one matmul over the sequence)
step loops (torch)           LMU with hidden-to-memory feedback, L2MU
feed-forward ops, readouts   torch on the same device
===========================  ==========================================================================

    from edgeseq.validate.gpu import reference_run
    (y,), state = reference_run(graph, x)                     # cuda + Triton when present, else torch on CPU
    (y,), state = reference_run(graph, x, device="cpu", dtype="float64")

``kernels="triton"`` on a machine without CUDA runs the Triton kernels in Triton's interpreter
(``TRITON_INTERPRET=1`` must be set before triton is imported). Triton is an optional extra:
``pip install 'edgeseq[gpu]'``. Importing this package imports torch, not triton.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from types import ModuleType
from typing import Any, Mapping, Optional

import numpy as np

from ...errors import ConfigError, ToolchainMissingError

__all__ = ["reference_run", "ReferenceRunner", "resolve", "status", "TRITON_INSTALL"]

TRITON_INSTALL = "pip install 'edgeseq[gpu]'  (or: pip install triton)"
DEVICES = ("auto", "cuda", "cpu")
KERNELS = ("auto", "triton", "torch")


def _torch_dtype(dtype: Any):
    import torch

    if dtype in (None, "float32", np.float32, torch.float32) or (isinstance(dtype, np.dtype) and dtype == np.float32):
        return torch.float32
    if dtype in ("float64", np.float64, torch.float64) or (isinstance(dtype, np.dtype) and dtype == np.float64):
        return torch.float64
    raise ConfigError(f"reference dtype must be float32 or float64, got {dtype!r}", where="edgeseq.validate.gpu")


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _triton_kernels() -> ModuleType:
    if not triton_available():
        raise ToolchainMissingError("triton", install=TRITON_INSTALL, purpose="the Triton reference kernels")
    from . import triton_kernels

    return triton_kernels


def resolve(device: str = "auto", kernels: str = "auto"):
    """(torch.device, kernel module) for the requested device and kernel set.

    ``device``: auto (cuda when available) | cuda | cpu. ``kernels``: auto (Triton on cuda when
    importable, else torch) | triton | torch."""
    import torch

    if device not in DEVICES:
        raise ConfigError(f"unknown device '{device}'; choose one of: {', '.join(DEVICES)}")
    if kernels not in KERNELS:
        raise ConfigError(f"unknown kernel set '{kernels}'; choose one of: {', '.join(KERNELS)}")
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise ConfigError(
            "no CUDA device is available to this process",
            where="edgeseq.validate.gpu",
            hint="use device='cpu' (or 'auto'), or --reference cpu",
        )
    dev = torch.device("cuda" if device == "cuda" or (device == "auto" and has_cuda) else "cpu")
    if kernels == "auto":
        kernels = "triton" if dev.type == "cuda" and triton_available() else "torch"
    if kernels == "triton":
        mod = _triton_kernels()
        mod.check_device(dev)
        return dev, mod
    from . import torch_kernels

    return dev, torch_kernels


class ReferenceRunner:
    """A graph prepared for repeated reference runs (parameters converted and placed once).

    ``runner(x_tensor, state=None) -> (outputs, state)`` works on torch tensors on ``runner.device``;
    ``runner.run(x_numpy)`` converts; ``runner.plan`` says which kernel runs each node."""

    def __init__(self, graph, device: str = "auto", dtype: Any = "float32", kernels: str = "auto"):
        from ...ir.graph import Graph
        from .executor import GraphExecutor

        if not isinstance(graph, Graph):
            raise ConfigError(f"reference_run needs an edgeseq IR Graph, got {type(graph).__name__}")
        self.device, mod = resolve(device, kernels)
        self.dtype = _torch_dtype(dtype)
        self.kernels = mod.NAME
        self._exec = GraphExecutor(graph, self.device, self.dtype, mod)
        self.graph = graph

    @property
    def plan(self) -> dict[str, str]:
        return dict(self._exec.plan)

    def __call__(self, x, state=None):
        import torch

        with torch.no_grad():
            return self._exec(x, state)

    def tensor(self, x):
        import torch

        return torch.as_tensor(np.asarray(x, dtype=np.float64), device=self.device).to(self.dtype)

    def run(self, x, state: Optional[Mapping[str, np.ndarray]] = None):
        """numpy in, numpy out: ``(outputs tuple, new state dict)`` like :func:`edgeseq.ir.interpret.run`."""
        from ...ir.interpret import check_input, check_state

        x = check_input(self.graph, x)
        st = None
        if state is not None:
            st = {k: self.tensor(v) for k, v in check_state(self.graph, state, x.shape[0], np.float64).items()}
        outs, new = self(self.tensor(x), st)
        return (tuple(o.detach().cpu().numpy() for o in outs), {k: v.detach().cpu().numpy() for k, v in new.items()})


def reference_run(
    graph,
    x,
    state: Optional[Mapping[str, np.ndarray]] = None,
    *,
    device: str = "auto",
    dtype: Any = "float32",
    kernels: str = "auto",
):
    """Run the whole IR ``graph`` on ``x`` (B, T, F) with the reference kernels.

    Returns ``(outputs, new_state)`` as numpy arrays in ``dtype``, exactly like the float64
    interpreter's :func:`~edgeseq.ir.interpret.run`. ``device`` auto | cuda | cpu; ``dtype``
    float32 | float64; ``kernels`` auto | triton | torch (see :func:`resolve`)."""
    return ReferenceRunner(graph, device, dtype, kernels).run(x, state)


def status() -> dict:
    """What the reference can use here: CUDA device, triton, interpreter mode."""
    import os

    import torch

    info = {
        "cuda": torch.cuda.is_available(),
        "triton": triton_available(),
        "triton_interpret_env": os.environ.get("TRITON_INTERPRET", "") not in ("", "0"),
    }
    if info["cuda"]:
        info["device_name"] = torch.cuda.get_device_name(0)
    if info["triton"]:
        try:
            info["triton_version"] = importlib.metadata.version("triton")
        except Exception:  # noqa: BLE001 - metadata may be missing in odd installs
            pass
    return info
