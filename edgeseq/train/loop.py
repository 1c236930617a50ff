"""Training and evaluation of zoo classifiers on :class:`edgeseq.data.Dataset` objects.

Deterministic (fixed seeds, single-process data order), with a held-out validation set for early
stopping (whole subjects held out when the dataset has groups), AdamW with a one-cycle schedule,
optional light augmentation, a wall-clock budget, and tqdm progress bars.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from ..errors import ConfigError


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 20
    seed: int = 0
    max_minutes: float = 14.0
    stop_after: int = 0  # end after this many epochs of the ``epochs``-long schedule (0: the whole schedule)
    val_fraction: float = 0.15
    label_smoothing: float = 0.05
    grad_clip: float = 1.0
    # exponential moving average of the weights (decay per optimizer step; 0 = off): validation, early
    # stopping and the kept model use the averaged weights
    ema: float = 0.0
    augment_scale: float = 0.0  # random per-sequence, per-channel gain in [1-a, 1+a]
    augment_noise: float = 0.0  # gaussian noise, in units of each channel's std
    augment_shift: int = 0  # random circular time shift (steps)
    augment_rotate: float = 0.0  # IMU: random 3-D rotation (max degrees) of each xyz channel triplet
    augment_time_warp: float = 0.0  # smooth random speed change along time, speed ~ N(1, sigma) at 5 knots
    # spectral features (log-mel frames): warp of the mel axis by a random factor in [1/(1+w), 1+w]
    # (vocal-tract-length perturbation), and SpecAugment masks of up to N frames / channels
    augment_freq_warp: float = 0.0
    augment_time_mask: int = 0
    augment_freq_mask: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f for f in cls.__dataclass_fields__}
        bad = sorted(set(d) - known)
        if bad:
            raise ConfigError(f"unknown training option(s) {bad}; known: {sorted(known)}")
        return cls(**d)


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_accuracy: float = 0.0
    stopped: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU time: what the run costs, whatever else loads the machine


def split_validation(ds, fraction: float, seed: int):
    """(train, val): whole groups (subjects) held out when the dataset has groups, else stratified."""
    if ds.groups is not None and len(np.unique(ds.groups)) >= 4:
        rng = np.random.default_rng(seed)
        groups = np.unique(ds.groups)
        k = max(1, int(round(fraction * len(groups))))
        held = set(rng.permutation(groups)[:k].tolist())
        mask = np.isin(ds.groups, list(held))
        return ds.subset(~mask), ds.subset(mask)
    return ds.stratified_split(fraction, seed)


def channel_stats(ds) -> tuple[list[float], list[float]]:
    x = ds.x.reshape(-1, ds.x.shape[-1]).astype(np.float64)
    std = x.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    return x.mean(axis=0).tolist(), std.tolist()


def predict(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of ``model`` for (N, T, F) inputs, in eval mode without gradients."""
    import torch

    model.eval()
    outs = []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[s : s + batch_size]))).numpy())
    return np.concatenate(outs) if outs else np.zeros((0,))


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == y)) if len(y) else float("nan")


def confusion(pred: np.ndarray, y: np.ndarray, n: int) -> list[list[int]]:
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (y, pred), 1)
    return m.tolist()


def _random_rotations(n: int, max_deg: float, gen, triplets: int):
    """(n, 3k, 3k) block-diagonal matrices repeating one random rotation (axis uniform on the sphere,
    angle uniform in [-max_deg, max_deg]) per sequence, for right-multiplying (n, T, 3k) inputs."""
    import torch

    axis = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    axis = axis / axis.norm(dim=1, keepdim=True)
    ang = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * math.radians(max_deg)
    k = torch.zeros(n, 3, 3, dtype=torch.float64)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    eye = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
    r = eye + torch.sin(ang)[:, None, None] * k + (1 - torch.cos(ang))[:, None, None] * (k @ k)  # Rodrigues
    out = torch.zeros(n, 3 * triplets, 3 * triplets, dtype=torch.float64)
    for i in range(triplets):
        out[:, 3 * i : 3 * i + 3, 3 * i : 3 * i + 3] = r.transpose(1, 2)
    return out


def _lerp_along(xb, pos, axis: int):
    """Linear interpolation of (n, T, F) ``xb`` at fractional positions ``pos`` (n, size) along ``axis``
    (1: time, 2: features); positions are clamped to the axis."""
    import torch

    size = xb.shape[axis]
    pos = pos.clamp(0, size - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=size - 1)
    w = (pos - lo.to(pos.dtype)).to(xb.dtype)
    if axis == 1:
        w = w[:, :, None]
        idx_lo, idx_hi = (i[:, :, None].expand(-1, -1, xb.shape[2]) for i in (lo, hi))
    else:
        w = w[:, None, :]
        idx_lo, idx_hi = (i[:, None, :].expand(-1, xb.shape[1], -1) for i in (lo, hi))
    return torch.gather(xb, axis, idx_lo) * (1 - w) + torch.gather(xb, axis, idx_hi) * w


