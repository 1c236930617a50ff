"""The sweep itself: proposals -> trials on an engine -> records -> Pareto fronts, the chosen model
exported for the target, results.json / results.csv and report.html."""

from __future__ import annotations

import csv
import hashlib
import io
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from ..errors import ConfigError
from ..util.fs import atomic_write_text
from .engines import EngineOptions, make_engine
from .pareto import SEARCH_ACCURACY, TEST_ACCURACY, choose, criteria, front, versus
from .proposer import FINISHED, WAIT, Constraints, Objective, Proposer, canonical, check_sizes, default_startup
from .space import SearchSpace, TrialConfig, default_space, load_space
from .store import Store
from .trial import TrialSetup, load_data, measure_model, one_line

# targets whose cost a sweep can measure: instruction counts under QEMU (+ flash / RAM on the boards)
TARGETS = ("cortex-m4", "cortex-m7", "cortex-m55", "arm")
METRICS = (
    "accuracy_int8_val",
    "accuracy_int8_test",
    "accuracy_float_val",
    "accuracy_float_test",
    "instructions_per_inference",
    "instructions_per_step",
    "flash_bytes",
    "ram_bytes",
    "parameters",
    "macs_per_step",
    "bit_exact",
    "device_windows",
    "device_agreement",
    "quant_budget_met",
)


def objectives(target: str) -> list[Objective]:
    """What the sampler optimises: int8 accuracy on the validation subjects, instructions per
    inference and (on microcontroller boards) flash."""
    obj = [Objective(SEARCH_ACCURACY, True), Objective("instructions_per_inference", False)]
    if target.startswith("cortex-m"):
        obj.append(Objective("flash_bytes", False))
    return obj


def default_baselines(task: str) -> list[str]:
    """The shipped models trained on ``task``: each sweep measures them like a trial, for comparison."""
    from ..models import shipped_info

    return [m["name"] for m in shipped_info() if m.get("task") == task]


def _file_digest(path: Optional[str]) -> Optional[str]:
    if path is None:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class Driver:
    """Between the engine and the sweep: proposals (replaying recorded trials), progress lines,
    and each finished trial persisted and told to the proposer."""

    def __init__(
        self,
        out: Path,
        store: Store,
        proposer: Proposer,
        setup: TrialSetup,
        records: dict[int, dict],
        *,
        session: int,
        engine: str,
        log: Callable[[str], None],
        verbose: bool = False,
    ):
        self.out, self.store, self.proposer, self.setup = out, store, proposer, setup
        self.records = records
        self.session, self.engine, self.log, self.verbose = session, engine, log, verbose
        self.fatal: Optional[BaseException] = None
        self.ran = 0
        self.replayed = 0
        self._stage: dict[int, str] = {}
        self._back: list = []  # a proposal taken by replay() that still has to run
        self._t0 = time.perf_counter()

    @property
    def batch(self) -> int:
        return self.proposer.batch

    def to_run(self) -> int:
        return max(0, self.proposer.trials - len(self.records))

    def next(self):
        """The next proposal to run, WAIT, or FINISHED (also after a fatal error, kept in ``fatal``)."""
        if self.fatal is not None:
            return FINISHED
        if self._back:
            return self._back.pop()
        try:
            while True:
                p = self.proposer.next()
                if p is WAIT or p is FINISHED:
                    return p
                rec = self.records.get(p.number)
                if rec is None:
                    return p
                if canonical(rec["params"]) != canonical(p.params):
                    raise ConfigError(
                        f"trial {p.number} was recorded with {canonical(rec['params'])} but the sampler now proposes "
                        f"{canonical(p.params)} (an Optuna version change?)",
                        where=str(self.store.trial_dir(p.number)),
                        hint="resume with the Optuna version that started the sweep, or start over with --force",
                    )
                self.proposer.tell(p.number, rec)
                self.replayed += 1
        except Exception as e:  # noqa: BLE001 - kept and raised by sweep() once the engine has stopped
            self.fatal = e
            return FINISHED

    def replay(self) -> bool:
        """Replay the recorded trials without an engine; True when nothing is left to run."""
        p = self.next()
        if p is FINISHED:
            return True
        if p is not WAIT:
            self._back.append(p)
        return False

    def started(self, number: int, where: str) -> None:
        self._stage[number] = "start"
        cfg = self.proposer.space.trial_config(self.proposer.params(number))
        self.log(f"trial {number} started: {cfg.label()}  [{where}]")

    def stage(self, number: int, stage: str) -> None:
        self._stage[number] = stage
        if self.verbose:
            self.log(f"trial {number}: {stage}")

    def last_stage(self, number: int) -> str:
        return self._stage.get(number, "start")

    def finish(self, number: int, record: Mapping[str, Any]) -> None:
        if number in self.records or self.fatal is not None:
            return
        try:
            rec = dict(record)
            params = self.proposer.params(number)
            rec.update(
                params=params,
                label=TrialConfig.from_json(rec["config"]).label() if rec.get("config") else "",
                engine=self.engine,
                session=self.session,
                finished=time.strftime("%Y-%m-%d %H:%M:%S"),
            )
            stored = self.store.save_trial(number, rec)
            self.records[number] = stored
            self.proposer.tell(number, stored)
            atomic_write_text(self.out / "results.csv", results_csv([self.records[k] for k in sorted(self.records)]))
            self.ran += 1
            self.log(
                progress_line(
                    stored,
                    len(self.records),
                    self.proposer.trials,
                    sum(r.get("status") != "ok" for r in self.records.values()),
                    time.perf_counter() - self._t0,
                )
            )
        except Exception as e:  # noqa: BLE001
            self.fatal = e


