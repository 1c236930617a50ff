"""One trial of a sweep: train a candidate with the task's recipe, optionally prune it, quantize it,
export it for the target and measure it on the emulated device (stages ``data``, ``train``,
``prune``, ``quantize``, ``evaluate``, ``export``, ``measure``; a failed record names the one it
failed in).

The same function runs in a Ray worker and in-process (:func:`run_trial`); it never raises for a
bad candidate: a failure is returned as a record with the stage it happened in and a one-line error,
so the sweep records it and goes on. Accuracy is measured on two held-out sets: the validation
subjects of the recipe's own split of the training data (what the search optimises) and the task's
test split (reported). int8 accuracy comes from the integer-exact interpreter, which the exported
artifact matches bit for bit (checked by the export on golden inputs, and on ``device_windows`` test
windows run on the emulated device here).
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from ..errors import ConfigError
from .space import TrialConfig


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep shares: the task, the target, the data (the task's own splits, or
    two edgeseq dataset files), how many test windows are run on the emulated device per trial, and
    torch threads per trial."""

    task: str
    target: str
    train_data: Optional[str] = None
    test_data: Optional[str] = None
    device_windows: int = 32
    threads: int = 1

    def __post_init__(self):
        if (self.train_data is None) != (self.test_data is None):
            raise ConfigError(
                "give both a training and a test dataset file, or neither (the task's own splits)",
                where="--train-data/--test-data",
            )
        if self.device_windows < 0:
            raise ConfigError(f"device windows must be >= 0, got {self.device_windows}", where="--device-windows")
        if self.threads < 1:
            raise ConfigError(f"threads per trial must be >= 1, got {self.threads}", where="--threads")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping) -> "TrialSetup":
        return cls(**d)


_DATA_CACHE: dict[tuple, tuple] = {}


def load_data(setup: TrialSetup):
    """(training split, test split) of the setup, loaded once per process."""
    key = (setup.task, setup.train_data, setup.test_data)
    if key not in _DATA_CACHE:
        if setup.train_data is not None:
            from ..data import Dataset

            _DATA_CACHE[key] = (Dataset.load(setup.train_data), Dataset.load(setup.test_data))
        else:
            from ..train.recipes import load_task_data

            train, test, _ = load_task_data(setup.task)
            _DATA_CACHE[key] = (train, test)
    return _DATA_CACHE[key]


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def one_line(e: BaseException) -> str:
    """An error as one line: edgeseq errors as they print, others as ``Type: message``."""
    from ..errors import EdgeseqError

    text = str(e) if isinstance(e, EdgeseqError) else f"{type(e).__name__}: {e}"
    text = " ".join(text.split())
    return text[:600] + ("..." if len(text) > 600 else "")


def validation_split(train, task: str, arch: str, train_overrides: Optional[Mapping] = None):
    """The recipe's held-out validation subjects of ``train`` (the split ``edgeseq train`` makes)."""
    from ..train.loop import TrainConfig, split_validation
    from ..train.recipes import recipe

    _, train_cfg = recipe(task, arch)
    cfg = TrainConfig.from_dict({**train_cfg, **dict(train_overrides or {})})
    return split_validation(train, cfg.val_fraction, cfg.seed)


