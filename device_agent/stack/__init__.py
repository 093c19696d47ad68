"""The board's stack fingerprint: OS, kernel, Python, agent, and the NPU stack (HailoRT library,
hailo_pci driver, firmware, device architecture, PCIe link; librknnrt, rknpu driver) plus the
deployed models' sha256s and build targets. Reported by the agent's ``info`` under ``stack``
(``device_agent.protocol``); judged by the controller's ``fleet doctor`` (``fleet.doctor``)."""

from .collect import StackRoots, collect_stack

__all__ = ["StackRoots", "collect_stack"]