def _fmt_metrics(m: Mapping[str, Any]) -> str:
    parts = []
    if m.get("accuracy_int8_val") is not None:
        parts.append(f"int8 {100 * m['accuracy_int8_val']:.2f}% val / {100 * m['accuracy_int8_test']:.2f}% test")
    if m.get("instructions_per_inference") is not None:
        parts.append(f"{m['instructions_per_inference'] / 1e6:.2f} M instr")
    if m.get("flash_bytes") is not None:
        parts.append(f"{m['flash_bytes'] / 1024:.1f} KB flash, {m['ram_bytes'] / 1024:.1f} KB RAM")
    return ", ".join(parts)


def progress_line(rec: Mapping[str, Any], done: int, total: int, failed: int, elapsed: float) -> str:
    head = f"[{done}/{total}] trial {rec['number']} {rec.get('label', '')}"
    if rec.get("status") == "ok":
        body = f": {_fmt_metrics(rec['metrics'])}, {rec.get('seconds', {}).get('total', 0):.0f} s"
    else:
        body = f": FAILED in {rec.get('stage')}: {rec.get('error')}"
    tail = f"  ({failed} failed, {elapsed / 60:.1f} min)" if failed else f"  ({elapsed / 60:.1f} min)"
    return head + body + tail


@dataclass
class SweepResult:
    """What a sweep produced: ``results`` (the content of results.json), and where things are."""

    out: Path
    results: dict
    report: Path
    model_dir: Optional[Path] = None
    trials: list = field(default_factory=list)
    complete: bool = True  # False: stopped (Ctrl-C) before every trial ran; rerun to resume

    @property
    def chosen(self) -> Optional[dict]:
        c = self.results.get("chosen")
        return c if c and c.get("trial") is not None else None