def run_trial(setup: TrialSetup, config: TrialConfig, report: Optional[Callable[[str], None]] = None) -> dict:
    """Train, prune (sparsity > 0), quantize, export and measure one candidate; returns its record
    (``status`` 'ok' or 'failed', ``stage``, ``error``, ``metrics``, ``seconds``, and the checkpoint
    and quantized graph as base64 under ``files``)."""
    say = report or (lambda stage: None)
    seconds: dict[str, float] = {}
    rec: dict[str, Any] = {
        "status": "failed",
        "stage": "data",
        "error": None,
        "config": config.to_json(),
        "metrics": {},
        "seconds": seconds,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    t_all = time.perf_counter()
    with _torch_threads(setup.threads), tempfile.TemporaryDirectory(prefix="edgeseq-trial-") as tmp:
        tmp = Path(tmp)
        stage = ["data"]

        def enter(name: str) -> None:
            stage[0] = name
            rec["stage"] = name
            say(name)

        try:
            enter("data")
            train, test = load_data(setup)
            enter("train")
            t0 = time.perf_counter()
            ckpt = _train(setup, config, train, test, tmp / "train")
            seconds["train"] = round(time.perf_counter() - t0, 2)
            if config.sparsity > 0:
                enter("prune")
                t0 = time.perf_counter()
                ckpt = _prune(setup, config, ckpt, train, tmp / "pruned")
                seconds["prune"] = round(time.perf_counter() - t0, 2)
            metrics, files = evaluate_checkpoint(
                setup,
                ckpt,
                config.arch,
                config.quant,
                train,
                test,
                tmp,
                enter=enter,
                seconds=seconds,
                train_overrides=config.train,
            )
            rec.update(status="ok", metrics=metrics, files=files)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # a failing candidate is a result, not a crash of the sweep
            rec["error"] = one_line(e)
            rec["traceback"] = traceback.format_exc(limit=-8)[-4000:]
    seconds["total"] = round(time.perf_counter() - t_all, 2)
    return rec


def _train(setup: TrialSetup, config: TrialConfig, train, test, out: Path) -> Path:
    from ..train.recipes import train_task

    train_task(
        setup.task,
        config.arch,
        out,
        model_overrides=config.model,
        train_overrides=config.train,
        datasets=(train, test, {}),
        progress=False,
        log=lambda *a, **k: None,
        command=f"edgeseq sweep trial ({config.label()})",
    )
    return out / "model.ckpt"


def _prune(setup: TrialSetup, config: TrialConfig, ckpt: Path, train_all, out: Path) -> Path:
    from ..prune import StructuredConfig, prune_and_finetune
    from ..prune.recipe import recipe_overrides
    from ..train.checkpoint import load_checkpoint, save_checkpoint

    model, doc = load_checkpoint(ckpt)
    train, val = validation_split(train_all, setup.task, config.arch, config.train)
    cfg = StructuredConfig(
        sparsity=config.sparsity,
        memory_sparsity=float(config.prune_setting("memory_sparsity")),
        criterion=config.prune_setting("criterion"),
        compensate=config.prune_setting("compensate"),
    )
    epochs = int(config.prune_setting("finetune_epochs"))
    pruned, _, report = prune_and_finetune(
        model,
        cfg,
        train,
        val,
        None,
        finetune_epochs=epochs,
        lr=float(config.prune_setting("lr")),
        train_overrides=recipe_overrides(model, setup.task),
        log=lambda *a, **k: None,
    )
    metrics = dict(doc.get("metrics") or {})
    metrics["parameters"] = report.get("parameters_after", metrics.get("parameters"))
    path = out / "model.ckpt"
    save_checkpoint(
        pruned, path, metrics=metrics, extra={"pruning": {k: v for k, v in report.items() if k != "kept_indices"}}
    )
    return path


def evaluate_checkpoint(
    setup: TrialSetup,
    ckpt: Path,
    arch: str,
    quant: Mapping,
    train,
    test,
    tmp: Path,
    *,
    enter: Callable[[str], None] = lambda s: None,
    seconds: Optional[dict] = None,
    train_overrides: Optional[Mapping] = None,
) -> tuple[dict, dict]:
    """Quantize a trained checkpoint, measure float / int8 accuracy on the held-out validation
    subjects and the test split, export it for the target and measure flash, RAM and instructions on
    the emulated device. Returns (metrics, files as base64)."""
    import edgeseq

    from ..models import load_model
    from ..quant.tasks import TaskData, calibration_split, quantize_on_task
    from ..train.loop import accuracy, predict
    from .space import QUANT_KEYS

    seconds = seconds if seconds is not None else {}
    q = {**QUANT_KEYS, **dict(quant)}

    enter("quantize")
    t0 = time.perf_counter()
    lm = load_model(ckpt)
    ci, vi = calibration_split(len(train.x), int(q["calib"]), int(q["val"]), 0)
    qg = quantize_on_task(
        lm.graph,
        TaskData(setup.task, train.x, train.y, ci, vi),
        q["config"],
        budget=float(q["budget"]),
        progress=False,
        strict=False,
        max_promotions=int(q["max_promotions"]),
    )
    qpath = tmp / "model.q.esq"
    qg.save(qpath)
    seconds["quantize"] = round(time.perf_counter() - t0, 2)

    enter("evaluate")
    t0 = time.perf_counter()
    _, val = validation_split(train, setup.task, arch, train_overrides)
    search = qg.info.get("search") or {}
    sizes = qg.sizes()
    m: dict[str, Any] = {
        "parameters": int(sum(p.numel() for p in lm.module.parameters())),
        "macs_per_step": int(sizes["macs_per_step"]),
        "accuracy_float_val": accuracy(predict(lm.module, val.x), val.y),
        "accuracy_int8_val": float(np.mean(qg.predict(val.x, "int") == val.y)),
        "accuracy_float_test": accuracy(predict(lm.module, test.x), test.y),
    }
    int_test = qg.predict(test.x, "int")
    m["accuracy_int8_test"] = float(np.mean(int_test == test.y))
    m.update(
        n_val=len(val),
        n_test=len(test),
        quant_budget_met=search.get("met"),
        quant_promoted=list(search.get("promoted") or []),
    )
    seconds["evaluate"] = round(time.perf_counter() - t0, 2)

    enter("export")
    t0 = time.perf_counter()
    art = edgeseq.export(qg, target=setup.target, out=tmp / "artifact", golden_input=test.x[:2])
    ver = (art.manifest.get("golden") or {}).get("verification") or {}
    m["bit_exact"] = bool(ver.get("bit_exact"))
    seconds["export"] = round(time.perf_counter() - t0, 2)

    enter("measure")
    t0 = time.perf_counter()
    m.update(device_costs(art, test.x[:1]))
    if setup.device_windows:
        idx = np.unique(np.linspace(0, len(test) - 1, min(setup.device_windows, len(test))).astype(int))
        dev = np.asarray(art.run(test.x[idx])).argmax(-1)
        m["device_windows"] = int(len(idx))
        m["device_agreement"] = float(np.mean(dev == int_test[idx]))
        m["device_accuracy"] = float(np.mean(dev == test.y[idx]))
    seconds["measure"] = round(time.perf_counter() - t0, 2)
    files = {
        "model.ckpt": base64.b64encode(Path(ckpt).read_bytes()).decode("ascii"),
        "model.q.esq": base64.b64encode(qpath.read_bytes()).decode("ascii"),
    }
    return m, files


def device_costs(art, x) -> dict:
    """Instructions per inference / step (emulated targets), flash and RAM bytes (boards) of an
    artifact on input ``x`` (one sequence)."""
    cost = art.cost(x)
    out: dict[str, Any] = {}
    sizes = cost.get("sizes") or {}
    for k in ("flash_bytes", "ram_bytes"):
        if sizes.get(k) is not None:
            out[k] = int(sizes[k])
    ins = cost.get("instructions") or {}
    if ins.get("per_inference") is not None:
        out["instructions_per_inference"] = int(ins["per_inference"])
        out["instructions_per_step"] = round(float(ins["per_step"]), 1)
    return out


def measure_model(setup: TrialSetup, spec: str, quant: Optional[Mapping] = None) -> dict:
    """Measure an already trained model (a shipped name or checkpoint) exactly like a trial, from
    quantization on: the reference point of a sweep (``har_lmu`` for HAR)."""
    from ..models import shipped
    from ..train.checkpoint import read_checkpoint

    say = lambda s: None  # noqa: E731
    seconds: dict[str, float] = {}
    rec: dict[str, Any] = {"status": "failed", "model": spec, "error": None, "metrics": {}, "seconds": seconds}
    with _torch_threads(setup.threads), tempfile.TemporaryDirectory(prefix="edgeseq-baseline-") as tmp:
        try:
            ships = shipped()
            ckpt = ships[spec] / "model.ckpt" if spec in ships else Path(spec)
            arch = read_checkpoint(ckpt)[0]["config"]["arch"]
            train, test = load_data(setup)
            metrics, _ = evaluate_checkpoint(
                setup, ckpt, arch, dict(quant or {}), train, test, Path(tmp), enter=say, seconds=seconds
            )
            rec.update(status="ok", arch=arch, metrics=metrics)
        except KeyboardInterrupt:
            raise
        except Exception as e:
            rec["error"] = one_line(e)
    return rec
