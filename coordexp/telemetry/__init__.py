"""Telemetry: the metric key registry, logging windows, sinks, monitor dumps and rollout recordings."""
