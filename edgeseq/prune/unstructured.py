"""Unstructured magnitude pruning: per weight tensor (per layer), zero the smallest-magnitude weights.

The zeros are held by :class:`PruneMasks` while the model trains: attached masks zero the gradient
of every pruned weight (so optimizers with decoupled weight decay, Adam(W) included, never move
them) and re-apply the mask before every forward pass (so even an optimizer that does move them
cannot make the model compute with them).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import ConfigError, ShapeError
from .config import UnstructuredConfig

ALWAYS_EXCLUDED = ("l2mu.a",)  # the learnable Legendre memory transition: structure, not weights


def prunable_weights(model, include: Optional[tuple[str, ...]] = None, exclude: tuple[str, ...] = ()) -> list[str]:
    """Names of the weight matrices (parameters of rank >= 2) that unstructured pruning touches."""
    names = []
    for name, p in model.named_parameters():
        if p.dim() < 2 or name in ALWAYS_EXCLUDED:
            continue
        if include is not None and not any(s in name for s in include):
            continue
        if any(s in name for s in exclude):
            continue
        names.append(name)
    return names


class PruneMasks:
    """Boolean keep-masks (True = weight kept) for named parameters of a model."""

    def __init__(self, masks: dict):
        import torch

        self.masks = {k: torch.as_tensor(v, dtype=torch.bool) for k, v in masks.items()}
        self._handles: list = []

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def magnitude(cls, model, sparsity: float, names: Optional[list[str]] = None) -> "PruneMasks":
        """Per tensor, mask the ``round(sparsity * numel)`` smallest |w| (ties broken by position)."""
        import torch

        params = dict(model.named_parameters())
        names = prunable_weights(model) if names is None else names
        masks = {}
        for n in names:
            if n not in params:
                raise ConfigError(f"model has no parameter '{n}'", where=type(model).__name__)
            w = params[n].detach().abs().flatten()
            k = int(round(sparsity * w.numel()))
            keep = torch.ones(w.numel(), dtype=torch.bool)
            if k > 0:
                order = torch.argsort(w, stable=True)
                keep[order[:k]] = False
            masks[n] = keep.reshape(params[n].shape)
        return cls(masks)

    # -- use --------------------------------------------------------------------------------------
    def _check(self, model) -> dict:
        params = dict(model.named_parameters())
        for n, m in self.masks.items():
            if n not in params:
                raise ConfigError(f"mask for '{n}' but the model has no such parameter", where=type(model).__name__)
            if tuple(params[n].shape) != tuple(m.shape):
                raise ShapeError(
                    f"mask shape {tuple(m.shape)} does not match the parameter {tuple(params[n].shape)}", where=n
                )
        return params

    def apply(self, model) -> None:
        """Zero the masked weights of ``model`` in place."""
        import torch

        params = self._check(model)
        with torch.no_grad():
            for n, m in self.masks.items():
                params[n].mul_(m.to(params[n].dtype))

    def attach(self, model) -> "PruneMasks":
        """Keep the masks through training: gradient hooks + a forward pre-hook (see module doc)."""
        self.detach()
        params = self._check(model)
        self.apply(model)
        for n, m in self.masks.items():
            mf = m.to(params[n].dtype)
            self._handles.append(params[n].register_hook(lambda g, mf=mf: g * mf))
        self._handles.append(model.register_forward_pre_hook(lambda mod, args: self.apply(mod)))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # -- reporting --------------------------------------------------------------------------------
    def summary(self) -> dict:
        layers = {
            n: {"numel": int(m.numel()), "pruned": int((~m).sum()), "sparsity": float((~m).sum()) / max(1, m.numel())}
            for n, m in self.masks.items()
        }
        total = sum(v["numel"] for v in layers.values())
        pruned = sum(v["pruned"] for v in layers.values())
        return {"tensors": layers, "numel": total, "pruned": pruned, "sparsity": pruned / total if total else 0.0}


def nonzero_parameters(model) -> int:
    return int(sum(int((p.detach() != 0).sum()) for p in model.parameters()))


def prune_unstructured(model, config: UnstructuredConfig):
    """(pruned copy of ``model``, masks, report). The copy keeps all shapes; masked weights are 0."""
    import copy

    from .structured import count_parameters

    names = prunable_weights(model, config.include, config.exclude)
    if not names:
        raise ConfigError("no weight matrices match the include/exclude filters", where=type(model).__name__)
    new = copy.deepcopy(model)
    masks = PruneMasks.magnitude(new, config.sparsity, names)
    masks.apply(new)
    total = count_parameters(new)
    nz = nonzero_parameters(new)
    report = {
        "method": "unstructured",
        "config": config.to_dict(),
        "arch": (getattr(model, "config", None) or {}).get("arch", type(model).__name__),
        "parameters_before": count_parameters(model),
        "parameters_after": total,
        "nonzero_before": nonzero_parameters(model),
        "nonzero_after": nz,
        "parameter_reduction": 1.0 - nz / total if total else 0.0,
        "masks": masks.summary(),
    }
    return new, masks, report


def sparse_bytes(model, index_bytes: int = 1) -> dict:
    """Storage estimate of a masked model: dense float32 vs a per-weight bitmap + nonzero values, and
    vs a coordinate list with ``index_bytes`` per index (a rough guide for MCU flash)."""
    total = sum(p.numel() for p in model.parameters())
    nz = nonzero_parameters(model)
    return {
        "dense_float32": 4 * total,
        "bitmap_float32": 4 * nz + int(np.ceil(total / 8)),
        "coo_float32": (4 + index_bytes) * nz,
    }
