"""``vigil demo``: a simulated plant and city district through Vigil on a local broker."""

from consumers.ops.demo.run import DemoSummary, run_demo

__all__ = ["DemoSummary", "run_demo"]
