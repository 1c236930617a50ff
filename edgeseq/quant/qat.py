"""Short quantization-aware fine-tuning (QAT) for when post-training quantization misses its budget.

The torch model trains with its weight matrices fake-quantized the way the integer plan stores them
(symmetric int8, one scale per output row) and its raw inputs fake-quantized per channel (asymmetric
8-bit from the calibration range), using the straight-through estimator: each step swaps the
quantized weights in, runs forward and backward, then restores the float ("latent") weights and
applies the gradient to them. This works for every module, including nn.GRU / nn.LSTM whose flat
weight buffers do not tolerate re-parametrisation. The result is a float model whose weights sit
where int8 rounding hurts least; :func:`edgeseq.quant.quantize` then plans it as usual.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np


@dataclass(frozen=True)
class QatConfig:
    epochs: int = 3
    lr: float = 3e-4
    batch_size: int = 64
    weight_bits: int = 8
    input_bits: int = 8
    grad_clip: float = 1.0
    seed: int = 0


def _fake_weight(w, bits: int):
    import torch

    qmax = 2 ** (bits - 1) - 1
    flat = w.reshape(w.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12) / qmax
    q = torch.clamp(torch.round(flat / scale[:, None]), -qmax, qmax) * scale[:, None]
    return q.reshape(w.shape)


class _InputQuant:
    """Per-channel asymmetric fake quantization of raw inputs from a calibration range."""

    def __init__(self, x: np.ndarray, bits: int):
        lo = np.minimum(x.min(axis=(0, 1)), 0.0)
        hi = np.maximum(x.max(axis=(0, 1)), 0.0)
        self.levels = 2**bits - 1
        self.scale = np.maximum(hi - lo, 1e-12) / self.levels
        self.lo = lo

    def __call__(self, x: np.ndarray) -> np.ndarray:
        q = np.clip(np.round((x - self.lo) / self.scale), 0, self.levels)
        return (q * self.scale + self.lo).astype(np.float32)


def quantized_params(module) -> list:
    """The parameters the integer plan stores as int8 matrices (every parameter with >= 2 dims)."""
    return [(n, p) for n, p in module.named_parameters() if p.ndim >= 2 and p.requires_grad]


class _Swap:
    """Context: the module's weight matrices hold their fake-quantized values inside, latent outside."""

    def __init__(self, params, bits: int):
        self.params, self.bits, self.saved = params, bits, []

    def __enter__(self):
        import torch

        with torch.no_grad():
            self.saved = [p.detach().clone() for _, p in self.params]
            for _, p in self.params:
                p.copy_(_fake_weight(p, self.bits))
        return self

    def __exit__(self, *exc):
        import torch

        with torch.no_grad():
            for (_, p), s in zip(self.params, self.saved):
                p.copy_(s)
        return False


def fake_quant_accuracy(
    module,
    x: np.ndarray,
    y: np.ndarray,
    cfg: QatConfig = QatConfig(),
    *,
    input_range: Optional[np.ndarray] = None,
    batch_size: int = 256,
) -> float:
    """Accuracy of ``module`` with fake-quantized weights and inputs (the QAT forward)."""
    import torch

    iq = _InputQuant(input_range if input_range is not None else x, cfg.input_bits)
    module.eval()
    preds = []
    with _Swap(quantized_params(module), cfg.weight_bits), torch.no_grad():
        for i in range(0, len(x), batch_size):
            preds.append(module(torch.from_numpy(iq(x[i : i + batch_size]))).argmax(-1).numpy())
    return float(np.mean(np.concatenate(preds) == y))


def qat_finetune(
    module,
    x: np.ndarray,
    y: np.ndarray,
    cfg: QatConfig = QatConfig(),
    *,
    val: Optional[tuple[np.ndarray, np.ndarray]] = None,
    calib_x: Optional[np.ndarray] = None,
    progress: bool = True,
    log: Optional[Callable[[str], None]] = None,
) -> dict:
    """Fine-tune ``module`` in place with fake-quantized weights and inputs (straight-through).

    ``x, y``: training sequences (N, T, F) and labels; ``calib_x``: the sequences whose range fixes the
    input quantization (default ``x``); ``val``: held-out data whose fake-quant accuracy picks the best
    epoch (the module ends with that epoch's latent weights). Returns the history."""
    import torch
    from torch import nn
    from tqdm.auto import tqdm

    from ..errors import ConfigError, DatasetError

    if cfg.epochs < 1 or not (cfg.lr > 0):
        raise ConfigError(f"QAT needs epochs >= 1 and lr > 0, got epochs={cfg.epochs}, lr={cfg.lr}")
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    if x.ndim != 3 or len(x) == 0 or len(y) != len(x):
        raise DatasetError(f"QAT data must be (N, T, F) sequences with N labels, got {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise DatasetError("QAT training data has NaN or Inf values")
    iq = _InputQuant(np.asarray(calib_x if calib_x is not None else x, np.float32), cfg.input_bits)
    params = quantized_params(module)
    if not params:
        raise ConfigError("the model has no weight matrices to quantize")
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=0.0)
    steps = cfg.epochs * math.ceil(len(x) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.2)
    loss_fn = nn.CrossEntropyLoss()
    hist = {"config": asdict(cfg), "epochs": [], "quantized_params": [n for n, _ in params]}

    def val_acc():
        if val is None:
            return None
        return fake_quant_accuracy(
            module,
            np.asarray(val[0], np.float32),
            np.asarray(val[1]),
            cfg,
            input_range=calib_x if calib_x is not None else x,
        )

    start = val_acc()
    hist["start_validation_accuracy"] = start
    best = (start if start is not None else -1.0, {k: v.detach().clone() for k, v in module.state_dict().items()})
    bar = tqdm(total=steps, desc="QAT", unit="batch", disable=not progress, leave=False)
    for ep in range(cfg.epochs):
        module.train()
        order = torch.randperm(len(x), generator=gen).numpy()
        total, n = 0.0, 0
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            xb = torch.from_numpy(iq(x[idx]))
            yb = torch.from_numpy(y[idx])
            opt.zero_grad(set_to_none=True)
            with _Swap(params, cfg.weight_bits):
                loss = loss_fn(module(xb), yb)
                loss.backward()  # gradients w.r.t. the quantized weights: the straight-through estimate
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
            bar.update(1)
        acc = val_acc()
        hist["epochs"].append({"epoch": ep + 1, "loss": total / n, "validation_accuracy": acc})
        if log:
            log(
                f"QAT epoch {ep + 1}/{cfg.epochs}: loss {total / n:.4f}"
                + ("" if acc is None else f", fake-quant validation {100 * acc:.2f}%")
            )
        if acc is None or acc > best[0]:
            best = (acc if acc is not None else -1.0, {k: v.detach().clone() for k, v in module.state_dict().items()})
    bar.close()
    module.load_state_dict(best[1])
    module.eval()
    hist["best_validation_accuracy"] = None if val is None else best[0]
    return hist
