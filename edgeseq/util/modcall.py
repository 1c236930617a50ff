"""Let a sub-package double as its verb: ``edgeseq.export(...)`` calls ``edgeseq.export.export(...)``.

``edgeseq.export`` is both a package and the public function of the facade; once the package is
imported Python binds the package object to that name, so the package itself is made callable."""

from __future__ import annotations

import sys
import types


def make_callable(module_name: str, function_name: str) -> None:
    module = sys.modules[module_name]

    class _VerbModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(self, function_name)(*args, **kwargs)

    module.__class__ = _VerbModule
