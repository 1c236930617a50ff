"""Find the best model for a device: a search over architectures, sizes, pruning and quantization
plans, each candidate trained with the task's recipe, quantized, exported for the target and measured
on the emulated device, with a Pareto report.

    res = edgeseq.sweep("har", target="cortex-m4", trials=16, out="runs/sweep-har",
                        constraints=Constraints(max_flash=64 * 1024, min_accuracy=0.92))
    res.chosen["metrics"], res.report, res.model_dir

- :mod:`.space`: search spaces (defaults per task, JSON files), :class:`TrialConfig`;
- :mod:`.trial`: one trial (train -> prune -> quantize -> export -> measure), never raising for a bad candidate;
- :mod:`.proposer`: Optuna TPE proposals, seeded and batched so results do not depend on the engine;
- :mod:`.engines`: Ray Tune (``edgeseq[distributed]``, local or ``address=``) or sequential in-process;
- :mod:`.store`: the resumable sweep directory; :mod:`.pareto`: fronts, choice, dominance;
- :mod:`.report`: report.html with the Pareto plots; :mod:`.run`: :func:`sweep` itself.
"""

from __future__ import annotations

from .proposer import Constraints, Objective
from .run import TARGETS, SweepResult, sweep
from .space import DEFAULT_SPACES, SearchSpace, TrialConfig, default_space, load_space, parse_space
from .trial import TrialSetup, measure_model, run_trial

__all__ = [
    "Constraints",
    "DEFAULT_SPACES",
    "Objective",
    "SearchSpace",
    "SweepResult",
    "TARGETS",
    "TrialConfig",
    "TrialSetup",
    "default_space",
    "load_space",
    "measure_model",
    "parse_space",
    "run_trial",
    "sweep",
]

from ..util.modcall import make_callable  # noqa: E402

make_callable(__name__, "sweep")  # ``edgeseq.sweep(...)`` works after ``import edgeseq.sweep`` too
