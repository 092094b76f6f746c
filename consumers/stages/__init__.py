"""Processing stages that plug into the runtime."""
