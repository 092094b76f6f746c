"""Alert policy and alert messages, shared by the vision and sensor pipelines."""