def _freq_warp(xb, max_warp: float, gen):
    """Resample the feature (mel) axis of (n, T, F) by a random factor per sequence: a formant /
    vocal-tract-length change of the speaker is close to a shift along the mel axis."""
    import torch

    n, _, f = xb.shape
    lim = math.log1p(max_warp)
    alpha = torch.exp((torch.rand(n, generator=gen) * 2 - 1) * lim)  # log-uniform in [1/(1+w), 1+w]
    return _lerp_along(xb, torch.arange(f, dtype=torch.float32)[None, :] / alpha[:, None], 2)


def _time_warp(xb, sigma: float, gen, knots: int = 4):
    """Smooth random change of speed along time (Um et al. 2017): the playback speed of each sequence
    follows a curve through ``knots + 1`` random values ~ N(1, sigma) (clamped to [0.5, 1.5]); the
    window keeps its length, first and last sample. People walk and move at different paces."""
    import torch

    n, t, _ = xb.shape
    speed = (1 + torch.randn(n, 1, knots + 1, generator=gen) * sigma).clamp(0.5, 1.5)
    speed = torch.nn.functional.interpolate(speed, size=t, mode="linear", align_corners=True)[:, 0]  # (n, T)
    pos = torch.cumsum(speed, 1) - speed[:, :1]
    pos = pos / pos[:, -1:] * (t - 1)
    return _lerp_along(xb, pos, 1)


def _tilt(xb, max_tilt: float, gen):
    """Add a random spectral tilt to log-mel frames (n, T, F): band k gets ``t * (2k / (F-1) - 1)``
    with ``t`` uniform in [-max_tilt, max_tilt] per sequence (natural-log units): a microphone or
    room that favours low or high frequencies."""
    import torch

    n, _, f = xb.shape
    t = (torch.rand(n, generator=gen) * 2 - 1) * max_tilt
    ramp = torch.linspace(-1.0, 1.0, f)
    return xb + (t[:, None] * ramp[None, :])[:, None, :].to(xb.dtype)


def _masks(xb, fill, max_len: int, axis: int, gen):
    """One random mask per sequence of up to ``max_len`` consecutive frames (axis 1) or channels
    (axis 2), filled with the channel means (zero after the model's standardisation)."""
    import torch

    n, size = xb.shape[0], xb.shape[axis]
    width = torch.randint(0, max_len + 1, (n,), generator=gen)
    start = (torch.rand(n, generator=gen) * (size - width + 1).clamp(min=1)).long()
    r = torch.arange(size)[None, :]
    m = (r >= start[:, None]) & (r < (start + width)[:, None])  # (n, size)
    m = m[:, :, None] if axis == 1 else m[:, None, :]
    return torch.where(m, fill.to(xb.dtype), xb)


