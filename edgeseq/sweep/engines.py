"""Where trials run: a registry of engines.

``ray``         Ray Tune (the ``distributed`` extra): trials on an existing Ray cluster (``address``)
                or on a Ray instance started on this machine, ``workers`` at a time, a worker lost
                mid-trial retried ``retries`` times and then recorded as failed
``sequential``  one trial after another in this process (the embedded default without Ray)

Both run the same :func:`edgeseq.sweep.trial.run_trial` on the same proposals (see
:mod:`edgeseq.sweep.proposer`), so they record the same trials for the same seed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import ConfigError, ToolchainMissingError

RAY_HINT = "pip install 'edgeseq[distributed]'"


@dataclass
class EngineOptions:
    address: Optional[str] = None  # an existing Ray cluster ("host:port"); None: start one here
    workers: Optional[int] = None  # trials at once (default: what the cluster / this machine offers)
    cpus_per_trial: int = 1
    retries: int = 1  # Ray: re-runs of a trial whose worker died, before it is recorded as failed


class SequentialEngine:
    name = "sequential"

    def __init__(self, opts: EngineOptions):
        if opts.address:
            raise ConfigError("--address needs the ray engine", where="--engine")
        self.opts = opts

    def describe(self) -> dict:
        return {"engine": self.name, "workers": 1}

    def run(self, driver) -> None:
        from .proposer import FINISHED, WAIT
        from .trial import run_trial

        while True:
            p = driver.next()
            if p is FINISHED:
                return
            if p is WAIT:  # pragma: no cover - every trial finishes before the next is asked for
                raise RuntimeError("sequential engine: a proposal waits on an unfinished trial")
            driver.started(p.number, where="this process")
            rec = run_trial(driver.setup, p.config, report=lambda stage, n=p.number: driver.stage(n, stage))
            driver.finish(p.number, rec)


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.tune") is not None


def _ray_engine(opts: EngineOptions):
    if not ray_available():
        raise ToolchainMissingError("ray", install=RAY_HINT, purpose="running sweeps on Ray")
    from .ray_engine import RayEngine

    return RayEngine(opts)


ENGINES: dict[str, Callable[[EngineOptions], object]] = {"ray": _ray_engine, "sequential": SequentialEngine}


def make_engine(name: str, opts: EngineOptions, log: Callable[[str], None] = print):
    """The engine called ``name``; ``auto``: Ray when it is installed, else sequential with a hint."""
    if name == "auto":
        if ray_available():
            name = "ray"
        elif opts.address:
            raise ToolchainMissingError("ray", install=RAY_HINT, purpose="--address (a Ray cluster)")
        else:
            log(f"Ray is not installed: trials run one after another in this process ({RAY_HINT} to run them on Ray)")
            name = "sequential"
    if name not in ENGINES:
        raise ConfigError(f"unknown engine '{name}'; choose auto, {', '.join(ENGINES)}", where="--engine")
    if opts.cpus_per_trial < 1:
        raise ConfigError(f"cpus per trial must be >= 1, got {opts.cpus_per_trial}", where="--cpus-per-trial")
    if opts.workers is not None and opts.workers < 1:
        raise ConfigError(f"workers must be >= 1, got {opts.workers}", where="--workers")
    if opts.retries < 0:
        raise ConfigError(f"retries must be >= 0, got {opts.retries}", where="--retries")
    return ENGINES[name](opts)
