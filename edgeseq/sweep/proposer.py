"""Trial proposals: Optuna's TPE sampler (multi-objective, with the device constraints), seeded, in
batches.

Trials are proposed ``batch`` at a time: a batch is proposed whole once every trial before it has
finished. The proposals therefore depend on the seed, the batch size and the results
alone, never on how many workers run them or in which order they finish, so a sweep on one worker,
on a Ray cluster or in-process proposes (and, training being deterministic, measures) the same
trials. Resuming replays the recorded trials through the same sampler, which proposes them again
(checked) and continues exactly where the interrupted sweep would have. A proposal equal to an
earlier one (TPE repeats points of small discrete spaces) is not run twice: the sampler is told it
failed and asked again, and after a few repeats a seeded random point not yet proposed is taken.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from ..errors import ConfigError
from .space import SearchSpace, TrialConfig


@dataclass(frozen=True)
class Objective:
    """A measured metric the search optimises (``maximize`` or not)."""

    metric: str
    maximize: bool

    @property
    def direction(self) -> str:
        return "maximize" if self.maximize else "minimize"


@dataclass(frozen=True)
class Constraints:
    """Limits a chosen model must meet; the sampler learns to stay inside them."""

    max_flash: Optional[int] = None  # bytes
    max_ram: Optional[int] = None  # bytes
    max_instructions: Optional[int] = None  # per inference
    min_accuracy: Optional[float] = None  # int8, held-out validation subjects (0..1)

    def __post_init__(self):
        for k in ("max_flash", "max_ram", "max_instructions"):
            v = getattr(self, k)
            if v is not None and v <= 0:
                raise ConfigError(f"{k.replace('_', '-')} must be positive, got {v}", where=f"--{k.replace('_', '-')}")
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy <= 1.0:
            raise ConfigError(
                f"min-accuracy must lie in 0..1 (or 0%..100%), got {self.min_accuracy}", where="--min-accuracy"
            )

    # (metric, limit, sign): a value v meets the limit when sign * (v - limit) <= 0
    def terms(self) -> list[tuple[str, float, int]]:
        t = []
        if self.max_flash is not None:
            t.append(("flash_bytes", float(self.max_flash), 1))
        if self.max_ram is not None:
            t.append(("ram_bytes", float(self.max_ram), 1))
        if self.max_instructions is not None:
            t.append(("instructions_per_inference", float(self.max_instructions), 1))
        if self.min_accuracy is not None:
            t.append(("accuracy_int8_val", float(self.min_accuracy), -1))
        return t

    def violations(self, metrics: Mapping[str, Any]) -> list[float]:
        """One number per constraint, <= 0 when met (Optuna's convention); a missing metric violates."""
        out = []
        for metric, limit, sign in self.terms():
            v = metrics.get(metric)
            out.append(float("inf") if v is None else sign * (float(v) - limit) / max(abs(limit), 1e-12))
        return out

    def met(self, metrics: Mapping[str, Any]) -> bool:
        return all(v <= 0 for v in self.violations(metrics))

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def describe(self) -> str:
        parts = []
        if self.max_flash is not None:
            parts.append(f"flash <= {self.max_flash:,} B")
        if self.max_ram is not None:
            parts.append(f"RAM <= {self.max_ram:,} B")
        if self.max_instructions is not None:
            parts.append(f"instructions <= {self.max_instructions:,}")
        if self.min_accuracy is not None:
            parts.append(f"int8 validation accuracy >= {100 * self.min_accuracy:.2f}%")
        return ", ".join(parts) or "none"


@dataclass(frozen=True)
class Proposal:
    number: int
    params: dict
    config: TrialConfig


FINISHED = "finished"  # next(): no trial left to propose (or the space is exhausted)
WAIT = None  # next(): the current batch must finish first


TPE_REPEATS = 10  # TPE asks that only repeat earlier proposals before a random unseen point is taken
RANDOM_TRIES = 200  # random draws that only repeat earlier proposals before the space counts as exhausted


def canonical(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def check_sizes(trials: int, batch: int, startup: Optional[int] = None) -> None:
    """The sweep's counts, checked before any work (a bad one fails in one line)."""
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}", where="--batch")
    if trials < 1:
        raise ConfigError(f"trials must be >= 1, got {trials}", where="--trials")
    if startup is not None and startup < 0:
        raise ConfigError(f"random trials must be >= 0, got {startup}", where="startup")


class Proposer:
    """Seeded TPE proposals in batches of ``batch``; ``tell`` the record of each proposed trial."""

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        constraints: Constraints,
        *,
        seed: int,
        batch: int,
        trials: int,
        startup: Optional[int] = None,
    ):
        import optuna
        from optuna.samplers import TPESampler

        check_sizes(trials, batch, startup)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space, self.objectives, self.constraints = space, tuple(objectives), constraints
        self.batch, self.trials, self.seed = batch, trials, seed
        self.startup = startup if startup is not None else default_startup(trials, batch)
        cfunc = _constraint_values if constraints.terms() else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks constraints_func experimental
            sampler = TPESampler(seed=seed, n_startup_trials=self.startup, constraints_func=cfunc)
        self.study = optuna.create_study(directions=[o.direction for o in self.objectives], sampler=sampler)
        self._open: dict[int, Any] = {}  # number -> optuna trial, proposed and not told
        self._params: dict[int, dict] = {}
        self._told: set[int] = set()
        self._seen: set[str] = set()
        self._queue: list[Proposal] = []  # the open batch, proposed and not yet handed out
        self.exhausted = False  # no unseen point left (as far as RANDOM_TRIES random draws can tell)

    @property
    def proposed(self) -> int:
        return len(self._params)

    @property
    def done(self) -> bool:
        """Every trial proposed (or the space exhausted) and told."""
        return (self.proposed >= self.trials or self.exhausted) and not self._queue and not self._open

    def next(self):
        """The next :class:`Proposal`, :data:`WAIT` while the current batch runs, or :data:`FINISHED`.

        A batch is proposed whole when it opens (after every earlier trial was told), so which
        trials of it finish first cannot change the proposals of the others."""
        if self._queue:
            return self._queue.pop(0)
        n = self.proposed
        if n >= self.trials or self.exhausted:
            return FINISHED
        if any(i not in self._told for i in range(n)):
            return WAIT
        for k in range(n, min(n + self.batch, self.trials)):
            p = self._ask(k)
            if p is None:
                break
            self._queue.append(p)
        return self._queue.pop(0) if self._queue else FINISHED

    def _ask(self, n: int) -> Optional[Proposal]:
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(TPE_REPEATS):
                trial = self.study.ask()
                params = self.space.sample(trial)
                if canonical(params) not in self._seen:
                    break
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                # TPE keeps returning to points it has: a seeded random point it has not seen instead
                params = self._random_unseen(n)
                if params is None:
                    self.exhausted = True
                    return None
                self.study.enqueue_trial(params)
                trial = self.study.ask()
                self.space.sample(trial)
        self._seen.add(canonical(params))
        self._open[n] = trial
        self._params[n] = params
        return Proposal(n, params, self.space.trial_config(params))

    def _random_unseen(self, number: int) -> Optional[dict]:
        import optuna

        for attempt in range(RANDOM_TRIES):
            scratch = optuna.create_study(
                sampler=optuna.samplers.RandomSampler(seed=self.seed * 100003 + number * 211 + attempt)
            )
            params = self.space.sample(scratch.ask())
            if canonical(params) not in self._seen:
                return params
        return None

    def params(self, number: int) -> dict:
        return self._params[number]

    def tell(self, number: int, record: Mapping[str, Any]) -> None:
        """Report a proposed trial's record (``status`` 'ok' with ``metrics``, or failed)."""
        import optuna

        trial = self._open.pop(number)
        metrics = record.get("metrics") or {}
        values = [metrics.get(o.metric) for o in self.objectives]
        ok = record.get("status") == "ok" and all(v is not None for v in values)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if ok:
                if self.constraints.terms():
                    trial.set_user_attr("constraints", self.constraints.violations(metrics))
                self.study.tell(trial, [float(v) for v in values])
            else:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self._told.add(number)


def _constraint_values(trial) -> Sequence[float]:
    return trial.user_attrs.get("constraints", [float("inf")])


def default_startup(trials: int, batch: int) -> int:
    """Random trials before TPE models the results: a third of the sweep, at least one batch,
    at most Optuna's default of 10 (counted in completed trials when a batch is proposed)."""
    return max(batch, min(10, trials // 3))
