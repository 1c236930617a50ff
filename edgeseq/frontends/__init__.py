"""Capture: trained torch / edgeseq.nn / snntorch models -> IR graphs.

    graph = edgeseq.capture(model, example_input)

``example_input`` is a (B, T, F) batch in the model's own layout ((T, B, F) for a model whose
recurrent layers use batch_first=False). Capture reads the weights in inference mode, builds the
graph, and (``check=True``) runs the model and the reference interpreter on the example and
raises if they disagree beyond float32 noise, so a capture bug cannot pass silently.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ShapeError, UnsupportedModuleError, VerificationError
from ..ir.graph import Graph, GraphBuilder
from .modules import CONVERTERS, Ctx, supported_module_kinds
from .values import Val

__all__ = ["capture", "torch_forward", "supported_module_kinds"]


class _Root(nn.Module):
    """Wraps a bare leaf module (e.g. an nn.GRU) so fx traces a call to it."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def _first_recurrent(module: nn.Module) -> Optional[nn.Module]:
    for m in module.modules():
        if isinstance(m, (nn.RNN, nn.GRU, nn.LSTM, nn.MultiheadAttention)):  # the first batch_first flag
            return m
    return None


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().float()
    from ..util.finite import as_array

    return torch.as_tensor(as_array(x, "example_input"), dtype=torch.float32)


def is_step_net(module: nn.Module) -> bool:
    from .snn import contains_snntorch

    return isinstance(module, nn.Sequential) and contains_snntorch(module)


@torch.no_grad()
def torch_forward(module: nn.Module, x_btf: torch.Tensor, input_layout: str = "BTF"):
    """Run ``module`` the way its captured graph is defined, on batch-first ``x``; returns a tuple of
    batch-first float64 numpy outputs (for comparisons with the reference)."""
    from .snn import run_step_net

    was_training = module.training
    module.eval()
    try:
        if is_step_net(module):
            out = run_step_net(module, x_btf)
            outs = out if isinstance(out, tuple) else (out,)
        else:
            xin = x_btf.transpose(0, 1) if input_layout == "TBF" else x_btf
            if input_layout == "static":
                xin = x_btf[:, 0]
            out = module(xin)
            if isinstance(module, (nn.RNN, nn.GRU, nn.LSTM)) or (
                isinstance(out, tuple) and len(out) == 2 and not isinstance(out[1], torch.Tensor)
            ):
                out = out[0]
            outs = out if isinstance(out, tuple) else (out,)
            if input_layout in ("TBF", "static"):
                outs = tuple(o.transpose(0, 1) if o.dim() == 3 else o for o in outs)
    finally:
        module.train(was_training)
    return tuple(o.detach().double().numpy() for o in outs)


