"""Streaming training: models that run on one continuous state and announce words as they end.

A keyword spotter deployed on a stream should not be reset and re-run over overlapping windows
(one state slot per window: four times the work for a decision every quarter window). A model
trained here runs on one state from power-on: every frame of audio goes through one
``esq_step`` and its output is read directly.

Training data are random sequences of a few seconds built from a pool of utterances with known
times (:func:`edgeseq.data.streams.training_sequences`: speed, level, placement and background-noise
augmentation, seeded per epoch) and a class target for every frame: the word's class just after it
ends, the background class between words, no target inside a word. The loss is the cross-entropy of
the model's output at every frame (the zoo models' ``readout`` is bypassed while training), plus
SpecAugment-style masks and a mel-axis warp on the features. Models keep ``readout="last"``, so the
same checkpoint classifies a clip by its last frame (:func:`edgeseq.data.streams.aligned_clips`);
:func:`streaming_graph` removes that readout from the captured graph for deployment, giving one
output per step.

Tasks (:data:`STREAM_TASKS` builders, named in :data:`edgeseq.train.recipes.TASKS`): ``digits``
(FSDD, the dataset's own split, or one speaker held out / one speaker only), ``digits-synth``
(synthetic digits only, tested on all of FSDD) and ``kws-stream`` (the synthetic 12-class keyword
corpus at 50 frames per second).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional

import numpy as np

from ..errors import ConfigError

# --------------------------------------------------------------------------------------------
# tasks: an utterance pool to train on, clip sets to select and test on
# --------------------------------------------------------------------------------------------


@dataclass
class StreamTask:
    """What streaming training needs: the utterance pool, the front end, and clip datasets."""

    name: str
    labels: tuple[str, ...]
    background: int  # the class between words
    front_end: Any  # edgeseq.data.features.LogMel
    train_audio: list  # float32 utterances at front_end.sample_rate
    train_y: np.ndarray
    val: Any  # Dataset of word-end-aligned clips
    test: Any
    extra: dict = field(default_factory=dict)  # more test Datasets, reported as test_<name>
    meta: dict = field(default_factory=dict)
    val_audio: list = field(default_factory=list)  # the validation utterances (for the detection threshold)
    val_y: Optional[np.ndarray] = None

    @property
    def keywords(self) -> list[str]:
        return [lab for lab in self.labels if not lab.startswith("_")]


def _split_pool(y: np.ndarray, fraction: float, seed: int):
    """(train indices, validation indices) of a pool with labels ``y``: a seeded stratified split."""
    rng = np.random.default_rng(seed)
    val = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c))[: int(round(fraction * np.sum(y == c)))] for c in np.unique(y)]
    )
    mask = np.zeros(len(y), bool)
    mask[val] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def digits_task(
    holdout: Optional[str] = None,
    only: Optional[str] = None,
    *,
    features: Any = None,
    synthetic: tuple[int, int] = (0, 0),
    exclude: tuple[str, ...] = (),
    val_fraction: float = 0.1,
    seed: int = 0,
    source=None,
) -> StreamTask:
    """FSDD under a protocol (:func:`edgeseq.data.digits.load_digits`); validation clips are a seeded
    stratified ``val_fraction`` of the training recordings, never trained on. ``features``: the front
    end (a LogMel config or its dict; None: :data:`edgeseq.data.digits.FRONT_END`). ``synthetic``:
    (espeak-ng, flite) utterances per digit (:func:`edgeseq.data.digits.synthetic_digits`, the training
    voices) added to the training pool as more voices; validation and test stay real speech. ``exclude``:
    speakers left out of training and test altogether (a nested study inside a leave-speakers-out fold)."""
    from ..data import digits as D
    from ..data.features import feature_config

    fe = D.FRONT_END if features is None else feature_config(features)
    data = D.fsdd(source)
    keep = ~np.isin(data.speaker, [data.speaker_id(s) for s in exclude])
    tr = D.select(data, "train", holdout, only)
    te = D.select(data, "test", holdout, only)
    tr, te = tr[keep[tr]], te[keep[te]]
    y = data.digit[tr]
    ti, vi = _split_pool(y, val_fraction, seed)
    protocol = D.protocol_name(holdout, only)
    meta = {
        "dataset": "Free Spoken Digit Dataset (FSDD), real speech",
        "protocol": protocol,
        "speakers": list(data.speakers),
        "train_speakers": sorted({data.speakers[s] for s in data.speaker[tr]}),
        "test_speakers": sorted({data.speakers[s] for s in data.speaker[te]}),
    }
    if exclude:
        meta["excluded_speakers"] = sorted(exclude)
    audio, y_train = [data.words[i] for i in tr[ti]], y[ti]
    if synthetic[0] or synthetic[1]:
        esp, esp_y = D.synthetic_digits("train", synthetic[0]) if synthetic[0] else ([], y[:0])
        fl, fl_y = D.synthetic_digits("flite", synthetic[1]) if synthetic[1] else ([], y[:0])
        audio, y_train = audio + esp + fl, np.concatenate([y_train, esp_y, fl_y])
        meta["synthetic_per_digit"] = {"espeak-ng (training voices)": synthetic[0], "flite": synthetic[1]}

    def clips(idx, split):
        return D.clips_dataset(
            [data.words[i] for i in idx],
            data.digit[idx],
            name="digits",
            features=fe,
            meta={**meta, "split": split},
            groups=data.speaker[idx],
        )

    return StreamTask(
        "digits",
        D.DIGITS_LABELS,
        D.SILENCE,
        fe,
        audio,
        y_train,
        clips(tr[vi], "validation"),
        clips(te, "test"),
        meta=meta,
        val_audio=[data.words[i] for i in tr[vi]],
        val_y=y[vi],
    )


def digits_synth_task(n_per_digit: int = 600, n_flite: int = 120, source=None) -> StreamTask:
    """Synthetic digits only (espeak-ng training voices + flite) for training, espeak-ng held-out
    voices for validation, and every FSDD recording (real speech, never trained on) as the test set."""
    from ..data import digits as D

    esp_a, esp_y = D.synthetic_digits("train", n_per_digit)
    fl_a, fl_y = D.synthetic_digits("flite", n_flite)
    val_a, val_y = D.synthetic_digits("test", 40)
    data = D.fsdd(source)
    meta = {
        "dataset": "synthetic spoken digits (espeak-ng training voices + flite); test: FSDD real speech",
        "protocol": "synthetic",
        "speakers": list(data.speakers),
        "train_speakers": [],
        "test_speakers": list(data.speakers),
        "n_per_digit": n_per_digit,
        "n_flite_per_digit": n_flite,
    }
    val = D.clips_dataset(
        val_a,
        val_y,
        name="digits_synth",
        features=D.FRONT_END,
        meta={**meta, "split": "validation (held-out espeak-ng voices)"},
    )
    test = D.clips_dataset(
        list(data.words),
        data.digit,
        name="digits",
        features=D.FRONT_END,
        meta={**meta, "split": "all"},
        groups=data.speaker,
    )
    return StreamTask(
        "digits",
        D.DIGITS_LABELS,
        D.SILENCE,
        D.FRONT_END,
        esp_a + fl_a,
        np.concatenate([esp_y, fl_y]),
        val,
        test,
        meta=meta,
        val_audio=val_a,
        val_y=val_y,
    )


def kws_stream_task(n_per_class: int = 800, n_val: int = 50, n_test: int = 100, unknown_factor: int = 2) -> StreamTask:
    """The synthetic 12-class keyword corpus (:mod:`edgeseq.data.kws`) at the streaming front end
    :data:`edgeseq.data.kws.STREAM_FRONT_END`: training voices to train on (``unknown_factor`` times as
    many unknown words as utterances of each keyword: a stream has many other words), their ``val``
    split to select, held-out espeak-ng voices (``test``) and the flite engine (``test_flite``) to test;
    clips word-end aligned, the ``_silence_`` clips are background noise only."""
    from ..data import kws as K
    from ..data.dataset import Dataset
    from ..data.digits import clips_dataset
    from ..data.features import compute

    cfg = K.KWSConfig()
    fe = K.STREAM_FRONT_END

    def pool(split, n, unknown=1):
        u = K.utterances(cfg, split, n)
        if unknown > 1:
            u.update(K.utterances(cfg, split, unknown * n, classes=[K.UNKNOWN]))
        audio, y = [], []
        for c in sorted(u):
            audio += u[c]
            y += [c] * len(u[c])
        return audio, np.array(y, dtype=np.int64)

    def clips(split, n):
        audio, y = pool(split, n)
        ds = clips_dataset(
            audio,
            y,
            name="kws",
            features=fe,
            meta={"dataset": "synthetic keyword spotting", "split": split, "engine": cfg.engine(split)},
            clip_seconds=1.0,
            tail_seconds=0.2,
            sample_rate=K.SAMPLE_RATE,
            labels=K.KWS_LABELS,
        )
        sil = np.stack([K.mix_clip(cfg, split, K.SILENCE, i, None) for i in range(n)])
        xs = compute(sil, fe)
        return Dataset(
            np.concatenate([ds.x, xs]), np.concatenate([ds.y, np.full(n, K.SILENCE)]), K.KWS_LABELS, "kws", ds.meta
        )

    audio, y = pool("train", n_per_class, unknown_factor)
    val_audio, val_y = pool("val", n_val)
    meta = {
        "dataset": "synthetic keyword spotting (espeak-ng); test: held-out espeak-ng voices, flite engine",
        "protocol": "held-out voices",
        "n_per_class": n_per_class,
        "unknown_factor": unknown_factor,
    }
    return StreamTask(
        "kws",
        K.KWS_LABELS,
        K.SILENCE,
        fe,
        audio,
        y,
        clips("val", n_val),
        clips("test", n_test),
        extra={"flite": clips("flite", n_test)},
        meta=meta,
        val_audio=val_audio,
        val_y=val_y,
    )


STREAM_TASKS: dict[str, Callable[..., StreamTask]] = {
    "digits": digits_task,
    "digits-synth": digits_synth_task,
    "kws-stream": kws_stream_task,
}


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


SELECT = ("best", "last")


@dataclass
class StreamTrainConfig:
    """Streaming training options (``edgeseq train --train-set KEY=VALUE``)."""

    epochs: int = 40
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 30
    seed: int = 0
    max_minutes: float = 240.0  # a safety stop; recipes end on their epoch count, so results do not depend on load
    label_smoothing: float = 0.05
    grad_clip: float = 1.0
    passes: float = 1.0  # utterance-pool passes per epoch
    seq_seconds: float = 3.0
    gap_s: tuple = (0.15, 1.2)
    speech_dbfs: tuple = (-50.0, -14.0)
    snr_db: tuple = (None, 30.0, 20.0, 10.0)
    speed: tuple = (0.85, 1.15)
    pre_s: float = 0.04
    post_s: float = 0.4
    augment_freq_warp: float = 0.1
    augment_tilt: float = 0.0  # random spectral tilt of the log-mel frames, +-this at the band edges (channel)
    augment_time_mask: int = 0
    augment_freq_mask: int = 0
    init: Optional[str] = None  # a checkpoint to fine-tune (its architecture and input scaling are kept)
    # the weights kept: "best" (the best validation clip accuracy, earliest on ties) or "last" (the final
    # epoch, at the end of the one-cycle schedule: for validation clips that saturate long before it ends)
    select: str = "best"

    @classmethod
    def from_dict(cls, d: dict) -> "StreamTrainConfig":
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise ConfigError(f"unknown streaming training option(s) {bad}; known: {sorted(known)}")
        if d.get("select", "best") not in SELECT:
            raise ConfigError(f"unknown select={d['select']!r}; choose one of: {', '.join(SELECT)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)

    def sequences(self):
        from ..data.streams import SequenceConfig

        return SequenceConfig(
            seconds=self.seq_seconds,
            gap_s=tuple(self.gap_s),
            speech_dbfs=tuple(self.speech_dbfs),
            snr_db=tuple(self.snr_db),
            speed=tuple(self.speed),
            pre_s=self.pre_s,
            post_s=self.post_s,
        )


@contextlib.contextmanager
def per_step(model):
    """Within the block, ``model(x)`` returns (B, T, C): the zoo model's ``readout`` is bypassed."""
    import torch

    old = model.readout
    model.readout = torch.nn.Identity()
    try:
        yield model
    finally:
        model.readout = old


