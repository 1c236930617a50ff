"""The Ray Tune engine: each trial is a Tune trial (one Ray worker process, ``cpus_per_trial`` CPUs),
proposed by a Tune ``Searcher`` that asks the sweep's own seeded, batched Optuna proposer, and
recorded by a Tune ``Callback`` into the sweep directory as it finishes. Ray is imported only here.

A worker lost mid-trial (killed, out of memory, node gone) is re-run up to ``retries`` times by
Tune; after that the trial is recorded as failed with Ray's error, and the sweep goes on.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from typing import TYPE_CHECKING, Any, Optional

from ..errors import ConfigError

if TYPE_CHECKING:
    from .engines import EngineOptions

LOCAL_OBJECT_STORE_BYTES = 256 << 20  # results are small: do not reserve Ray's default 30% of RAM


def _trainable(config: dict) -> None:
    """The Tune function trainable: one trial, its stages reported as intermediate results."""
    from ray import tune

    from .space import TrialConfig
    from .trial import TrialSetup, run_trial

    tune.report({"stage": "start", "host": socket.gethostname(), "pid": os.getpid()})
    rec = run_trial(
        TrialSetup.from_json(config["setup"]),
        TrialConfig.from_json(config["trial"]),
        report=lambda stage: tune.report({"stage": stage}),
    )
    tune.report({"stage": "done", "record": json.dumps(rec)})


class RayEngine:
    name = "ray"

    def __init__(self, opts: EngineOptions):
        self.opts = opts
        self.workers: Optional[int] = opts.workers
        self.cluster_cpus: Optional[float] = None

    def describe(self) -> dict:
        return {
            "engine": self.name,
            "address": self.opts.address or "local",
            "workers": self.workers,
            "cpus_per_trial": self.opts.cpus_per_trial,
            "retries": self.opts.retries,
            "cluster_cpus": self.cluster_cpus,
        }

    def _init(self, ray) -> bool:
        """Connect to the cluster (or start a local one); True when this call started Ray."""
        if ray.is_initialized():
            return False
        kw: dict[str, Any] = dict(logging_level=logging.ERROR, log_to_driver=False)
        if self.opts.address:
            try:
                ray.init(address=self.opts.address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as e:
                msg = " ".join(str(e).split())[:300]
                raise ConfigError(
                    f"cannot connect to the Ray cluster ({msg})",
                    where=f"--address {self.opts.address}",
                    hint="start one with `ray start --head`; a cluster with token authentication "
                    "needs RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN_PATH)",
                ) from None
        else:
            # Ray lowers its workers' priority (niceness 15) to keep its own services responsive; here the
            # workers are the sweep: they keep the priority the sweep was started with (e.g. nice -n 10)
            os.environ.setdefault("RAY_worker_niceness", "0")
            n = (self.opts.workers or os.cpu_count() or 1) * self.opts.cpus_per_trial
            ray.init(
                address="local", num_cpus=n, include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES, **kw
            )
        return True

    def run(self, driver) -> None:
        # Tune's console tables and per-trial result files are replaced by the sweep's own progress
        # lines and records (the records also hold the trial files, which the loggers would copy)
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        import ray
        from ray import tune

        started = self._init(ray)
        try:
            self.cluster_cpus = float(ray.cluster_resources().get("CPU", 0.0))
            fit = max(1, int(self.cluster_cpus // self.opts.cpus_per_trial))
            self.workers = min(self.opts.workers or fit, driver.batch)
            if self.opts.workers and self.opts.workers > driver.batch:
                driver.log(
                    f"note: at most --batch ({driver.batch}) trials run at once; --workers "
                    f"{self.opts.workers} cannot all be busy"
                )
            if self.opts.cpus_per_trial > self.cluster_cpus:
                raise ConfigError(
                    f"a trial asks for {self.opts.cpus_per_trial} CPUs, the Ray cluster has {self.cluster_cpus:g}",
                    where="--cpus-per-trial",
                )
            driver.log(
                f"Ray: {'cluster ' + self.opts.address if self.opts.address else 'local instance'} with "
                f"{self.cluster_cpus:g} CPUs, {self.workers} trial(s) at a time"
            )
            for name in ("ray.tune", "ray.train", "ray.air"):
                logging.getLogger(name).setLevel(logging.ERROR)
            tuner = tune.Tuner(
                tune.with_resources(_trainable, {"cpu": self.opts.cpus_per_trial}),
                # reuse_actors: a worker process runs trial after trial (imports and data loaded once)
                tune_config=tune.TuneConfig(
                    search_alg=_searcher(driver),
                    num_samples=max(1, driver.to_run()),
                    max_concurrent_trials=self.workers,
                    reuse_actors=True,
                    trial_name_creator=_trial_name,
                    trial_dirname_creator=_trial_name,
                ),
                run_config=tune.RunConfig(
                    name=f"session-{driver.session}",
                    storage_path=str((driver.out / "ray").resolve()),
                    verbose=0,
                    callbacks=[_recorder(driver, self.opts.retries)],
                    failure_config=tune.FailureConfig(max_failures=self.opts.retries),
                ),
            )
            tuner.fit()
        finally:
            if started:
                ray.shutdown()


def _trial_name(trial) -> str:
    return f"trial-{trial.config['number']:04d}"


def _searcher(driver):
    from ray.tune.search import Searcher

    from .proposer import FINISHED, WAIT

    class SweepSearcher(Searcher):
        """Tune's view of the sweep's proposer (which batches and replays; see proposer.py)."""

        def suggest(self, trial_id: str):
            p = driver.next()
            if p is FINISHED:
                return Searcher.FINISHED
            if p is WAIT:
                return None
            return {"number": p.number, "setup": driver.setup.to_json(), "trial": p.config.to_json()}

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
            pass  # recorded by the callback, which sees the whole trial

        def set_search_properties(self, metric, mode, config, **spec) -> bool:
            return True

        def save(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "w") as f:
                json.dump({"state": "kept in the edgeseq sweep directory", "out": str(driver.out)}, f)

        def restore(self, checkpoint_path: str) -> None:
            pass

    return SweepSearcher()


def _recorder(driver, retries: int):
    from ray import tune

    class Recorder(tune.Callback):
        """Trial progress -> the driver's progress lines; finished and failed trials -> records."""

        def __init__(self):
            self.recovered: dict[int, int] = {}
            self.where: dict[int, dict] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            n = trial.config["number"]
            stage = result.get("stage")
            if stage == "start":
                self.where[n] = {"host": result.get("host"), "pid": result.get("pid")}
                driver.started(n, where=f"{result.get('host')} (pid {result.get('pid')})")
            elif stage and stage != "done":
                driver.stage(n, stage)

        def on_trial_recover(self, iteration, trials, trial, **info):
            n = trial.config["number"]
            self.recovered[n] = self.recovered.get(n, 0) + 1
            driver.log(
                f"trial {n}: its worker was lost ({_error_text(trial)}); running it again "
                f"({self.recovered[n]}/{retries})"
            )

        def on_trial_complete(self, iteration, trials, trial, **info):
            n = trial.config["number"]
            last = trial.last_result or {}
            if "record" in last:
                rec = json.loads(last["record"])
            else:
                rec = self._failed(trial, "the trial ended without reporting a result")
            rec["retries"] = self.recovered.get(n, 0)
            driver.finish(n, rec)

        def on_trial_error(self, iteration, trials, trial, **info):
            n = trial.config["number"]
            rec = self._failed(trial, f"the Ray worker running the trial failed: {_error_text(trial)}")
            rec["retries"] = self.recovered.get(n, 0)
            driver.finish(n, rec)

        def _failed(self, trial, error: str) -> dict:
            n = trial.config["number"]
            return {
                "status": "failed",
                "stage": driver.last_stage(n),
                "error": error,
                "config": trial.config["trial"],
                "metrics": {},
                "seconds": {},
                **self.where.get(n, {}),
            }

    return Recorder()


def _error_text(trial) -> str:
    """The gist of Tune's error file for a trial, as one line."""
    text = ""
    try:
        if trial.error_file:
            with open(trial.error_file, encoding="utf-8", errors="replace") as f:
                text = f.read()[-20000:]
    except OSError:
        pass
    block = text.rsplit("Failure #", 1)[-1]
    lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
    keep = [
        ln
        for ln in lines
        if any(w in ln for w in ("died", "Error", "killed", "exit", "SIG"))
        and not ln.startswith(("File ", "Traceback"))
    ]
    gist = " ".join((keep or lines[-1:] or ["unknown error"])[:3])
    return gist[:400]
