"""On-device demos: human-activity recognition (``edgeseq demo har``) and keyword spotting
(``edgeseq demo kws``), end to end from a shipped model to a report."""

from .har import HarDemoConfig, run_har_demo
from .kws import KwsDemoConfig, run_kws_demo

__all__ = ["HarDemoConfig", "KwsDemoConfig", "run_har_demo", "run_kws_demo"]