def epoch_data(task: StreamTask, cfg: StreamTrainConfig, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The features (n, frames, F) and frame targets (n, frames) of one epoch (seeded by seed, epoch)."""
    from ..data.features import compute
    from ..data.streams import training_sequences

    fe = task.front_end
    seq = cfg.sequences()
    rng = np.random.default_rng([cfg.seed, epoch])
    mean_len = float(np.mean([len(a) for a in task.train_audio])) / fe.sample_rate
    per_seq = max(1.0, seq.seconds / (mean_len + 0.5 * sum(seq.gap_s)))
    n = max(1, math.ceil(cfg.passes * len(task.train_audio) / per_seq))
    audio, targets = training_sequences(
        task.train_audio, task.train_y, n, seq, fe.sample_rate, fe.win_length, fe.hop_length, task.background, rng
    )
    return compute(audio, fe), targets


def fit_stream(model, task: StreamTask, cfg: StreamTrainConfig, *, progress: bool = True, log=print, first=None):
    """Train ``model`` in place on per-frame targets; keeps the weights of the best validation epoch
    (clip accuracy on ``task.val``). ``first``: epoch 0's :func:`epoch_data` when already computed.
    Returns a :class:`~edgeseq.train.loop.History`."""
    import torch

    from ..data.streams import IGNORE
    from .loop import _freq_warp, _masks, _tilt, accuracy, optimizer_step, predict, run_epochs

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    fill = model.norm.mean.detach().clone()  # masks fill with the input means (zero after standardisation)
    data0 = first if first is not None else epoch_data(task, cfg, 0)
    steps_per_epoch = max(1, math.ceil(len(data0[0]) / cfg.batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch + 1, pct_start=0.15
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, ignore_index=IGNORE)

    def one_epoch(epoch: int) -> tuple[float, float]:
        xe, te = data0 if epoch == 0 else epoch_data(task, cfg, epoch)
        model.train()
        perm = torch.randperm(len(xe), generator=gen)
        total, correct, seen = 0.0, 0, 0
        for s in range(0, len(xe), cfg.batch_size):
            idx = perm[s : s + cfg.batch_size].numpy()
            xb, yb = torch.from_numpy(xe[idx]), torch.from_numpy(te[idx])
            if cfg.augment_freq_warp:
                xb = _freq_warp(xb, cfg.augment_freq_warp, gen)
            if cfg.augment_tilt:
                xb = _tilt(xb, cfg.augment_tilt, gen)
            if cfg.augment_time_mask:
                xb = _masks(xb, fill, cfg.augment_time_mask, 1, gen)
            if cfg.augment_freq_mask:
                xb = _masks(xb, fill, cfg.augment_freq_mask, 2, gen)
            with per_step(model):
                logits = model(xb)
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1))
            optimizer_step(model, opt, sched, loss, cfg.grad_clip)
            m = yb != IGNORE
            total += float(loss.detach()) * int(m.sum())
            correct += int((logits.argmax(-1)[m] == yb[m]).sum())
            seen += int(m.sum())
        return total / max(seen, 1), correct / max(seen, 1)

    last: dict = {}

    def validate() -> float:
        acc = accuracy(predict(model, task.val.x), task.val.y)
        if cfg.select == "last":
            last.update(acc=acc, state={k: v.detach().clone() for k, v in model.state_dict().items()})
        return acc

    hist = run_epochs(model, cfg, one_epoch, validate, progress=progress, log=log, train_name="frame accuracy")
    if cfg.select == "last":
        model.load_state_dict(last["state"])
        hist.best_epoch, hist.best_val_accuracy = len(hist.epochs), last["acc"]
        log(f"kept the last epoch's weights (select=last): validation accuracy {last['acc']:.4f}")
    return hist


def evaluate_groups(model, ds) -> dict:
    """:func:`~edgeseq.train.loop.evaluate` plus ``per_speaker`` accuracies when ``ds`` has groups."""
    from .loop import evaluate, predict

    out = evaluate(model, ds)
    out["per_class_accuracy"] = {
        k: (None if v != v else v) for k, v in out["per_class_accuracy"].items()
    }  # NaN: no clip
    if ds.groups is not None and "speakers" in ds.meta:
        pred = predict(model, ds.x).argmax(-1)
        out["per_speaker"] = {
            ds.meta["speakers"][g]: float(np.mean(pred[ds.groups == g] == ds.y[ds.groups == g]))
            for g in np.unique(ds.groups)
        }
    return out


THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SMOOTHING = (1, 2, 3, 5, 8)


def tune_detector(
    model, task: StreamTask, *, seconds: float = 300.0, seed: int = 0, snr_db: float = 20.0, fa_weight: float = 2.0
) -> Optional[dict]:
    """The detection rule (threshold, frames averaged) of :class:`edgeseq.data.detect.Detector` that
    maximises hits - ``fa_weight`` x false accepts on a validation stream: the validation utterances
    (never trained on) among noise-only gaps of 0.8-2.5 s with pink noise at ``snr_db``, like the demo's
    stream. Returns it with the stream's counts, or None without validation utterances."""
    import torch

    from ..data.detect import WindowPlan, detect, match_detections
    from ..data.features import compute
    from ..data.streams import lay_out

    if not task.val_audio:
        return None
    fe = task.front_end
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(len(task.val_audio))
    names = [task.labels[int(task.val_y[i])] for i in order]
    audio, events = lay_out(
        [task.val_audio[i] for i in order],
        names,
        rng.uniform(-35.0, -15.0, len(order)),
        int(seconds * fe.sample_rate),
        fe.sample_rate,
        rng,
        gap_s=(0.8, 2.5),
        snr_db=snr_db,
        noise="pink",
        default_level_db=-25.0,
    )
    feats = compute(audio, fe)
    with torch.no_grad(), per_step(model.eval()):
        logits = model(torch.from_numpy(feats[None]))[0].double()
    post = torch.softmax(logits, -1).numpy()
    plan = WindowPlan.continuous(fe.hop_length, fe.win_length, fe.sample_rate)
    best = None
    for smooth in SMOOTHING:
        for thr in THRESHOLDS:
            _, _, dets = detect(post, list(task.labels), task.keywords, plan, threshold=thr, smooth=smooth)
            m = match_detections(dets, events, task.keywords, 0.5, seconds)[1]
            score = (m["hits"] - fa_weight * m["false_accepts"], thr)
            if best is None or score > best[0]:
                best = (
                    score,
                    {
                        "threshold": thr,
                        "smooth": smooth,
                        "validation_stream": {
                            "seconds": seconds,
                            "snr_db": snr_db,
                            "keywords_spoken": m["keywords_spoken"],
                            "hits": m["hits"],
                            "false_accepts": m["false_accepts"],
                            "rule": f"max hits - {fa_weight:g} x false accepts",
                        },
                    },
                )
    return best[1]


def train_stream_task(
    task_name: str,
    arch: str,
    out_dir,
    *,
    task_kw: Optional[dict] = None,
    force: bool = False,
    model_overrides: Optional[dict] = None,
    train_overrides: Optional[dict] = None,
    progress: bool = True,
    log=print,
    command: Optional[str] = None,
    task: StreamTask = None,
) -> dict:
    """Train ``arch`` with its streaming recipe and write ``model.ckpt``, ``metrics.json`` and
    ``curves.png`` to ``out_dir`` (atomically). Returns the metrics dict."""
    import shlex

    import torch

    from ..nn import build_model
    from ..util.fs import atomic_write_json, check_output_dir, output_dir
    from .checkpoint import load_checkpoint, save_checkpoint
    from .recipes import RECIPE_DATA, TASKS, _plot_curves, recipe

    model_cfg, train_cfg = recipe(task_name, arch)
    model_cfg.update(model_overrides or {})
    train_cfg.update(train_overrides or {})
    cfg = StreamTrainConfig.from_dict(train_cfg)
    check_output_dir(out_dir, force)
    torch.manual_seed(cfg.seed)
    spec = TASKS[task_name]
    if task is None:
        pool_kw = RECIPE_DATA.get(task_name, {}).get(arch, {})
        task = STREAM_TASKS[spec["stream"]](**{**spec.get("stream_kw", {}), **pool_kw, **(task_kw or {})})
    first = epoch_data(task, cfg, 0)
    if cfg.init:
        model, doc = load_checkpoint(cfg.init)
        if doc["config"].get("n_classes") != len(task.labels):
            raise ConfigError(
                f"the checkpoint to fine-tune has {doc['config'].get('n_classes')} classes; task "
                f"'{task_name}' has {len(task.labels)}",
                where=str(cfg.init),
            )
        model_cfg = {k: v for k, v in doc["config"].items() if k not in ("arch", "in_features", "n_classes")}
    else:
        x0 = first[0]
        flat = x0.reshape(-1, x0.shape[-1]).astype(np.float64)
        std = flat.std(0)
        model = build_model(
            arch,
            x0.shape[-1],
            len(task.labels),
            input_mean=flat.mean(0).tolist(),
            input_std=np.where(std > 1e-6, std, 1.0).tolist(),
            **model_cfg,
        )
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"{task_name}/{arch}: {n_params} parameters, {len(task.train_audio)} training utterances, "
        f"{len(task.val)} validation / {len(task.test)} test clips, front end {task.front_end.n_features} "
        f"{task.front_end.kind} at {task.front_end.sample_rate / task.front_end.hop_length:g} frames/s"
    )
    t0 = time.perf_counter()
    hist = fit_stream(model, task, cfg, progress=progress, log=log, first=first)
    fe = task.front_end
    detector = tune_detector(model, task, seed=cfg.seed)
    if detector:
        v = detector["validation_stream"]
        log(
            f"detector: threshold {detector['threshold']}, {detector['smooth']} frames averaged ({v['hits']}/"
            f"{v['keywords_spoken']} hits, {v['false_accepts']} false accepts on a {v['seconds']:g} s validation stream)"
        )
    metrics = {
        "task": task.name,
        "recipe_task": task_name,
        "arch": arch,
        "dataset": task.test.name,
        "labels": list(task.labels),
        "parameters": int(n_params),
        "train_seconds": round(time.perf_counter() - t0, 1),
        "train_cpu_seconds": round(hist.cpu_seconds, 1),
        "epochs_run": len(hist.epochs),
        "best_epoch": hist.best_epoch,
        "stopped": hist.stopped,
        "validation_accuracy": hist.best_val_accuracy,
        "protocol": task.meta.get("protocol"),
        "test": evaluate_groups(model, task.test),
        **{f"test_{k}": evaluate_groups(model, ds) for k, ds in task.extra.items()},
        "front_end": fe.to_dict(),
        "streaming": {
            "background": task.labels[task.background],
            "keywords": task.keywords,
            "frame_rate": fe.sample_rate / fe.hop_length,
            "sample_rate": fe.sample_rate,
            "target_after_word_end_s": [-cfg.pre_s, cfg.post_s],
            "clip_seconds": task.test.meta.get("clip_seconds"),
            "tail_seconds": task.test.meta.get("tail_seconds"),
            "detector": detector,
            "note": "trained on one continuous state; per-frame outputs (edgeseq.train.stream)",
        },
        "data": task.meta,
        "model_config": model.config,
        "train_config": train_cfg,
        "history": hist.epochs,
        "command": command or f"edgeseq train --task {task_name} --model {arch} --out {shlex.quote(str(out_dir))}",
        "torch": torch.__version__,
    }
    log(
        f"test accuracy {metrics['test']['accuracy']:.4f}"
        + "".join(f", {k} {metrics['test_' + k]['accuracy']:.4f}" for k in task.extra)
    )
    with output_dir(out_dir, force) as stage:
        save_checkpoint(model, stage / "model.ckpt", metrics={k: v for k, v in metrics.items() if k != "history"})
        atomic_write_json(stage / "metrics.json", metrics)
        _plot_curves(hist, stage / "curves.png")
    return metrics


