"""Datasets and audio features for edgeseq (all loadable offline).

* ``har``: UCI HAPT raw smartphone IMU recordings, 6 or 12 activities (:func:`load_har`);
* ``smartwatch``: seglearn's smartwatch shoulder-exercise IMU series, 7 classes (:func:`load_smartwatch`);
* ``kws``: a deterministic synthetic 12-class keyword corpus from espeak-ng and flite (:func:`load_kws`);
* ``speech_commands``: a real Google Speech Commands v2 folder, same 12 classes (:func:`load_speech_commands`);
* ``digits``: the Free Spoken Digit Dataset, real 8 kHz speech shipped with edgeseq, the dataset's own split
  or leave-speakers-out (:func:`load_digits`); ``digits_synth``: the same ten words synthesised
  (:func:`load_digits_synth`).

``load_dataset(name, split, **kw)`` dispatches on the name. Features (:mod:`edgeseq.data.features`):
log-mel and MFCC in numpy, torch and streaming form. Names are imported lazily, so
``import edgeseq.data`` costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Dataset": "dataset",
    "load_dataset": "registry",
    "DATASET_NAMES": "registry",
    "Recording": "har",
    "har_recordings": "har",
    "load_har": "har",
    "HAR_TEST_SUBJECTS": "har",
    "HAR_LABELS_6": "har",
    "HAR_LABELS_12": "har",
    "load_smartwatch": "smartwatch",
    "SMARTWATCH_LABELS": "smartwatch",
    "SMARTWATCH_TEST_SUBJECTS": "smartwatch",
    "KWSConfig": "kws",
    "KWS_LABELS": "kws",
    "load_kws": "kws",
    "synth_stream": "kws",
    "load_speech_commands": "speech_commands",
    "load_digits": "digits",
    "load_digits_synth": "digits",
    "digit_stream": "digits",
    "DIGITS_LABELS": "digits",
    "LogMel": "features",
    "MFCC": "features",
    "StreamingFeatures": "features",
    "logmel": "features",
    "mfcc": "features",
    "logmel_torch": "features",
    "mfcc_torch": "features",
    "read_wav": "audio",
    "write_wav": "audio",
    "resample": "audio",
    "cache_root": "cache",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'edgeseq.data' has no attribute '{name}'") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
