"""Controller-side measurement logic: the MLPerf-style protocol (warm-up, minimum queries and
duration, cool-down, VALID/INVALID) and telemetry export. The per-request telemetry summary and
its merge live in ``device_agent.telemetry.summary`` (the agent computes them too)."""

from .protocol import (
                       Measurement,
                       MeasurementConfig,
                       Protocol,
                       decide_validity,
                       early_stopping_t,
                       latency_stats,
                       min_samples,
                       wait_for_cooldown,
)

__all__ = ["MeasurementConfig", "Measurement", "Protocol", "decide_validity", "early_stopping_t",
           "latency_stats", "min_samples", "wait_for_cooldown"]