# --------------------------------------------------------------------------------------------
# deployment
# --------------------------------------------------------------------------------------------


def streaming_graph(graph):
    """The graph with its final temporal ``Readout`` removed: one output per step, so a model that
    runs on one continuous state is read after every frame. Graphs without a readout pass through."""
    readouts = [n for n in graph.nodes if n.op.kind == "Readout"]
    if not readouts:
        return graph
    if len(readouts) > 1:
        raise ConfigError(f"graph has {len(readouts)} readouts; a streaming graph needs exactly one")
    r = readouts[0]
    src = r.inputs[0]
    rename = {r.outputs[0]: src}
    nodes = [
        type(n)(n.name, n.op, tuple(rename.get(i, i) for i in n.inputs), n.outputs) for n in graph.nodes if n is not r
    ]
    outputs = [rename.get(o, o) for o in graph.outputs]
    return graph.with_nodes(nodes, outputs=outputs, streaming="per-step outputs (readout removed)")


__all__ = [
    "STREAM_TASKS",
    "StreamTask",
    "StreamTrainConfig",
    "digits_synth_task",
    "digits_task",
    "epoch_data",
    "evaluate_groups",
    "fit_stream",
    "kws_stream_task",
    "per_step",
    "streaming_graph",
    "train_stream_task",
    "tune_detector",
]
