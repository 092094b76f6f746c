"""Operating Vigil: the CLI, the service process and its HTTP endpoint, the demo and the local broker."""
