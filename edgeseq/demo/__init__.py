"""On-device demos: human-activity recognition (``edgeseq demo har``) and keyword spotting
(``edgeseq demo kws``), end to end from a shipped model to a report."""

from .har import HarDemoConfig, run_har_demo

__all__ = ["HarDemoConfig", "run_har_demo"]