def sweep(
    task: str = "har",
    target: str = "cortex-m4",
    trials: int = 16,
    out: Union[str, Path] = "runs/sweep",
    *,
    space: Union[None, str, Path, SearchSpace, Mapping] = None,
    constraints: Optional[Constraints] = None,
    seed: int = 0,
    batch: int = 4,
    startup: Optional[int] = None,
    engine: str = "auto",
    address: Optional[str] = None,
    workers: Optional[int] = None,
    cpus_per_trial: int = 1,
    retries: int = 1,
    train_data: Optional[str] = None,
    test_data: Optional[str] = None,
    device_windows: int = 32,
    threads: int = 1,
    baselines: Optional[Sequence[str]] = None,
    chosen_device_eval: Optional[int] = None,
    export_chosen: bool = True,
    force: bool = False,
    verbose: bool = False,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Search architectures and plans for ``task`` on ``target``: ``trials`` candidates proposed by
    Optuna's TPE sampler (seeded, ``batch`` at a time), each trained, pruned, quantized, exported and
    measured on the emulated device (:mod:`edgeseq.sweep.trial`), run by ``engine`` (``auto``: Ray
    when installed, else sequentially in-process). ``out`` is resumable: finished trials are kept
    and not run again. ``baselines``: models measured the same way for comparison (default: the
    shipped models of the task). ``chosen_device_eval``: test windows the chosen model runs on the
    emulated device (default: the whole test split). Returns a :class:`SweepResult`; writes
    ``results.json``, ``results.csv``, ``report.html`` and the chosen model's artifact (``model/``)."""
    from ..train.recipes import TASKS

    if task not in TASKS:
        raise ConfigError(f"unknown task '{task}'; choose one of: {', '.join(TASKS)}", where="--task")
    if target not in TARGETS:
        raise ConfigError(
            f"a sweep measures instructions under emulation: choose a target among {', '.join(TARGETS)}",
            where=f"--target {target}",
        )
    check_sizes(trials, batch, startup)
    if isinstance(space, SearchSpace):
        sp = space
    elif isinstance(space, Mapping):
        from .space import parse_space

        sp = parse_space(space, where="search space", task=task)
    elif space is not None:
        sp = load_space(space, task=task)
    else:
        sp = default_space(task)
    constraints = constraints or Constraints()
    setup = TrialSetup(
        task,
        target,
        str(Path(train_data).resolve()) if train_data else None,
        str(Path(test_data).resolve()) if test_data else None,
        device_windows,
        threads,
    )
    if setup.train_data is not None:
        load_data(setup)  # a dataset file that cannot be read fails here in one line, not in every trial
    from ..targets import get_target

    get_target(target).check_toolchain()
    eng = make_engine(engine, EngineOptions(address, workers, cpus_per_trial, retries), log=log)
    objs = objectives(target)
    out = Path(out)
    store = Store(out)
    if startup is None:  # a resumed (or extended) sweep keeps the number of random trials it started with
        old = store.definition() if not force else None
        startup = old["startup"] if old and isinstance(old.get("startup"), int) else default_startup(trials, batch)
    definition = {
        "task": task,
        "target": target,
        "space": sp.to_json(),
        "space_fingerprint": sp.fingerprint(),
        "seed": seed,
        "batch": batch,
        "startup": startup,
        "objectives": [[o.metric, o.direction] for o in objs],
        "constraints": constraints.to_json(),
        "setup": {k: v for k, v in setup.to_json().items() if k not in ("train_data", "test_data")},
        "data": {
            "train": setup.train_data,
            "train_sha256": _file_digest(setup.train_data),
            "test": setup.test_data,
            "test_sha256": _file_digest(setup.test_data),
        }
        if setup.train_data
        else {"splits": f"task {task}"},
        "trials": trials,
        "baselines": list(default_baselines(task) if baselines is None else baselines),
    }
    records = store.begin(definition, force=force)
    try:
        return _run(
            out,
            store,
            sp,
            setup,
            records,
            definition,
            constraints,
            eng,
            seed,
            batch,
            trials,
            startup,
            chosen_device_eval,
            export_chosen,
            verbose,
            log,
        )
    finally:
        store.close()


def _run(
    out,
    store,
    sp,
    setup,
    records,
    definition,
    constraints,
    eng,
    seed,
    batch,
    trials,
    startup,
    chosen_device_eval,
    export_chosen,
    verbose,
    log,
) -> SweepResult:
    import optuna

    from .._version import __version__

    if records:
        log(f"resuming {out}: {len(records)} trial(s) already recorded (not run again)")
    log(
        f"sweep {definition['task']} on {definition['target']}: {trials} trials, seed {seed}, batches of {batch} "
        f"({startup} random first), engine {eng.name}; constraints: {constraints.describe()}"
    )
    base = _baselines(store, setup, definition["baselines"], log)
    proposer = Proposer(
        sp, objectives(setup.target), constraints, seed=seed, batch=batch, trials=trials, startup=startup
    )
    sessions = store.sessions()
    index = len(sessions)
    session: dict[str, Any] = {
        "index": index,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": socket.gethostname(),
        "engine": eng.describe(),
        "trials_before": len(records),
        "status": "running",
        "edgeseq": __version__,
        "optuna": optuna.__version__,
    }
    store.save_session(index, session)
    driver = Driver(out, store, proposer, setup, records, session=index, engine=eng.name, log=log, verbose=verbose)
    t0 = time.perf_counter()
    status = "error"
    try:
        if driver.to_run() > 0 or not driver.replay():
            eng.run(driver)
        if driver.fatal is not None:
            raise driver.fatal
        status = "complete" if proposer.done else "stopped"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        session.update(
            engine=eng.describe(),
            status=status,
            seconds=round(time.perf_counter() - t0, 1),
            trials_run=driver.ran,
            finished=time.strftime("%Y-%m-%d %H:%M:%S"),
        )
        store.save_session(index, session)
    if proposer.exhausted:
        log(f"the search space has no new point left after {len(records)} trials")
    if status == "stopped":
        log(f"stopped with {len(records)} of {trials} trials recorded: rerun the same command to resume")
    res = finalize(
        out,
        store,
        definition,
        setup,
        constraints,
        base,
        chosen_device_eval,
        export_chosen and status == "complete",
        log,
    )
    res.complete = status == "complete"
    return res


def _baselines(store: Store, setup: TrialSetup, names: Sequence[str], log) -> dict[str, dict]:
    out = {}
    for name in names:
        rec = store.baseline(name)
        if rec is None:
            log(f"measuring the reference model {name} like a trial (quantize, export, measure)")
            rec = measure_model(setup, name)
            store.save_baseline(name, rec)
        if rec.get("status") == "ok":
            log(f"reference {name}: {_fmt_metrics(rec['metrics'])}")
        else:
            log(f"reference {name}: could not be measured: {rec.get('error')}")
        out[name] = rec
    return out


def finalize(
    out: Path,
    store: Store,
    definition: Mapping,
    setup: TrialSetup,
    constraints: Constraints,
    baselines: Mapping[str, dict],
    chosen_device_eval: Optional[int] = None,
    export_chosen: bool = True,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Fronts, the chosen model (exported for the target and run on the emulated device), the
    comparison with the reference models, results.json / .csv and report.html."""
    from ..util.fs import atomic_write_json
    from .report import write_report

    recs = [store.records()[n] for n in sorted(store.records())]
    present = next((r["metrics"] for r in recs if r.get("status") == "ok"), {})
    crit_val, crit_test = criteria(SEARCH_ACCURACY, present), criteria(TEST_ACCURACY, present)
    front_val, front_test = front(recs, crit_val), front(recs, crit_test)
    chosen, why = choose(recs, constraints, crit_val)
    for r in recs:
        r["pareto_val"] = r["number"] in front_val
        r["pareto_test"] = r["number"] in front_test
        r["feasible"] = r.get("status") == "ok" and constraints.met(r["metrics"])
    comparisons = {}
    for name, b in baselines.items():
        if b.get("status") == "ok":
            comparisons[name] = {
                "test": versus(recs, b["metrics"], crit_test, name, chosen),
                "validation": versus(recs, b["metrics"], crit_val, name, chosen),
            }
    chosen_info: dict[str, Any] = {"trial": chosen, "why": why}
    model_dir = None
    if chosen is not None:
        rec = next(r for r in recs if r["number"] == chosen)
        chosen_info.update(
            label=rec.get("label"),
            params=rec["params"],
            metrics=rec["metrics"],
            files={f: str(store.trial_dir(chosen) / f) for f in rec.get("files", [])},
        )
        if export_chosen:
            model_dir = out / "model"
            chosen_info["artifact"] = _export_chosen(store, chosen, rec, setup, model_dir, chosen_device_eval, log)
    sessions = store.sessions()
    results = {
        "format": "edgeseq-sweep-results/1",
        "sweep": {k: v for k, v in definition.items()},
        "sessions": sessions,
        "criteria": {"search": [k for k, _ in crit_val], "test": [k for k, _ in crit_test]},
        "pareto_front": {"validation": front_val, "test": front_test},
        "chosen": chosen_info,
        "baselines": {k: {kk: vv for kk, vv in v.items() if kk != "files"} for k, v in baselines.items()},
        "versus_baselines": comparisons,
        "counts": {
            "trials": len(recs),
            "ok": sum(r.get("status") == "ok" for r in recs),
            "failed": sum(r.get("status") != "ok" for r in recs),
            "feasible": sum(bool(r["feasible"]) for r in recs),
        },
        "trials": recs,
    }
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.csv", results_csv(recs))
    report = write_report(out / "report.html", results)
    log(summary(results))
    log(f"wrote {out}/results.json, results.csv, report.html" + (f", {model_dir}/" if model_dir else ""))
    return SweepResult(out, results, report, model_dir, recs)


def _export_chosen(
    store: Store, number: int, rec: Mapping, setup: TrialSetup, model_dir: Path, device_eval: Optional[int], log
) -> dict:
    """Export the chosen trial's quantized graph for the target into ``model_dir``, check it measures
    what the trial measured, and run test windows on the emulated device."""
    import numpy as np

    import edgeseq

    from ..quant import load_quantized
    from .trial import device_costs

    info: dict[str, Any] = {"dir": str(model_dir)}
    try:
        qg = load_quantized(store.trial_dir(number) / "model.q.esq")
        _, test = load_data(setup)
        log(f"exporting trial {number} for {setup.target} into {model_dir}")
        art = edgeseq.export(qg, target=setup.target, out=model_dir, force=True, golden_input=test.x[:2])
        cost = device_costs(art, test.x[:1])
        info.update(cost)
        info["costs_match_trial"] = all(
            cost.get(k) == rec["metrics"].get(k) for k in ("instructions_per_inference", "flash_bytes", "ram_bytes")
        )
        n = len(test) if device_eval is None else min(int(device_eval), len(test))
        if n:
            idx = np.unique(np.linspace(0, len(test) - 1, n).astype(int))
            t0 = time.perf_counter()
            preds = []
            step = 256
            for s in range(0, len(idx), step):
                preds.append(np.asarray(art.run(test.x[idx[s : s + step]])).argmax(-1))
                log(f"  chosen model on the emulated {setup.target}: {min(s + step, len(idx))}/{len(idx)} test windows")
            pred = np.concatenate(preds)
            info.update(
                device_windows=int(len(idx)),
                device_accuracy=float(np.mean(pred == test.y[idx])),
                device_agreement=float(np.mean(pred == qg.predict(test.x[idx], "int"))),
                device_seconds=round(time.perf_counter() - t0, 1),
            )
    except Exception as e:  # noqa: BLE001 - the sweep's results stand; the export error is reported
        info["error"] = one_line(e)
        log(f"could not export the chosen model: {info['error']}")
    return info


def summary(results: Mapping) -> str:
    c = results["counts"]
    lines = [
        f"{c['trials']} trials: {c['ok']} measured, {c['failed']} failed, {c['feasible']} meet the constraints; "
        f"Pareto front (validation): trials {results['pareto_front']['validation']}"
    ]
    ch = results["chosen"]
    if ch.get("trial") is None:
        lines.append(f"no model chosen: {ch['why']}")
    else:
        lines.append(f"chosen: trial {ch['trial']} {ch.get('label', '')} ({ch['why']}): {_fmt_metrics(ch['metrics'])}")
        art = ch.get("artifact") or {}
        if art.get("device_accuracy") is not None:
            lines.append(
                f"  on the emulated device: {100 * art['device_accuracy']:.2f}% over {art['device_windows']} "
                f"test windows (agreement with the integer-exact interpreter {100 * art['device_agreement']:.2f}%)"
            )
    for name, v in results.get("versus_baselines", {}).items():
        t = v["test"]
        lines.append(t.get("how") or f"no trial dominates {name} on the test split")
    return "\n".join(lines)


def results_csv(recs: Sequence[Mapping]) -> str:
    params = sorted({k for r in recs for k in (r.get("params") or {})})
    cols = (
        ["number", "status", "label"]
        + params
        + list(METRICS)
        + ["pareto_val", "pareto_test", "feasible", "seconds", "stage", "error"]
    )
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in recs:
        m = r.get("metrics") or {}
        w.writerow(
            [r.get("number"), r.get("status"), r.get("label")]
            + [(r.get("params") or {}).get(p) for p in params]
            + [m.get(k) for k in METRICS]
            + [
                r.get("pareto_val"),
                r.get("pareto_test"),
                r.get("feasible"),
                (r.get("seconds") or {}).get("total"),
                r.get("stage") if r.get("status") != "ok" else "",
                r.get("error") or "",
            ]
        )
    return buf.getvalue()