def _augment(xb, cfg: TrainConfig, stats, gen):
    import torch

    mean, std = stats
    if cfg.augment_freq_warp:
        xb = _freq_warp(xb, cfg.augment_freq_warp, gen)
    if cfg.augment_time_mask:
        xb = _masks(xb, torch.as_tensor(mean), cfg.augment_time_mask, 1, gen)
    if cfg.augment_freq_mask:
        xb = _masks(xb, torch.as_tensor(mean), cfg.augment_freq_mask, 2, gen)

    if cfg.augment_time_warp:
        xb = _time_warp(xb, cfg.augment_time_warp, gen)
    if cfg.augment_scale:
        gain = 1 + (torch.rand(xb.shape[0], 1, xb.shape[2], generator=gen) * 2 - 1) * cfg.augment_scale
        xb = xb * gain
    if cfg.augment_noise:
        xb = xb + torch.randn(xb.shape, generator=gen) * cfg.augment_noise * torch.as_tensor(std, dtype=xb.dtype)
    if cfg.augment_rotate and xb.shape[2] % 3 == 0:
        # the same small random rotation of the sensor frame applied to every xyz triplet (acc, gyro):
        # device placement differs between people
        xb = xb @ _random_rotations(xb.shape[0], cfg.augment_rotate, gen, xb.shape[2] // 3).to(xb.dtype)
    if cfg.augment_shift:
        k = int(torch.randint(-cfg.augment_shift, cfg.augment_shift + 1, (1,), generator=gen))
        xb = torch.roll(xb, k, dims=1)
    return xb


class _WeightAverage:
    """Exponential moving average of a model's parameters and float buffers, with the usual warm-up
    (decay min(d, (1 + n) / (10 + n)) after n updates)."""

    def __init__(self, model, decay: float):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"ema must lie in (0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def update(self, model) -> None:
        import torch

        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.dtype.is_floating_point:
                    self.state[k].mul_(d).add_(v.detach(), alpha=1 - d)
                else:
                    self.state[k].copy_(v)

    def evaluate(self, model, fn):
        """``fn()`` with the averaged weights loaded into ``model`` (its own weights restored after)."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.state)
        try:
            return fn()
        finally:
            model.load_state_dict(own)


def fit(model, train, val, cfg: TrainConfig, progress: bool = True, log=print) -> History:
    """Train ``model`` in place; keeps the weights of the best validation epoch."""
    import torch

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.from_numpy(train.x)
    y = torch.from_numpy(train.y)
    mean, std = (np.asarray(v, dtype=np.float32) for v in channel_stats(train))
    steps_per_epoch = max(1, math.ceil(len(train) / cfg.batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    avg = _WeightAverage(model, cfg.ema) if cfg.ema else None

    def one_epoch(epoch: int) -> tuple[float, float]:
        model.train()
        perm = torch.randperm(len(train), generator=gen)
        total, correct, seen = 0.0, 0, 0
        for s in range(0, len(train), cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            xb = _augment(x[idx], cfg, (mean, std), gen)
            logits = model(xb)
            loss = loss_fn(logits, y[idx])
            optimizer_step(model, opt, sched, loss, cfg.grad_clip)
            if avg is not None:
                avg.update(model)
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(-1) == y[idx]).sum())
            seen += len(idx)
        return total / seen, correct / seen

    return run_epochs(
        model, cfg, one_epoch, lambda: accuracy(predict(model, val.x), val.y), progress=progress, log=log, average=avg
    )


def optimizer_step(model, opt, sched, loss, grad_clip: float) -> None:
    """Backward, optional gradient-norm clipping, one optimizer and one scheduler step."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()


def run_epochs(
    model,
    cfg,
    one_epoch,
    validate,
    *,
    progress: bool = True,
    log=print,
    train_name: str = "train",
    average: Optional["_WeightAverage"] = None,
) -> History:
    """The epoch loop of the trainers: ``one_epoch(epoch)`` returns (mean training loss, training
    accuracy), ``validate()`` the validation accuracy (of the averaged weights with ``average``).
    Keeps the weights of the best validation epoch, stops early after ``cfg.patience`` epochs without
    improvement, past ``cfg.max_minutes`` or after ``cfg.stop_after`` epochs."""
    from tqdm.auto import tqdm

    hist = History()
    best_state = None
    start, cpu_start = time.perf_counter(), time.process_time()
    stop_after = getattr(cfg, "stop_after", 0)
    bar = tqdm(range(cfg.epochs), desc="training", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        loss, train_acc = one_epoch(epoch)
        val_acc = validate() if average is None else average.evaluate(model, validate)
        row = {
            "epoch": epoch + 1,
            "loss": loss,
            "train_accuracy": train_acc,
            "val_accuracy": val_acc,
            "seconds": time.perf_counter() - start,
        }
        hist.epochs.append(row)
        if val_acc > hist.best_val_accuracy or best_state is None:
            hist.best_val_accuracy, hist.best_epoch = val_acc, epoch + 1
            best_state = {
                k: v.detach().clone() for k, v in (model.state_dict() if average is None else average.state).items()
            }
        bar.set_postfix(loss=f"{row['loss']:.3f}", val=f"{val_acc:.3f}", best=f"{hist.best_val_accuracy:.3f}")
        if not progress:
            log(
                f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f}, {train_name} {row['train_accuracy']:.4f}, "
                f"validation {val_acc:.4f} (best {hist.best_val_accuracy:.4f}), {row['seconds']:.0f} s"
            )
        if epoch + 1 - hist.best_epoch >= cfg.patience:
            hist.stopped = f"early stop: no validation improvement for {cfg.patience} epochs"
            break
        if (time.perf_counter() - start) / 60 > cfg.max_minutes:
            hist.stopped = f"time budget of {cfg.max_minutes} min reached"
            break
        if stop_after and epoch + 1 >= stop_after:
            hist.stopped = f"stopped after {stop_after} of {cfg.epochs} epochs"
            break
    else:
        hist.stopped = "all epochs done"
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    hist.seconds = time.perf_counter() - start
    hist.cpu_seconds = time.process_time() - cpu_start
    log(
        f"trained {len(hist.epochs)} epochs in {hist.seconds:.0f} s ({hist.stopped}); "
        f"best validation accuracy {hist.best_val_accuracy:.4f} at epoch {hist.best_epoch}"
    )
    return hist


def evaluate(model, ds) -> dict:
    logits = predict(model, ds.x)
    pred = logits.argmax(-1)
    per_class = {}
    for c, lab in enumerate(ds.labels):
        m = ds.y == c
        per_class[lab] = float(np.mean(pred[m] == c)) if m.any() else float("nan")
    return {
        "accuracy": accuracy(logits, ds.y),
        "n": len(ds),
        "per_class_accuracy": per_class,
        "confusion": confusion(pred, ds.y, ds.n_classes),
    }


def config_dict(cfg: Optional[TrainConfig]) -> dict:
    return asdict(cfg) if cfg is not None else {}