def capture(
    module: nn.Module,
    example_input: Any = None,
    *,
    in_features: Optional[int] = None,
    input_layout: str = "auto",
    check: bool = True,
    metadata: Optional[Mapping[str, Any]] = None,
    nir=None,
) -> Graph:
    """Capture ``module`` into an IR :class:`Graph`.

    ``module`` may also be a NIR graph (a .nir path or a ``nir.NIRGraph``); ``nir`` is then an optional
    :class:`~edgeseq.frontends.nir.NirOptions` (dt, discretisation, reset rule, semantics).

    Supported: nn.Linear, nn.Conv1d (causal), norms, activations, nn.RNN/GRU/LSTM (multi-layer,
    batch_first or not), edgeseq.nn modules, and snntorch step networks (nn.Sequential with
    init_hidden=True Leaky/RLeaky/Synaptic/RSynaptic neurons). Anything else raises
    :class:`UnsupportedModuleError` naming its module path and the supported kinds."""
    if isinstance(module, (str, os.PathLike)) and str(module).endswith(".nir") or type(module).__name__ == "NIRGraph":
        from .nir import load_nir

        return load_nir(module, nir, metadata=metadata)
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"capture expects a torch.nn.Module, a .nir file or a nir.NIRGraph, got {type(module).__name__}"
        )
    if input_layout not in ("auto", "BTF", "TBF"):
        raise ConfigError(f"input_layout must be 'auto', 'BTF' or 'TBF', got '{input_layout}'")
    if input_layout == "auto":
        rnn = _first_recurrent(module)
        input_layout = "TBF" if rnn is not None and not rnn.batch_first else "BTF"
    x = None
    if example_input is not None:
        x = _as_tensor(example_input)
        if x.dim() == 2 and not is_step_net(module) and _first_recurrent(module) is None:
            try:
                return _capture_static(module, x, check=check, metadata=metadata)
            except UnsupportedModuleError as err:
                raise ShapeError(
                    f"example_input must be 3-D (batch, time, features), or 2-D (batch, features) for "
                    f"a model that loops over a static input; as the latter: {err}"
                ) from None
        if x.dim() != 3:
            raise ShapeError(f"example_input must be 3-D (batch, time, features), got shape {tuple(x.shape)}")
        if input_layout == "TBF":
            x = x.transpose(0, 1)
        in_features = x.shape[-1] if in_features is None else in_features
        if x.shape[-1] != in_features:
            raise ShapeError(f"example_input has {x.shape[-1]} features, in_features says {in_features}")
    if in_features is None:
        in_features = _guess_in_features(module)
    builder = GraphBuilder(int(in_features))
    ctx = Ctx(builder)
    loop = False
    was_training = module.training
    module.eval()
    try:
        if is_step_net(module):
            from .snn import capture_step_net

            try:
                outs = capture_step_net(module, ctx, Val("x", "BTF"))
            except UnsupportedModuleError as err:
                if x is None or not err.message.endswith("is not supported"):
                    raise
                builder, outs, input_layout, x, zero_start = _capture_loop(StepLoop(module), x, "BTF", int(in_features))
                loop = True
        else:
            from .fx import FxCapture

            root = _Root(module) if type(module) in CONVERTERS else module
            try:
                outs = FxCapture(root, ctx, input_layout).run()
            except UnsupportedModuleError as err:
                if x is None or not err.message.startswith("cannot trace"):
                    raise
                from .constructs import check_constructs

                check_constructs(module)  # a known unsupported construct: name it and its alternative
                builder, outs, input_layout, x, zero_start = _capture_loop(module, x, input_layout, int(in_features))
                loop = True
    finally:
        module.train(was_training)
    md = {"source": f"torch:{type(module).__module__}.{type(module).__name__}"}
    cfg = getattr(module, "config", None)
    if isinstance(cfg, dict):
        md["model_config"] = cfg
    md.update(metadata or {})
    md["input_layout"] = input_layout
    if ctx.window and not loop:  # constructs that read the future: the graph runs on whole windows
        md["window"] = "; ".join(ctx.window)
    delays = [ctx.delay.get(o.name, 0) if o.temporal else 0 for o in outs]
    if any(delays):  # temporal outputs of valid convolutions: their first steps are warm-up
        md["output_delays"] = delays
    graph = builder.build([o.name for o in outs], md)
    if check and x is not None:
        with _first_iteration(module, loop and not zero_start):
            _check_against_torch(module, graph, x, input_layout)
            if loop:  # a length and batch size the loop was not traced at
                gen = torch.Generator().manual_seed(1)
                x2 = torch.randn(2, x.shape[1] + 3, x.shape[2], generator=gen) * x.std() + x.mean()
                _check_against_torch(module, graph, x2, input_layout)
    return graph


@contextlib.contextmanager
def _first_iteration(module: nn.Module, differs: bool):
    """A loop whose first iteration differs from the others (work on its initial states folded away)
    is captured from zero states; if the graph then disagrees with the model, the states did not start
    from zero: say that in one line."""
    try:
        yield
    except VerificationError:
        if not differs:
            raise
        from .loops import NONZERO_INIT_HINT

        raise UnsupportedModuleError(
            "the loop's states do not start from zeros (a non-zero constant, or a value computed from the input)",
            where=type(module).__name__,
            hint=NONZERO_INIT_HINT,
        ) from None


