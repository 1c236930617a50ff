"""Shipped trained models and the one loader every command uses.

A *model spec* is any of:

- the name of a shipped model (``har_gru``, ``har_lmu``, ``har_l2mu``, ``kws_lmu``, ``kws_lmuformer``; see
  ``edgeseq info --models``): a directory ``edgeseq/models/<name>/`` holding ``model.ckpt`` and
  ``metrics.json`` (with the exact command that reproduces it);
- a training output directory (``model.ckpt`` inside), or a ``.ckpt`` file: a safe edgeseq checkpoint;
- an ``.esq`` IR graph file, or a ``.nir`` graph (the Neuromorphic Intermediate Representation).

``load_model(spec)`` returns a :class:`LoadedModel` with the IR graph (captured from the torch model
for checkpoints), the torch module when there is one, and the task / label metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parent


def shipped() -> dict[str, Path]:
    """Name -> directory of every shipped model."""
    return {p.name: p for p in sorted(ROOT.iterdir()) if (p / "model.ckpt").is_file()}


def shipped_info() -> list[dict]:
    rows = []
    for name, d in shipped().items():
        m = _read_metrics(d)
        rows.append(
            {
                "name": name,
                "task": m.get("task"),
                "arch": m.get("arch"),
                "parameters": m.get("parameters"),
                "test_accuracy": (m.get("test") or {}).get("accuracy"),
                "command": m.get("command"),
                "path": str(d),
            }
        )
    return rows


def _read_metrics(d: Path) -> dict:
    try:
        return json.loads((d / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class LoadedModel:
    graph: Any  # edgeseq.ir.graph.Graph
    module: Any = None  # torch.nn.Module or None
    source: str = ""
    name: str = ""
    task: Optional[str] = None
    labels: tuple = ()
    metrics: dict = field(default_factory=dict)

    @property
    def in_features(self) -> int:
        return self.graph.in_features

    @property
    def is_spiking(self) -> bool:
        return any(t.spikes for t in self.graph.output_types) or any(
            n.op.kind in ("LIF", "CuBaLIF", "L2MU") for n in self.graph.nodes
        )


def load_model(spec, *, capture_steps: int = 16, nir_options=None) -> LoadedModel:
    """Load a model spec (see the module docstring) as an IR graph (+ torch module). A .nir graph is
    read with ``nir_options`` (:class:`edgeseq.frontends.nir.NirOptions`; None: the producer's defaults)."""
    if not isinstance(spec, (str, Path)):
        raise ConfigError(f"a model spec is a shipped model name or a path, got {type(spec).__name__}")
    s = str(spec)
    ships = shipped()
    if s in ships:
        path, name = ships[s] / "model.ckpt", s
    else:
        path, name = Path(s), Path(s).stem
        if path.is_dir():
            if (path / "model.ckpt").is_file():
                name, path = path.name, path / "model.ckpt"
            elif (path / "graph.esq").is_file():
                name, path = path.name, path / "graph.esq"
            else:
                raise CheckpointError("directory holds neither model.ckpt nor graph.esq", where=s)
        elif not path.exists():
            known = ", ".join(ships) or "none installed"
            raise CheckpointError(f"no such model file or shipped model (shipped models: {known})", where=s)
    if path.suffix == ".esq":
        from ..ir.serialize import load

        g = load(path)
        md = dict(g.metadata)
        return LoadedModel(
            graph=g, source=str(path), name=name, task=md.get("task"), labels=tuple(md.get("labels", ())), metrics={}
        )
    if path.suffix == ".nir":
        from ..frontends.nir import load_nir

        g = load_nir(path, nir_options, metadata={"name": name})
        return LoadedModel(graph=g, source=str(path), name=name, task=None, labels=(), metrics={})
    if path.suffix != ".ckpt":
        raise CheckpointError(
            f"unknown model file type '{path.suffix}' (expected .ckpt, .esq or .nir)", where=str(path)
        )
    from ..train.checkpoint import load_checkpoint

    module, doc = load_checkpoint(path)  # checks the file before torch is imported (bounded memory on any file)

    import torch

    from ..frontends import capture

    metrics = dict(doc.get("metrics") or {})
    if not metrics:
        metrics = _read_metrics(path.parent)
    cfg = doc.get("config") or {}
    # the recipe task (e.g. digits-heldout-theo, kws-stream) names the data a model was trained and is calibrated on
    task, labels = metrics.get("recipe_task") or metrics.get("task"), tuple(metrics.get("labels") or ())
    meta = {"source": str(path), "name": name, "arch": cfg.get("arch")}
    if task:
        meta["task"] = task
    if labels:
        meta["labels"] = list(labels)
    g = capture(module, torch.zeros(1, capture_steps, int(cfg["in_features"])), metadata=meta)
    return LoadedModel(graph=g, module=module, source=str(path), name=name, task=task, labels=labels, metrics=metrics)


def load_graph(path):
    """``edgeseq.load``: the IR graph of an ``.esq`` file (or a directory holding one) or of a
    ``.nir`` graph, read with its producer's defaults (:mod:`edgeseq.frontends.nir`)."""
    from pathlib import Path

    if isinstance(path, (str, Path)) and Path(path).suffix == ".nir":
        from ..frontends.nir import load_nir

        return load_nir(Path(path))
    from ..ir.serialize import load

    return load(path)
