"""fleet: hardware-in-the-loop test and fleet orchestration for edge-AI boards."""

__version__ = "0.1.0"
