"""``vigil demo``: a simulated plant and city district through Vigil on a local broker."""

from consumers.demo.run import DemoSummary, run_demo

__all__ = ["DemoSummary", "run_demo"]