class StepLoop(nn.Module):
    """An snntorch step network run over a (B, T, F) sequence the way its users run it (hidden states
    reset, one call per step): loop capture rolls it back into one step, whatever neurons it holds."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        from .snn import reset_step_net

        reset_step_net(self.net)
        outs = [self.net(x[:, t]) for t in range(x.shape[1])]
        if isinstance(outs[0], tuple):
            return tuple(torch.stack([o[k] for o in outs], dim=1) for k in range(len(outs[0])))
        return torch.stack(outs, dim=1)


def _capture_loop(module: nn.Module, x: torch.Tensor, layout: str, in_features: int):
    """A model whose forward loops over time in Python (see :mod:`.loops`)."""
    from .loops import LoopCapture, time_axis_of

    native = x.transpose(0, 1) if layout == "TBF" else x
    axis = time_axis_of(module, native)
    layout = "TBF" if axis == 0 else "BTF"
    builder = GraphBuilder(in_features)
    cap = LoopCapture(module, native, axis)
    outs = cap.build(builder)
    x_btf = native.transpose(0, 1) if axis == 0 else native
    return builder, [Val(o, "BTF") for o in outs], layout, x_btf, cap.first_same


def _capture_static(module: nn.Module, x: torch.Tensor, *, check: bool, metadata) -> Graph:
    """A model whose loop reads a static (B, F) input every step (e.g. the snntorch tutorials): the
    graph takes the input repeated at every step; its metadata records the number of steps."""
    from .loops import LoopCapture

    was_training = module.training
    module.eval()
    try:
        cap = LoopCapture(module, x, None)
        builder = GraphBuilder(int(x.shape[-1]))
        outs = cap.build(builder)
    finally:
        module.train(was_training)
    md = {
        "source": f"torch:{type(module).__module__}.{type(module).__name__}",
        "input_layout": "static",
        "static_steps": cap.steps,
        **(metadata or {}),
    }
    graph = builder.build(outs, md)
    if check:
        for xs in (x, torch.randn(2, x.shape[1], generator=torch.Generator().manual_seed(1)) * x.std() + x.mean()):
            rep = xs[:, None, :].expand(-1, cap.steps, -1)
            with _first_iteration(module, not cap.first_same):
                _check_against_torch(module, graph, rep, "static")
    return graph


def _guess_in_features(module: nn.Module) -> int:
    for m in module.modules():
        for attr in ("in_features", "input_size", "in_channels"):
            if isinstance(getattr(m, attr, None), int):
                return getattr(m, attr)
    raise ConfigError("cannot infer the number of input features; pass example_input or in_features")


def _check_against_torch(module: nn.Module, graph: Graph, x: torch.Tensor, layout: str) -> None:
    from ..ir.interpret import run

    got, _ = run(graph, x.double().numpy())
    delays = graph.metadata.get("output_delays") or [0] * len(got)
    got = tuple(g[:, d:] if d else g for g, d in zip(got, delays))
    want = torch_forward(module, x, layout)
    if len(got) != len(want):
        raise VerificationError(f"captured graph has {len(got)} outputs, the module returns {len(want)}")
    for k, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            raise VerificationError(
                f"captured output {k} has shape {g.shape}, the module returns {w.shape}", where=type(module).__name__
            )
        if graph.output_types[k].spikes:
            agree = float(np.mean(g == w))
            if agree < 0.99:
                raise VerificationError(
                    f"captured graph disagrees with the module on {100 * (1 - agree):.2f}% of spikes of output {k}",
                    where=type(module).__name__,
                )
        else:
            scale = max(1.0, float(np.max(np.abs(w))))
            err = float(np.max(np.abs(g - w)))
            if err > 1e-3 * scale:
                raise VerificationError(
                    f"captured graph differs from the module by {err:.3g} (max abs) on output {k}",
                    where=type(module).__name__,
                    hint="please report this model: capture must be exact",
                )
