"""The named datasets and their loaders: ``load_dataset(name, split, **kw)``.

Above :mod:`.dataset` and the loader modules (each builds a :class:`~.dataset.Dataset`), so no
loader imports its registry.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import ConfigError
from .dataset import Dataset


def _loaders() -> dict[str, Callable[..., Dataset]]:
    from .digits import load_digits, load_digits_synth
    from .har import load_har
    from .kws import load_kws
    from .smartwatch import load_smartwatch
    from .speech_commands import load_speech_commands

    return {
        "har": load_har,
        "smartwatch": load_smartwatch,
        "kws": load_kws,
        "speech_commands": load_speech_commands,
        "digits": load_digits,
        "digits_synth": load_digits_synth,
    }


DATASET_NAMES = ("har", "smartwatch", "kws", "speech_commands", "digits", "digits_synth")


def load_dataset(name: str, split: str, **kw: Any) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASET_NAMES`) for ``split``; ``kw`` goes to its loader.

    ``load_dataset("har", "train")``, ``load_dataset("kws", "flite", features="mfcc")``,
    ``load_dataset("digits", "test", holdout="theo")``,
    ``load_dataset("speech_commands", "test", root="~/data/speech_commands_v0.02")``.
    """
    if name not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset '{name}'; known: {', '.join(DATASET_NAMES)}", where="load_dataset")
    return _loaders()[name](split=split, **kw)
