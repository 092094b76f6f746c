"""The sensor stream: per-asset windows, scoring and rules."""
