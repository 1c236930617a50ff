"""Search spaces: what a sweep varies, per task, and the JSON file format that overrides them.

A space has four sections, in the order a trial uses them::

    {
      "model": {"arch": {"choices": ["lmu", "gru"]},              # searched: choices ...
                "hidden": {"choices": [16, 32, 64]},
                "theta": {"low": 32, "high": 192, "log": true,     # ... or a range (int with "int": true)
                          "when": {"arch": ["lmu"]}},              # only for some values of an earlier one
                "readout": "mean"},                                # fixed: a plain value
      "train": {"epochs": 30},                                     # edgeseq.train.TrainConfig fields
      "prune": {"sparsity": {"choices": [0.0, 0.25, 0.5]}, "finetune_epochs": 5},
      "quant": {"budget": {"choices": [0.25, 0.5, 1.0]}}
    }

``model`` keys are the zoo's ``build_model`` settings on top of the task's recipe for the chosen
``arch`` (a key one architecture does not take fails those trials, recorded with the error);
``train`` keys override the recipe's training settings; ``prune`` (structured pruning, skipped at
sparsity 0): ``sparsity``, ``memory_sparsity``, ``finetune_epochs``, ``lr``, ``criterion``,
``compensate``; ``quant``: ``config`` (a preset), ``budget`` (accuracy points the mixed-precision
search may lose against float), ``max_promotions``, ``calib``, ``val``.

A ``when`` condition names an earlier searched key (``arch``, or ``model.arch`` from another
section). Dimensions are proposed in file order (define-by-run), so an Optuna sampler sees the
conditional structure.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from ..errors import ConfigError

SECTIONS = ("model", "train", "prune", "quant")
PRUNE_KEYS = {
    "sparsity": 0.0,
    "memory_sparsity": 0.0,
    "finetune_epochs": 5,
    "lr": 1e-3,
    "criterion": "reconstruction",
    "compensate": "lstsq",
}
QUANT_KEYS = {"config": "edgeseq", "budget": 0.5, "max_promotions": 8, "calib": 512, "val": 1024}
_SPEC_KEYS = {"choices", "low", "high", "log", "step", "int", "when"}


def _allowed(section: str) -> Optional[set[str]]:
    """The keys a section takes (None: any, checked when the model is built)."""
    if section == "train":
        from ..train.loop import TrainConfig

        return set(TrainConfig.__dataclass_fields__)
    if section == "prune":
        return set(PRUNE_KEYS)
    if section == "quant":
        return set(QUANT_KEYS)
    return None


@dataclass(frozen=True)
class Dim:
    """One searched setting: ``choices``, or a ``low``..``high`` range (``integer``, ``log``, ``step``);
    active only when every ``when`` condition holds for the values proposed before it."""

    section: str
    key: str
    choices: Optional[tuple] = None
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    integer: bool = False
    when: tuple[tuple[str, tuple], ...] = ()

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    def active(self, params: Mapping[str, Any]) -> bool:
        return all(name in params and params[name] in allowed for name, allowed in self.when)

    def suggest(self, trial) -> Any:
        """Ask an Optuna trial for this dimension's value."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def to_json(self) -> dict:
        d: dict[str, Any] = {}
        if self.choices is not None:
            d["choices"] = list(self.choices)
        else:
            d.update(low=self.low, high=self.high)
            if self.integer:
                d["int"] = True
            if self.log:
                d["log"] = True
            if self.step is not None:
                d["step"] = self.step
        if self.when:
            d["when"] = {name: list(allowed) for name, allowed in self.when}
        return d


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial does differently: the architecture and its model settings, training
    overrides, structured pruning and the quantization settings."""

    arch: str
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    prune: dict = field(default_factory=dict)
    quant: dict = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        return float(self.prune.get("sparsity", 0.0) or 0.0)

    def quant_setting(self, key: str):
        return self.quant.get(key, QUANT_KEYS[key])

    def prune_setting(self, key: str):
        return self.prune.get(key, PRUNE_KEYS[key])

    def to_json(self) -> dict:
        return {
            "arch": self.arch,
            "model": dict(self.model),
            "train": dict(self.train),
            "prune": dict(self.prune),
            "quant": dict(self.quant),
        }

    @classmethod
    def from_json(cls, d: Mapping) -> "TrialConfig":
        return cls(
            d["arch"],
            dict(d.get("model") or {}),
            dict(d.get("train") or {}),
            dict(d.get("prune") or {}),
            dict(d.get("quant") or {}),
        )

    def label(self) -> str:
        """A short human-readable name: ``lmu h32 d4 o8 t64 s0.25 b0.5``, ``gru h24 mean b1``."""
        short = {"hidden": "h", "memory_d": "d", "order": "o", "theta": "t", "layers": "L"}
        parts = [self.arch] + [f"{s}{_num(self.model[k])}" for k, s in short.items() if k in self.model]
        if "readout" in self.model:
            parts.append(str(self.model["readout"]))
        if self.sparsity:
            parts.append(f"s{_num(self.sparsity)}")
        if "budget" in self.quant:
            parts.append(f"b{_num(self.quant['budget'])}")
        return " ".join(parts)


def _num(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


@dataclass(frozen=True)
class SearchSpace:
    """Searched dimensions (in proposal order) and fixed settings per section."""

    dims: tuple[Dim, ...]
    fixed: Mapping[str, Mapping[str, Any]]
    source: str = "default"

    def sample(self, trial) -> dict[str, Any]:
        """Propose values for the active dimensions of an Optuna trial (define-by-run)."""
        params: dict[str, Any] = {}
        for d in self.dims:
            if d.active(params):
                params[d.name] = d.suggest(trial)
        return params

    def trial_config(self, params: Mapping[str, Any]) -> TrialConfig:
        sections: dict[str, dict] = {s: dict(self.fixed.get(s, {})) for s in SECTIONS}
        for name, value in params.items():
            section, key = name.split(".", 1)
            sections[section][key] = value
        model = sections["model"]
        arch = model.pop("arch")
        return TrialConfig(arch, model, sections["train"], sections["prune"], sections["quant"])

    def archs(self) -> tuple[str, ...]:
        for d in self.dims:
            if d.name == "model.arch":
                return tuple(d.choices or ())
        return (self.fixed["model"]["arch"],)

    def to_json(self) -> dict:
        out: dict[str, dict] = {}
        for s in SECTIONS:
            sec = {d.key: d.to_json() for d in self.dims if d.section == s}
            sec.update(self.fixed.get(s, {}))
            if sec:
                out[s] = sec
        return out

    def fingerprint(self) -> str:
        doc = {"dims": [[d.name, d.to_json()] for d in self.dims], "fixed": {s: dict(v) for s, v in self.fixed.items()}}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        lines = []
        for d in self.dims:
            spec = d.to_json()
            what = (
                f"one of {spec['choices']}"
                if "choices" in spec
                else f"{'int ' if d.integer else ''}{d.low}..{d.high}{' (log)' if d.log else ''}"
            )
            cond = "".join(f" when {n} in {list(a)}" for n, a in d.when)
            lines.append(f"  {d.name}: {what}{cond}")
        for s in SECTIONS:
            for k, v in self.fixed.get(s, {}).items():
                lines.append(f"  {s}.{k} = {v!r}")
        return "\n".join(lines)


def parse_space(doc: Any, where: str = "search space", task: Optional[str] = None) -> SearchSpace:
    """Validate a space document (see the module docstring) and build a :class:`SearchSpace`."""
    if not isinstance(doc, Mapping):
        raise ConfigError("a search space is a JSON object with sections " + ", ".join(SECTIONS), where=where)
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; sections are {', '.join(SECTIONS)}", where=where)
    dims: list[Dim] = []
    fixed: dict[str, dict] = {s: {} for s in SECTIONS}
    seen: dict[str, Dim] = {}
    for section in SECTIONS:
        body = doc.get(section) or {}
        if not isinstance(body, Mapping):
            raise ConfigError(f"section '{section}' must be an object", where=where)
        allowed = _allowed(section)
        for key, spec in body.items():
            at = f"{where}: {section}.{key}"
            if allowed is not None and key not in allowed:
                raise ConfigError(f"unknown {section} setting '{key}'; known: {', '.join(sorted(allowed))}", where=at)
            if isinstance(spec, Mapping):
                d = _parse_dim(section, key, spec, seen, at)
                dims.append(d)
                seen[d.name] = d
            else:
                if (
                    not isinstance(spec, (str, int, float, bool, list))
                    or isinstance(spec, float)
                    and not math.isfinite(spec)
                ):
                    raise ConfigError(
                        f"a fixed value must be a JSON number, string, boolean or list, got {spec!r}", where=at
                    )
                fixed[section][key] = spec
    if "model.arch" not in seen and "arch" not in fixed["model"]:
        raise ConfigError("the model section needs 'arch' (fixed, or {\"choices\": [...]})", where=where)
    space = SearchSpace(tuple(dims), {s: v for s, v in fixed.items() if v}, source=where)
    if task is not None:
        check_archs(space, task, where)
    return space


def _parse_dim(section: str, key: str, spec: Mapping, seen: Mapping[str, Dim], at: str) -> Dim:
    bad = sorted(set(spec) - _SPEC_KEYS)
    if bad:
        raise ConfigError(
            f"unknown field(s) {bad}; a searched setting has 'choices' or 'low'/'high' "
            "(+ 'int', 'log', 'step'), and optionally 'when'",
            where=at,
        )
    when = []
    for name, allowed in (spec.get("when") or {}).items():
        ref = name if "." in name else f"{section}.{name}"
        if ref not in seen:
            raise ConfigError(f"'when' refers to '{name}', which is not a searched setting listed before it", where=at)
        allowed = allowed if isinstance(allowed, list) else [allowed]
        options = seen[ref].choices
        if options is None:
            raise ConfigError(f"'when' can only test a setting with choices; '{ref}' is a range", where=at)
        missing = [a for a in allowed if a not in options]
        if missing:
            raise ConfigError(f"'when' values {missing} are not among the choices of '{ref}' {list(options)}", where=at)
        when.append((ref, tuple(allowed)))
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) & {"low", "high", "log", "step", "int"}:
            raise ConfigError("give either 'choices' or a 'low'/'high' range, not both", where=at)
        if not isinstance(choices, list) or not choices:
            raise ConfigError("'choices' must be a non-empty list", where=at)
        for c in choices:
            if not (c is None or isinstance(c, (str, int, float, bool))):
                raise ConfigError(f"choices must be numbers, strings, booleans or null, got {c!r}", where=at)
        if len(set(map(json.dumps, choices))) != len(choices):
            raise ConfigError(f"'choices' has duplicates: {choices}", where=at)
        return Dim(section, key, choices=tuple(choices), when=tuple(when))
    if "low" not in spec or "high" not in spec:
        raise ConfigError("a searched setting needs 'choices' or both 'low' and 'high'", where=at)
    lo, hi = spec["low"], spec["high"]
    integer = bool(spec.get("int", False))
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"'low' and 'high' must be finite numbers, got {lo!r} / {hi!r}", where=at)
    if integer and not (float(lo).is_integer() and float(hi).is_integer()):
        raise ConfigError(f"an integer range needs integer bounds, got {lo!r} / {hi!r}", where=at)
    if not lo < hi:
        raise ConfigError(f"'low' must be below 'high', got {lo} / {hi}", where=at)
    log = bool(spec.get("log", False))
    if log and lo <= 0:
        raise ConfigError("a log range needs 'low' > 0", where=at)
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise ConfigError(f"'step' must be a positive number, got {step!r}", where=at)
        if log:
            raise ConfigError("'step' and 'log' cannot be combined", where=at)
    return Dim(section, key, low=lo, high=hi, log=log, step=step, integer=integer, when=tuple(when))


def check_archs(space: SearchSpace, task: str, where: str) -> None:
    """Every architecture the space may propose must have a training recipe for ``task``."""
    from ..train.recipes import RECIPES, TASKS

    if task not in TASKS:
        raise ConfigError(f"unknown task '{task}'; choose one of: {', '.join(TASKS)}", where="--task")
    missing = [a for a in space.archs() if a not in RECIPES[task]]
    if missing:
        raise ConfigError(
            f"no '{task}' training recipe for architecture(s) {missing}; available: {', '.join(RECIPES[task])}",
            where=where,
        )


def load_space(path, task: Optional[str] = None) -> SearchSpace:
    """A search space from a JSON file (bounded size, no code)."""
    from ..util.safeio import parse_json, read_file

    p = Path(path)
    data = read_file(p, ConfigError, max_bytes=1 << 20, what="search space file")
    return parse_space(parse_json(data, ConfigError, where=str(p), what="search space file"), where=str(p), task=task)


# ------------------------------------------------------------------------------------ defaults

# Training keeps the recipe's settings except its wall-clock budget: a trial stopped by the clock on a
# busy machine would make the results depend on the machine's load, not on the seed.
_TRAIN = {"max_minutes": 120.0}
# IMU windows (HAR, smartwatch): small recurrent models; the LMU's memory size / order / window, the
# GRU / minGRU width and the GRU's readout (last step or mean over the window) trade accuracy for
# instructions and flash on a microcontroller
_IMU_SPACE = {
    "model": {
        "arch": {"choices": ["lmu", "gru", "mingru"]},
        "hidden": {"choices": [16, 24, 32, 48, 64]},
        "readout": {"choices": ["last", "mean"], "when": {"arch": ["gru"]}},
        "memory_d": {"choices": [2, 4, 8, 12], "when": {"arch": ["lmu"]}},
        "order": {"choices": [4, 8, 12, 16], "when": {"arch": ["lmu"]}},
        "theta": {"low": 32.0, "high": 192.0, "log": True, "when": {"arch": ["lmu"]}},
    },
    "train": _TRAIN,
    "prune": {"sparsity": {"choices": [0.0, 0.25, 0.5]}, "finetune_epochs": 5},
    "quant": {"budget": {"choices": [0.25, 0.5, 1.0]}},
}
# log-mel keyword spotting: wider models, the LMU with its conv stem (the recipe's)
_KWS_SPACE = {
    "model": {
        "arch": {"choices": ["lmu", "gru"]},
        "hidden": {"choices": [48, 64, 96]},
        "memory_d": {"choices": [8, 12, 16], "when": {"arch": ["lmu"]}},
        "order": {"choices": [8, 12], "when": {"arch": ["lmu"]}},
    },
    "train": _TRAIN,
    "prune": {"sparsity": {"choices": [0.0, 0.25]}, "finetune_epochs": 3},
    "quant": {"budget": {"choices": [0.5, 1.0]}},
}
DEFAULT_SPACES: dict[str, dict] = {"har": _IMU_SPACE, "har12": _IMU_SPACE, "smartwatch": _IMU_SPACE, "kws": _KWS_SPACE}


def default_space(task: str) -> SearchSpace:
    if task not in DEFAULT_SPACES:
        raise ConfigError(
            f"no default search space for task '{task}'; pass one with --space FILE.json "
            f"(tasks with defaults: {', '.join(DEFAULT_SPACES)})",
            where="--task",
        )
    return parse_space(DEFAULT_SPACES[task], where=f"default {task} search space", task=task)
